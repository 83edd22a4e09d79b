backend {
  url = "s3://tfstate/shop"
}
