machine "db" {
  site = site.onprem

  disk "system" { path = "db/system.img" } # an ext4 image
  disk "data" { path = "db/data.sqlite" }  # a SQLite database

  quiesce { # makes app-consistent points
    freeze  = ["sh", "scripts/db-freeze.sh"]
    thaw    = ["sh", "scripts/db-thaw.sh"]
    timeout = "10s"
  }

  boot { command = ["sh", "scripts/db-start.sh"] }
  # A planned failover runs this first: the writer finishes and exits.
  shutdown { command = ["sh", "scripts/db-stop.sh"] }

  check "filesystem" {
    command = ["sh", "-c", "e2fsck -fn \"$STANDBY_DISK_SYSTEM\""]
  }
  check "database" {
    command = ["sh", "-c", "sqlite3 \"$STANDBY_DISK_DATA\" 'PRAGMA integrity_check'"]
    expect  = "ok"
  }
  check "orders" { # prints the row count; an empty table fails
    command = ["sh", "-c", "n=$(sqlite3 \"$STANDBY_DISK_DATA\" 'SELECT count(*) FROM orders') && echo \"$n orders\" && [ \"$n\" -gt 0 ]"]
  }
}

machine "web" {
  site = site.onprem

  disk "system" { path = "web/system.img" }

  boot { command = ["sh", "scripts/web-start.sh"] }

  check "filesystem" {
    command = ["sh", "-c", "e2fsck -fn \"$STANDBY_DISK_SYSTEM\""]
  }
}
