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

  # Checks of the recovered VM, run by standby at the DR site.
  check "booted" {
    console = "standby-guest: up" # a line on the serial console
  }

  check "isolated" {
    # A test VM has no network: connecting to the host's address (QEMU's
    # user-mode gateway) must fail as unreachable, not merely be refused.
    guest = ["sh", "-c", "ls /sys/class/net; out=$(nc -w 3 10.0.2.2 80 </dev/null 2>&1); echo \"$out\"; case \"$out\" in *'Network is unreachable'*) ;; *) exit 1 ;; esac"]
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

  # Run inside the recovered guest through its guest agent.
  check "database" {
    guest  = ["sqlite3", "-cmd", ".timeout 10000", "/data/orders.db", "PRAGMA integrity_check"]
    expect = "ok"
  }

  check "orders" {
    # Every order the point's freeze recorded is there (ids 1..N); prints N.
    guest = ["sh", "-c", "n=$(tail -n1 /data/freezes.log) && test \"$(sqlite3 -cmd '.timeout 10000' /data/orders.db \"SELECT count(*) FROM orders WHERE id <= $n\")\" = \"$n\" && echo $n"]
  }

  # From the host, through the port the protection's target_vm forwards.
  check "http" {
    http     = "http://127.0.0.1:${var.dr_db_http_port}/"
    contains = "standby-guest"
  }
}
