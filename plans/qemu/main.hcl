# Two running QEMU virtual machines on the hypervisor site "hv1" (an
# application VM and a database VM), replicated through changed-block
# tracking into a local vault: each point freezes the guests through their
# guest agents, opens a point-in-time view of every disk in one QMP
# transaction per VM, thaws, and reads only the extents QEMU marked dirty.
# `standby quickstart --qemu` runs the whole story on the test guest.

variable "guest_dir" {
  description = "Where the guest's kernel and initrd are (quickstart --qemu copies them here)."
  default     = "guest"
}

variable "dr_db_http_port" {
  description = "The port on 127.0.0.1 forwarded to the recovered database VM's port 80, for its http check."
  default     = 18480
}

vault "main" {
  url      = "file://.standby/vault"
  key_file = ".standby/keys/main.key"
}

# The hypervisor: standby reaches its VMs' QMP and guest-agent sockets
# here, and keeps fleece images and the NBD socket of open points under it.
site "hv1" {
  provider = "qemu"
  root     = "sites/hv1"
}

# The recovery site is a hypervisor too: recovered machines run as QEMU
# VMs there. Test failovers and drills boot them from throw-away overlays
# over the restored images, with no network; checks run inside the guests.
site "dr" {
  provider = "qemu"
  root     = "sites/dr"
}

policy "vms" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  app_consistent_every   = "15m" # guest-fsfreeze through the guest agent
  retention              = "7d"
}
