machine "web" {
  site = site.onprem
  disk "system" { path = "web/system.img" 
}
