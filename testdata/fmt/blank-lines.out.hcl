vault "main" {
  url = "file://x"

  key_file = "k"
}

site "dr" {
  root = "r"
}

a {
  x = 1
}

b = [
  1,
]
