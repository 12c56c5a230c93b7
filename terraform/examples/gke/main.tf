# GKE + everything dlpipe needs, in one `terraform apply`:
# the cluster (CPU pool, optional GPU pool), MinIO, Strimzi + Kafka, the Spark operator, dlpipe.

provider "google" {
  project = var.project_id
  region  = var.region
}

data "google_client_config" "current" {}

module "gke" {
  source = "../../modules/gke-cluster"

  project_id                 = var.project_id
  name                       = var.cluster_name
  region                     = var.region
  master_authorized_networks = var.master_authorized_networks
  deletion_protection        = var.deletion_protection

  gpu_pool = {
    enabled        = var.gpu_enabled
    machine_type   = "n1-standard-8"
    gpu_type       = var.gpu_type
    gpu_count      = 1
    min_node_count = 0
    max_node_count = 4
    disk_size_gb   = 100
    spot           = true
  }
}

# The Kubernetes and Helm providers talk to the cluster created above.
provider "kubernetes" {
  host                   = module.gke.endpoint
  token                  = data.google_client_config.current.access_token
  cluster_ca_certificate = base64decode(module.gke.ca_certificate)
}

provider "helm" {
  kubernetes {
    host                   = module.gke.endpoint
    token                  = data.google_client_config.current.access_token
    cluster_ca_certificate = base64decode(module.gke.ca_certificate)
  }
}

module "dlpipe" {
  source = "../../modules/dlpipe-platform"

  dlpipe_image      = var.dlpipe_image
  gpu_node_selector = var.gpu_enabled ? module.gke.gpu_node_selector : {}
  dlpipe_values = {
    retrain = { gpu = { enabled = var.gpu_enabled } }
  }

  depends_on = [module.gke]
}
