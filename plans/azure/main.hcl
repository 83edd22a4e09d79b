# Production machines in the datacenter, replicated into a vault on Azure
# Blob storage and recovered into Azure through an exec provider.

vault "prod" {
  url     = "az://standby-vault/prod"
  key_env = "STANDBY_VAULT_KEY" # the master key comes from CI secrets
}

site "datacenter" {
  provider = "local"
  root     = "/srv/standby/datacenter"
}

# Recovery into Azure is done by a script speaking the exec-provider
# protocol; the subscription is a sensitive variable.
site "azure" {
  provider = "exec"
  command  = ["scripts/azure-provider.sh", "--subscription", var.recovery_subscription, "--account", var.storage_account]
}

policy "production" {
  rpo_threshold          = var.rpo
  crash_consistent_every = "5m"
  app_consistent_every   = "1h"
  retention              = "7d"
  compression_level      = 3
}

locals {
  dns_note = "Update the ${var.storage_account} traffic manager profile to the Azure endpoints"
}
