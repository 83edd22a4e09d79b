variable "base" {
  default = "/srv/standby"
}

variable "dr_root" {
  default = "${var.base}/dr"
}

site "dr" {
  provider = "local"
  root     = var.dr_root
}
