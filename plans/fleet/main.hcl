# A fleet of 50 machines in three tiers, described by one machine block and
# one protection block with for_each, and recovered tier by tier.

locals {
  tiers = {
    db  = 5
    app = 15
    web = 30
  }

  # "web-01" = { tier = "web", index = 1 }, ... for every tier.
  fleet = merge(
    { for i in range(local.tiers.db) : format("db-%02d", i + 1) => { tier = "db", index = i + 1 } },
    { for i in range(local.tiers.app) : format("app-%02d", i + 1) => { tier = "app", index = i + 1 } },
    { for i in range(local.tiers.web) : format("web-%02d", i + 1) => { tier = "web", index = i + 1 } },
  )
}

vault "fleet" {
  url = "file://.standby/vault"
}

site "primary" {
  provider = "local"
  root     = "sites/primary"
}

site "secondary" {
  provider = "local"
  root     = "sites/secondary"
}

policy "db" {
  rpo_threshold          = "5m"
  crash_consistent_every = "1m"
  app_consistent_every   = "30m"
  retention              = "3d"
}

policy "stateless" {
  rpo_threshold          = "1h"
  crash_consistent_every = "30m"
  retention              = "24h"
}

machine "node" {
  for_each = local.fleet

  site = site.primary
  disk "system" { path = "${each.value.tier}/${each.key}/system.img" }

  check "filesystem" {
    command = ["sh", "-c", "e2fsck -fn \"$STANDBY_DISK_SYSTEM\""]
  }
}

protection "node" {
  for_each = machine.node

  machine           = each.value
  target            = site.secondary
  vault             = vault.fleet
  policy            = local.fleet[each.key].tier == "db" ? policy.db : policy.stateless
  consistency_group = local.fleet[each.key].tier
}

recovery_plan "fleet" {
  group "db" {
    machines = [for k, v in local.fleet : machine.node[k] if v.tier == "db"]
  }

  group "app" {
    depends_on = [group.db]
    machines   = [for k, v in local.fleet : machine.node[k] if v.tier == "app"]
  }

  group "web" {
    depends_on = [group.app]
    machines   = [for k, v in local.fleet : machine.node[k] if v.tier == "web"]
    after {
      manual "traffic" {
        instructions = "Move the load balancer pool to the secondary site"
      }
    }
  }

  drill {
    schedule = "weekly"
    max_rto  = "1h"
  }
}
