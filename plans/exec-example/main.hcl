# A DR site standby has no built-in provider for, driven by a script that
# speaks the exec-provider protocol (see README.md). provider.py stands in
# for a hypervisor API by keeping "VMs" and disks in local directories.

vault "main" {
  url      = "file://.standby/vault"
  key_file = ".standby/keys/main.key"
}

site "onprem" {
  provider = "local"
  root     = "sites/onprem"
}

site "dr" {
  provider = "exec"
  command  = ["python3", "provider.py", "--root", "hypervisor"]
}

policy "standard" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  retention              = "24h"
}

machine "app" {
  site = site.onprem

  disk "system" { path = "app/system.img" }

  # Runs until stopped; the provider tracks it as the machine.
  boot { command = ["sh", "scripts/app-start.sh"] }

  check "disk" {
    command = ["sh", "-c", "test -s \"$STANDBY_DISK_SYSTEM\" && echo present"]
    expect  = "present"
  }
}

protection "app" {
  machine = machine.app
  target  = site.dr
  vault   = vault.main
  policy  = policy.standard
}

recovery_plan "app" {
  group "app" {
    machines = [machine.app]
  }

  drill {
    schedule = "weekly"
    max_rto  = "5m"
  }
}
