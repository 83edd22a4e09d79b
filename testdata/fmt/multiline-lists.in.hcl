locals {
  sites = [
  "onprem",
        "dr",
    ]
  tags = {
  owner = "ops"
        cost_center = "42"
    nested = {
  deep = true
    }
  }
  calls = concat(
        ["a"],
    ["b"],
  )
}
