# Already in canonical layout: fmt leaves it byte for byte.
variable "vault_key_file" {
  default     = "keys/vault.key"
  description = "Where the vault key lives"
}

vault "main" {
  url      = "file://.standby/vault" # az://container/prefix
  key_file = var.vault_key_file      # or key_env
}

machine "web" {
  for_each = toset(["a", "b"])
  site     = site.onprem

  disk "system" { path = "web/${each.key}.img" }
  tags = {
    name = "web-${each.key}"
    tier = 2
  }
}
