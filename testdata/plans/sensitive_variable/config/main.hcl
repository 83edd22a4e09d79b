# The DR site is reached through an exec provider whose token is a sensitive
# variable: the plan detects that it changed but never shows it.

variable "dr_token" {
  description = "API token of the DR platform"
  sensitive   = true
}

vault "main" {
  url     = "file://.standby/vault"
  key_env = "STANDBY_VAULT_KEY"
}

site "onprem" {
  provider = "local"
  root     = "sites/onprem"
}

site "dr" {
  provider = "exec"
  command  = ["dr-provider", "--token", var.dr_token]
}

policy "standard" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  retention              = "24h"
}

machine "db" {
  site = site.onprem
  disk "data" { path = "db/data.sqlite" }
}

protection "db" {
  machine = machine.db
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard
}
