machine "sql" {
  site = site.datacenter
  disk "os" { path = "/dev/vg0/sql-os" }
  disk "data" { path = "/dev/vg0/sql-data" }

  quiesce {
    freeze  = ["sh", "-c", "sqlcmd -Q 'ALTER DATABASE shop SET READ_ONLY'"]
    thaw    = ["sh", "-c", "sqlcmd -Q 'ALTER DATABASE shop SET READ_WRITE'"]
    timeout = "30s"
  }

  check "port" {
    tcp     = "127.0.0.1:1433"
    retries = 10
  }
}

machine "app" {
  site = site.datacenter
  disk "os" { path = "/dev/vg0/app-os" }

  check "health" {
    http     = "http://127.0.0.1:8080/health"
    status   = 200
    contains = "ok"
    interval = "10s"
  }
}

protection "sql" {
  machine           = machine.sql
  target            = site.azure
  vault             = vault.prod
  policy            = policy.production
  consistency_group = "shop"
  prevent_destroy   = true
}

protection "app" {
  machine           = machine.app
  target            = site.azure
  vault             = vault.prod
  policy            = policy.production
  consistency_group = "shop"
}

recovery_plan "shop" {
  group "database" {
    machines = [machine.sql]
    after {
      check "sql-accepts-connections" {
        tcp     = "sql.dr.internal:1433"
        timeout = "10m"
      }
    }
  }

  group "application" {
    depends_on = [group.database]
    machines   = [machine.app]
    before {
      script "point-at-dr-database" {
        command = ["scripts/switch-connection-string.sh", "sql.dr.internal"]
        timeout = "2m"
      }
    }
    after {
      manual "traffic" {
        instructions = local.dns_note
      }
    }
  }

  drill {
    schedule = "monthly"
    max_rto  = "30m"
  }
}
