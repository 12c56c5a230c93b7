output "name" {
  description = "Name of the cluster."
  value       = google_container_cluster.this.name
}

output "location" {
  description = "Region of the cluster."
  value       = google_container_cluster.this.location
}

output "endpoint" {
  description = "Public endpoint of the Kubernetes API (restricted to master_authorized_networks)."
  value       = "https://${google_container_cluster.this.endpoint}"
  sensitive   = true
}

output "ca_certificate" {
  description = "Base64-encoded CA certificate of the Kubernetes API."
  value       = google_container_cluster.this.master_auth[0].cluster_ca_certificate
  sensitive   = true
}

output "node_service_account" {
  description = "Email of the nodes' service account."
  value       = google_service_account.nodes.email
}

output "gpu_node_pool" {
  description = "Name of the GPU node pool, or null when it is disabled."
  value       = var.gpu_pool.enabled ? google_container_node_pool.gpu[0].name : null
}

output "gpu_node_selector" {
  description = "Node selector that places pods on the GPU pool (the chart's retrain.gpu.nodeSelector)."
  value       = { "cloud.google.com/gke-accelerator" = var.gpu_pool.gpu_type }
}

output "get_credentials_command" {
  description = "gcloud command that writes a kubeconfig entry for the cluster."
  value       = "gcloud container clusters get-credentials ${google_container_cluster.this.name} --region ${google_container_cluster.this.location} --project ${var.project_id}"
}
