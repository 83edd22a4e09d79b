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
  group "data" {
    machines   = [machine.db]
    depends_on = [group.app]
  }
  group "app" {
    machines   = [machine.web]
    depends_on = [group.web]
  }
  group "web" {
    machines   = [machine.cache]
    depends_on = [group.data]
  }
}

machine "web" {
  site = site.onprem
  disk "system" { path = "web/system.img" }
}

machine "cache" {
  site = site.onprem
  disk "system" { path = "cache/system.img" }
}

protection "web" {
  machine = machine.web
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard
}

protection "cache" {
  machine = machine.cache
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard
}
