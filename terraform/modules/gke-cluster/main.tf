# A private, VPC-native, regional GKE cluster with Workload Identity and Dataplane V2, a CPU
# node pool and an optional autoscaling GPU node pool, both on a least-privilege service account.

locals {
  node_tags         = ["${var.name}-node"]
  node_oauth_scopes = ["https://www.googleapis.com/auth/cloud-platform"]
}

resource "google_service_account" "nodes" {
  project      = var.project_id
  account_id   = "${var.name}-nodes"
  display_name = "GKE nodes of ${var.name}"
}

# Only what nodes need: write logs and metrics, read images from Artifact Registry.
resource "google_project_iam_member" "nodes" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/monitoring.metricWriter",
    "roles/monitoring.viewer",
    "roles/stackdriver.resourceMetadata.writer",
    "roles/artifactregistry.reader",
  ])
  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.nodes.email}"
}

resource "google_container_cluster" "this" {
  project  = var.project_id
  name     = var.name
  location = var.region

  # Node pools are managed below; the default one is removed right after creation.
  remove_default_node_pool = true
  initial_node_count       = 1
  node_locations           = var.node_locations
  deletion_protection      = var.deletion_protection
  resource_labels          = var.labels

  network           = var.network
  subnetwork        = var.subnetwork
  networking_mode   = "VPC_NATIVE"
  datapath_provider = "ADVANCED_DATAPATH" # Dataplane V2: enforces NetworkPolicy

  ip_allocation_policy {
    cluster_secondary_range_name  = var.pods_secondary_range_name
    services_secondary_range_name = var.services_secondary_range_name
  }

  private_cluster_config {
    enable_private_nodes    = true
    enable_private_endpoint = false
    master_ipv4_cidr_block  = var.master_ipv4_cidr_block
  }

  master_authorized_networks_config {
    dynamic "cidr_blocks" {
      for_each = var.master_authorized_networks
      content {
        cidr_block   = cidr_blocks.value.cidr_block
        display_name = cidr_blocks.value.display_name
      }
    }
  }

  master_auth {
    client_certificate_config {
      issue_client_certificate = false
    }
  }

  release_channel {
    channel = var.release_channel
  }

  workload_identity_config {
    workload_pool = "${var.project_id}.svc.id.goog"
  }

  enable_legacy_abac          = false
  enable_shielded_nodes       = true
  enable_intranode_visibility = true

  binary_authorization {
    evaluation_mode = "PROJECT_SINGLETON_POLICY_ENFORCE"
  }

  dynamic "database_encryption" {
    for_each = var.database_encryption_key == null ? [] : [var.database_encryption_key]
    content {
      state    = "ENCRYPTED"
      key_name = database_encryption.value
    }
  }

  logging_config {
    enable_components = ["SYSTEM_COMPONENTS", "WORKLOADS"]
  }

  monitoring_config {
    enable_components = ["SYSTEM_COMPONENTS"]
  }

  addons_config {
    http_load_balancing {
      disabled = false
    }
    horizontal_pod_autoscaling {
      disabled = false
    }
  }

  # The temporary default pool, until remove_default_node_pool deletes it.
  node_config {
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.node_oauth_scopes
    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }
    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "cpu" {
  project  = var.project_id
  name     = "${var.name}-cpu"
  location = var.region
  cluster  = google_container_cluster.this.name

  autoscaling {
    min_node_count = var.cpu_pool.min_node_count
    max_node_count = var.cpu_pool.max_node_count
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.cpu_pool.machine_type
    disk_size_gb    = var.cpu_pool.disk_size_gb
    disk_type       = "pd-balanced"
    image_type      = "COS_CONTAINERD"
    spot            = var.cpu_pool.spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.node_oauth_scopes
    tags            = local.node_tags
    labels          = merge(var.labels, { "dlpipe.io/pool" = "cpu" })
    resource_labels = var.labels

    metadata = {
      disable-legacy-endpoints = "true"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

resource "google_container_node_pool" "gpu" {
  count    = var.gpu_pool.enabled ? 1 : 0
  project  = var.project_id
  name     = "${var.name}-gpu"
  location = var.region
  cluster  = google_container_cluster.this.name

  # Scales from zero: a training run's executors pending on nvidia.com/gpu bring nodes up.
  autoscaling {
    min_node_count = var.gpu_pool.min_node_count
    max_node_count = var.gpu_pool.max_node_count
  }

  management {
    auto_repair  = true
    auto_upgrade = true
  }

  node_config {
    machine_type    = var.gpu_pool.machine_type
    disk_size_gb    = var.gpu_pool.disk_size_gb
    disk_type       = "pd-balanced"
    image_type      = "COS_CONTAINERD"
    spot            = var.gpu_pool.spot
    service_account = google_service_account.nodes.email
    oauth_scopes    = local.node_oauth_scopes
    tags            = local.node_tags
    labels          = merge(var.labels, { "dlpipe.io/pool" = "gpu" })
    resource_labels = var.labels

    guest_accelerator {
      type  = var.gpu_pool.gpu_type
      count = var.gpu_pool.gpu_count
      gpu_driver_installation_config {
        gpu_driver_version = "DEFAULT"
      }
    }

    # GKE adds this taint to GPU nodes anyway; declaring it keeps plans stable.
    taint {
      key    = "nvidia.com/gpu"
      value  = "present"
      effect = "NO_SCHEDULE"
    }

    metadata = {
      disable-legacy-endpoints = "true"
    }

    shielded_instance_config {
      enable_secure_boot          = true
      enable_integrity_monitoring = true
    }

    workload_metadata_config {
      mode = "GKE_METADATA"
    }
  }
}

# Private nodes have no external IP: without Cloud NAT they cannot pull public images
# (the Spark operator, MinIO, Strimzi) or reach anything outside the VPC. One router and NAT
# per region of the network, unless the network already has one (create_cloud_nat = false).
resource "google_compute_router" "nat" {
  count   = var.create_cloud_nat ? 1 : 0
  project = var.project_id
  name    = "${var.name}-nat"
  region  = var.region
  network = var.network
}

resource "google_compute_router_nat" "this" {
  count                              = var.create_cloud_nat ? 1 : 0
  project                            = var.project_id
  name                               = "${var.name}-nat"
  router                             = google_compute_router.nat[0].name
  region                             = var.region
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "LIST_OF_SUBNETWORKS"

  subnetwork {
    name                    = var.subnetwork
    source_ip_ranges_to_nat = ["ALL_IP_RANGES"]
  }

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}
