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
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  retention              = "24h"
}

machine "db" {
  for_each = {
    a = { disk = "a/data.img" }
    b = { dsk = "b/data.img" }
  }
  site = site.onprem
  disk "data" { path = each.value.disk }
}

protection "db" {
  for_each = machine.db
  machine  = each.value
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard
}

recovery_plan "shop" {
  group "data" { machines = [machine.db] }
}
