# The VMs standby runs itself (no `qmp`/`agent`: their sockets are
# sites/hv1/NAME.qmp and NAME.qga). For a VM that libvirt or Proxmox runs,
# set qmp = "/run/qemu/NAME.qmp" and agent = "/run/qemu/NAME.qga" instead.

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
}

machine "db" {
  site = site.hv1

  vm {
    memory   = "256M"
    cpus     = 1
    kernel   = "${var.guest_dir}/vmlinuz"
    initrd   = "${var.guest_dir}/initrd.img"
    append   = "console=ttyS0 quiet panic=-1 standby.writer=1" # the SQLite writer on /dev/vdb
    fsfreeze = true                                            # app-consistent points
  }

  disk "system" {
    path      = "db/system.qcow2"
    format    = "qcow2"
    node_name = "system"
  }

  disk "data" {
    path      = "db/data.qcow2" # ext4 holding /data/orders.db
    format    = "qcow2"
    node_name = "data"
  }
}
