output "get_credentials_command" {
  description = "Run this to point kubectl at the new cluster."
  value       = module.gke.get_credentials_command
}

output "kafka_bootstrap_servers" {
  description = "In-cluster Kafka bootstrap address."
  value       = module.dlpipe.kafka_bootstrap_servers
}

output "s3_endpoint" {
  description = "In-cluster MinIO endpoint."
  value       = module.dlpipe.s3_endpoint
}

output "dlpipe_namespace" {
  description = "Namespace of the dlpipe release."
  value       = module.dlpipe.dlpipe_namespace
}
