# The VMs of the instant-recovery tests and bench (tests/instant_recovery.rs,
# bench/instant.rs), in place of plans/qemu's machines: no writer (the data
# disk is never mounted), checks that read it as a block device and wait
# for the console.
machine "app" {
  site = site.hv1
  vm {
    memory = "256M"
    cpus   = 1
    kernel = "${var.guest_dir}/vmlinuz"
    initrd = "${var.guest_dir}/initrd.img"
    append = "console=ttyS0 quiet panic=-1"
  }
  disk "system" {
    path      = "app/system.qcow2"
    format    = "qcow2"
    node_name = "system"
  }
  check "booted" {
    console = "standby-guest: up"
  }
}

machine "db" {
  site = site.hv1
  vm {
    memory   = "256M"
    cpus     = 1
    kernel   = "${var.guest_dir}/vmlinuz"
    initrd   = "${var.guest_dir}/initrd.img"
    append   = "console=ttyS0 quiet panic=-1"
    fsfreeze = true
  }
  disk "system" {
    path      = "db/system.qcow2"
    format    = "qcow2"
    node_name = "system"
  }
  disk "data" {
    path      = "db/data.qcow2"
    format    = "qcow2"
    node_name = "data"
  }
  check "data" {
    guest  = ["sh", "-c", "test -b /dev/vdb && head -c 1048576 /dev/vdb | wc -c"]
    expect = "1048576"
  }
}
