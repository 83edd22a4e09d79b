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

locals {
  inventory = [
    { name = "web", disk = "web/a.img" },
    { name = "db", disk = "db/a.img" },
    { name = "web", disk = "web/b.img" },
  ]
}

machine "m" {
  for_each = [for m in local.inventory : m.name]
  site     = site.onprem
  disk "system" { path = "${each.value}/a.img" }
}

protection "m" {
  for_each = toset(["a", "a", "b"])
  machine  = machine.m[each.key]
  target   = site.dr
  vault    = vault.main
  policy   = policy.standard
}
