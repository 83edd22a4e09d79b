# The quickstart topology: a local vault, an on-premises site and a DR site.

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

policy "standard" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  app_consistent_every   = "1h"
  retention              = "7d"
}
