variable "names" {
  type    = list(string)
  default = ["a", "b"]
}
variable "none" {
  type    = list(string)
  default = []
}
variable "nums" {
  type    = list(number)
  default = []
}
variable "tags" {
  type    = map(string)
  default = { a = "x" }
}
variable "obj" {
  type    = object({ a = string })
  default = { a = "x" }
}
variable "set" {
  type    = set(string)
  default = ["a", "b"]
}
variable "raw" {
  default = ["a", "b"]
}
variable "pair" {
  type    = tuple([string, number])
  default = ["a", 1]
}
variable "lists" {
  type    = list(list(string))
  default = [["a"]]
}
locals {
  copy  = var.names
  built = ["a", "b"]
}
