recovery_plan "shop" {
  group "data" {
    machines = [machine.db]
  }

  group "app" {
    depends_on = [group.data]
    machines   = [machine.app]
  }

  # `standby drill shop`: both VMs boot at site.dr from throw-away
  # overlays, their checks run in the guests, then everything is removed.
  drill {
    schedule = "weekly"
    max_rto  = "10m"
  }
}
