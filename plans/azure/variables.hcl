variable "storage_account" {
  type        = string
  description = "The Azure storage account holding the vault container."
  default     = "standbyprod"
}

variable "recovery_subscription" {
  type        = string
  description = "Subscription the DR site recovers into; kept out of logs and plans."
  sensitive   = true
  default     = "00000000-0000-0000-0000-000000000000"
}

variable "rpo" {
  type        = string
  description = "RPO threshold for production machines."
  default     = "15m"
}
