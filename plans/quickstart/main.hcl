# The quickstart: one database machine and one web machine on a local
# "onprem" site, protected into a local vault and recoverable on a local
# "dr" site. Everything lives under this directory, so it runs anywhere.

variable "vault_key_file" {
  description = "Where the vault master key is kept (created by `standby vault init`)."
  default     = ".standby/keys/main.key"
}

vault "main" {
  url      = "file://.standby/vault" # az://container/prefix, s3://bucket/prefix
  key_file = var.vault_key_file      # or key_env = "STANDBY_VAULT_KEY"
}

site "onprem" {
  provider = "local"
  root     = "sites/onprem"
}

site "dr" {
  provider = "local"
  root     = "sites/dr"
}

policy "standard" {
  rpo_threshold          = "15m" # status and plan warn past this
  crash_consistent_every = "5m"
  app_consistent_every   = "1h"
  retention              = "24h"
}
