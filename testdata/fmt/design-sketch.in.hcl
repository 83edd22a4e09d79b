variable "vault_key_file" { default = "keys/vault.key" }

vault "main" {
  url      = "file://.standby/vault"   # az://container/prefix, s3://bucket/prefix
  key_file = var.vault_key_file        # or key_env = "STANDBY_VAULT_KEY"
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
  rpo_threshold          = "15m"  # status and plan warn past this
  crash_consistent_every = "5m"
  app_consistent_every   = "1h"
  retention              = "24h"
}

machine "db" {
  site = site.onprem
  disk "system" { path = "db/system.img" }
  disk "data"   { path = "db/data.sqlite" }
  quiesce {                          # makes app-consistent points
    freeze  = ["sh", "scripts/db-freeze.sh"]
    thaw    = ["sh", "scripts/db-thaw.sh"]
    timeout = "10s"
  }
  boot { command = ["sh", "scripts/db-start.sh"] }
  check "filesystem" { command = ["sh", "-c", "e2fsck -fn \"$STANDBY_DISK_SYSTEM\""] }
  check "database" {
    command = ["sh", "-c", "sqlite3 \"$STANDBY_DISK_DATA\" 'PRAGMA integrity_check'"]
    expect  = "ok"
  }
}

protection "db" {
  machine           = machine.db
  target            = site.dr
  vault             = vault.main
  policy            = policy.standard
  consistency_group = "shop"
}

recovery_plan "shop" {
  group "data" { machines = [machine.db] }
  group "web" {
    depends_on = [group.data]
    machines   = [machine.web1, machine.web2]
    after {
      manual "dns" { instructions = "Point shop.example.com at the DR site" }
    }
  }
  drill {
    schedule = "weekly"
    max_rto  = "10m"
  }
}
