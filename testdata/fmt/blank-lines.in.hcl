


vault "main" {
  url = "file://x"



  key_file = "k"
}



site "dr" {
  root = "r"
}


