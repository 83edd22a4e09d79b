site    "onprem"{
  provider = "local"
}
check   "a"    "b"   {
  command = ["true"]
}
locals{
  x = 1   
}
