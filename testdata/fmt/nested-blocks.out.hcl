recovery_plan "shop" {
  group "data" { machines = [machine.db] }
  group "web" {
    depends_on = [group.data]
    machines   = [machine.web1, machine.web2]
    after {
      manual "dns" {
        instructions = "Point shop.example.com at the DR site"
      }
    }
  }
  drill {
    schedule = "weekly"
    max_rto  = "10m"
  }
}
