vault "main" {
  url = "file://.standby/vault"
}
site "hv1" {
  provider = "qemu"
  root     = "hv1"
}
site "dr" {
  provider = "local"
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
    qmp   = "tcp://hv1.example:4444"
    agent = "tcp://hv1.example:4445"
    tls {
      ca   = "pki/ca-cert.pem"
      cert = "pki/client-cert.pem"
      key  = "pki/client-key.pem"
    }
    export_tls {
      listen    = "hv1.example:10809"
      creds_dir = "/etc/pki/qemu"
      ca        = "pki/ca-cert.pem"
      cert      = "/etc/pki/standby/client-cert.pem"
      key       = "/etc/pki/standby/client-key.pem"
    }
  }
  disk "system" { path = "db/system.qcow2" }
  disk "data" {
    path      = "db/data.qcow2"
    node_name = "data"
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
