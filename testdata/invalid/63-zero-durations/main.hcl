vault "main" {
  url = "file://.standby/vault"
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
  rpo_threshold          = "0s"
  crash_consistent_every = "0m"
  app_consistent_every   = "0h" # "off" turns them off
  retention              = "24h"
}

machine "db" {
  site = site.onprem
  disk "data" { path = "db/data.img" }
}

protection "db" {
  machine = machine.db
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard
}

recovery_plan "shop" {
  group "data" { machines = [machine.db] }
}
