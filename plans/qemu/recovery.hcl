recovery_plan "shop" {
  group "data" {
    machines = [machine.db]
  }

  group "app" {
    depends_on = [group.data]
    machines   = [machine.app]
  }
}
