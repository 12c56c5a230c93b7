variable "project_id" {
  type        = string
  description = "The GCP project the cluster is created in."
}

variable "name" {
  type        = string
  description = "Cluster name; also the prefix of the node pools and the node service account."
  default     = "dlpipe"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.name))
    error_message = "name must be 3-40 characters of lower-case letters, digits and dashes, starting with a letter."
  }
}

variable "region" {
  type        = string
  description = "Region of the (regional) cluster, e.g. europe-west4."
}

variable "node_locations" {
  type        = list(string)
  description = "Zones of the node pools; empty means the region's default zones. GPU pools need zones that offer gpu_type."
  default     = []
}

variable "network" {
  type        = string
  description = "Self link or name of the VPC network of the cluster."
  default     = "default"
}

variable "subnetwork" {
  type        = string
  description = "Self link or name of the subnetwork of the nodes."
  default     = "default"
}

variable "create_cloud_nat" {
  type        = bool
  description = "Create a Cloud Router and Cloud NAT for the subnetwork, so private nodes reach public registries; false when the network already has NAT."
  default     = true
}

variable "pods_secondary_range_name" {
  type        = string
  description = "Secondary range of the subnetwork for pod IPs (VPC-native cluster); null lets GKE create one."
  default     = null
}

variable "services_secondary_range_name" {
  type        = string
  description = "Secondary range of the subnetwork for Service IPs; null lets GKE create one."
  default     = null
}

variable "master_ipv4_cidr_block" {
  type        = string
  description = "/28 range of the control plane's private endpoint (private nodes)."
  default     = "172.16.0.32/28"
}

variable "master_authorized_networks" {
  type = list(object({
    cidr_block   = string
    display_name = string
  }))
  description = "CIDR blocks allowed to reach the Kubernetes API (your office or CI runner); empty allows none besides Google's internal ranges."
  default     = []
}

variable "release_channel" {
  type        = string
  description = "GKE release channel: RAPID, REGULAR or STABLE."
  default     = "REGULAR"

  validation {
    condition     = contains(["RAPID", "REGULAR", "STABLE"], var.release_channel)
    error_message = "release_channel must be RAPID, REGULAR or STABLE."
  }
}

variable "database_encryption_key" {
  type        = string
  description = "Cloud KMS key (projects/.../cryptoKeys/...) for application-layer encryption of Kubernetes Secrets; null keeps Google-managed encryption."
  default     = null
}

variable "labels" {
  type        = map(string)
  description = "Resource labels of the cluster and its nodes."
  default     = { app = "dlpipe" }
}

variable "deletion_protection" {
  type        = bool
  description = "Refuse terraform destroy of the cluster; set false for throw-away clusters."
  default     = true
}

variable "cpu_pool" {
  type = object({
    machine_type   = string
    min_node_count = number
    max_node_count = number
    disk_size_gb   = number
    spot           = bool
  })
  description = "The CPU node pool (Spark drivers and executors, Kafka, MinIO, serving); autoscales between the counts per zone."
  default = {
    machine_type   = "e2-standard-8"
    min_node_count = 1
    max_node_count = 5
    disk_size_gb   = 100
    spot           = false
  }
}

variable "gpu_pool" {
  type = object({
    enabled        = bool
    machine_type   = string
    gpu_type       = string
    gpu_count      = number
    min_node_count = number
    max_node_count = number
    disk_size_gb   = number
    spot           = bool
  })
  description = "The optional GPU node pool for training executors; scales to zero when idle. GKE installs the NVIDIA driver and taints the nodes with nvidia.com/gpu."
  default = {
    enabled        = false
    machine_type   = "n1-standard-8"
    gpu_type       = "nvidia-tesla-t4"
    gpu_count      = 1
    min_node_count = 0
    max_node_count = 4
    disk_size_gb   = 100
    spot           = true
  }

  validation {
    condition     = var.gpu_pool.min_node_count >= 0 && var.gpu_pool.max_node_count >= var.gpu_pool.min_node_count && var.gpu_pool.gpu_count >= 1
    error_message = "gpu_pool needs 0 <= min_node_count <= max_node_count and gpu_count >= 1."
  }
}
