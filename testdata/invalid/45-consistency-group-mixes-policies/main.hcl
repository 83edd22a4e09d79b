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

policy "fast" {
  rpo_threshold          = "5m"
  crash_consistent_every = "1m"
  retention              = "24h"
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
  machine           = machine.db
  target            = site.dr
  vault             = vault.main
  policy            = policy.standard
  consistency_group = "shop"
}

recovery_plan "shop" {
  group "data" { machines = [machine.db, machine.web] }
}

machine "web" {
  site = site.onprem
  disk "system" { path = "web/system.img" }
}

protection "web" {
  machine           = machine.web
  target            = site.dr
  vault             = vault.main
  policy            = policy.fast
  consistency_group = "shop"
}
