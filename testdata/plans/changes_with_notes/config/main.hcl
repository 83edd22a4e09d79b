# Against its state: a weaker policy, a moved disk, protection.web retargeted
# (a replace), machine.old and protection.old removed, a new plan never drilled.

variable "vault_key_file" {
  default = "keys/vault.key"
}

vault "main" {
  url      = "file://.standby/vault"
  key_file = var.vault_key_file
}

site "onprem" {
  provider = "local"
  root     = "sites/onprem"
}

site "dr" {
  provider = "local"
  root     = "sites/dr"
}

site "dr2" {
  provider = "local"
  root     = "sites/dr2"
}

policy "standard" {
  rpo_threshold          = "1h"
  crash_consistent_every = "5m"
  app_consistent_every   = "1h"
  retention              = "3d"
}
