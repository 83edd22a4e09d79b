policy "standard" {
  rpo_threshold          = "15m"
  crash_consistent_every = "5m"
  app_consistent_every   = "1h"

  retention = "24h"
  a         = 1
  # a comment line ends the group
  longer_name = 2
  b           = 3
  nested {
    x = 1
  }
  after_block = 4
  c           = 5
  multi_line = [
    1,
  ]
  d          = 6
  e_long_one = 7
}
