# Both VMs in one consistency group: one freeze of both guests, one
# snapshot per VM, one thaw; the point reports the spread between them.

protection "app" {
  machine           = machine.app
  target            = site.dr
  vault             = vault.main
  policy            = policy.vms
  consistency_group = "shop"
}

protection "db" {
  machine           = machine.db
  target            = site.dr
  vault             = vault.main
  policy            = policy.vms
  consistency_group = "shop"

  # At site.dr the database VM runs with more memory than at home.
  target_vm {
    memory = "384M"
    cpus   = 1

    # The one way into the recovered VM: without a forward it has no
    # network device; with one, user-mode networking that reaches nothing
    # and that only this port reaches (for the http check).
    forward {
      host_port  = var.dr_db_http_port
      guest_port = 80
    }
    forward {
      host_port  = 18480
      guest_port = 8080
    }
  }
}
