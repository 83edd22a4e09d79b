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
