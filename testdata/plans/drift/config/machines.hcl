machine "db" {
  site = site.onprem
  disk "system" { path = "db/system.img" }
  disk "data" { path = "db/data.sqlite" }
  quiesce {
    freeze  = ["sh", "scripts/db-freeze.sh"]
    thaw    = ["sh", "scripts/db-thaw.sh"]
    timeout = "10s"
  }
  boot { command = ["sh", "scripts/db-start.sh"] }
  check "database" {
    command = ["sh", "-c", "sqlite3 \"$STANDBY_DISK_DATA\" 'PRAGMA integrity_check'"]
    expect  = "ok"
  }
}

machine "web" {
  site = site.onprem
  disk "system" { path = "web/system.img" }
  boot { command = ["sh", "scripts/web-start.sh"] }
  check "http" { command = ["sh", "-c", "e2fsck -fn \"$STANDBY_DISK_SYSTEM\""] }
}

protection "db" {
  machine           = machine.db
  target            = site.dr
  vault             = vault.main
  policy            = policy.standard
  consistency_group = "shop"
}

protection "web" {
  machine           = machine.web
  target            = site.dr
  vault             = vault.main
  policy            = policy.standard
  consistency_group = "shop"
}

recovery_plan "shop" {
  group "data" { machines = [machine.db] }
  group "web" {
    depends_on = [group.data]
    machines   = [machine.web]
    after {
      manual "dns" { instructions = "Point shop.example.com at the DR site" }
    }
  }
  drill {
    schedule = "weekly"
    max_rto  = "10m"
  }
}
