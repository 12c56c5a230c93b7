variable "project_id" {
  type        = string
  description = "The GCP project to create the cluster in."
}

variable "region" {
  type        = string
  description = "Region of the cluster, e.g. europe-west4."
  default     = "europe-west4"
}

variable "cluster_name" {
  type        = string
  description = "Name of the GKE cluster."
  default     = "dlpipe"
}

variable "master_authorized_networks" {
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  description = "CIDR blocks allowed to reach the Kubernetes API: the machine running terraform must be in one, since the helm releases go through the API."
}

variable "gpu_enabled" {
  type        = bool
  description = "Create the autoscaling GPU node pool and train on GPU executors."
  default     = false
}

variable "gpu_type" {
  type        = string
  description = "Accelerator of the GPU pool (must be offered in the region's zones)."
  default     = "nvidia-tesla-t4"
}

variable "dlpipe_image" {
  type = object({
    repository = string
    tag        = string
  })
  description = "The dlpipe image (built from the repository's Dockerfile) in a registry the nodes can pull from, e.g. Artifact Registry."
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse terraform destroy of the cluster."
  default     = true
}
