locals {
  url     = "http://example.com/#not-a-comment" # a real comment
  quoted  = "a \" # still the string // and this"
  joined  = "${join(",", [for x in var.names : "${x}-{}"])}"
  escaped = "$${not_interpolated} %%{not_a_directive}"
  cond    = var.a == var.b ? "x=1" : "y"
  pairs   = { for k, v in var.m : k => v if v != "" }
  single { value = "x" }
  one_line "label" { a = 1 }
  heredocs = [<<EOT
inside a list
EOT
  , "after"]
}
