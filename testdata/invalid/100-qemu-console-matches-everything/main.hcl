vault "main" {
  url = "file://.standby/vault"
}
site "hv1" {
  provider = "qemu"
  root     = "hv1"
}
site "dr" {
  provider = "qemu"
  root     = "dr"
}
policy "standard" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  app_consistent_every   = "5m"
  retention              = "24h"
}
machine "db" {
  site = site.hv1
  vm {
    memory = "256M"
    cpus   = 1
    kernel = "guest/vmlinuz"
    initrd = "guest/initrd.img"
    append = "console=ttyS0 standby.writer=1"
  }
  disk "system" { path = "db/system.qcow2" }
  disk "data" {
    path      = "db/data.qcow2"
    node_name = "data"
  }
  check "writer" {
    console = ".*"
  }
}
protection "db" {
  machine = machine.db
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard
}
recovery_plan "shop" {
  group "data" { machines = [machine.db] }
}
