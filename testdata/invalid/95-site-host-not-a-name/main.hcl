vault "main" {
  url = "file://.standby/vault"
}

site "onprem" {
  provider = "local"
  root     = "sites/onprem"
  host     = "db host/1"
}

site "dr" {
  provider = "local"
  root     = "sites/dr"
}

policy "standard" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
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
