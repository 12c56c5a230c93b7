variable "namespaces" {
  type = object({
    dlpipe         = string
    minio          = string
    kafka          = string
    spark_operator = string
  })
  description = "Namespaces of the dlpipe chart, MinIO, Strimzi + the Kafka cluster, and the Spark operator."
  default = {
    dlpipe         = "dlpipe"
    minio          = "minio"
    kafka          = "kafka"
    spark_operator = "spark-operator"
  }
}

variable "buckets" {
  type = object({
    lake        = string
    datasets    = string
    models      = string
    checkpoints = string
  })
  description = "Bucket names, created in MinIO and passed to the dlpipe chart."
  default = {
    lake        = "dlpipe-lake"
    datasets    = "dlpipe-datasets"
    models      = "dlpipe-models"
    checkpoints = "dlpipe-checkpoints"
  }
}

variable "minio" {
  type = object({
    chart_version = string
    mode          = string
    replicas      = number
    volume_size   = string
    storage_class = string
  })
  description = "The MinIO release (charts.min.io `minio` chart): standalone or distributed mode, persistent volume size and class."
  default = {
    chart_version = "5.4.0"
    mode          = "standalone"
    replicas      = 1
    volume_size   = "100Gi"
    storage_class = "standard-rwo"
  }

  validation {
    condition     = contains(["standalone", "distributed"], var.minio.mode)
    error_message = "minio.mode must be standalone or distributed."
  }
}

variable "strimzi_chart_version" {
  type        = string
  description = "Version of the Strimzi Kafka operator chart (strimzi-kafka-operator)."
  default     = "0.48.0"
}

variable "kafka" {
  type = object({
    name           = string
    version        = string
    replicas       = number
    volume_size    = string
    raw_topic      = string
    raw_partitions = number
  })
  description = "The Kafka cluster Strimzi runs (KRaft, no ZooKeeper) and the raw topic the producers write to."
  default = {
    name           = "dlpipe-kafka"
    version        = "4.1.0"
    replicas       = 3
    volume_size    = "50Gi"
    raw_topic      = "dlpipe.raw.images"
    raw_partitions = 6
  }

  validation {
    condition     = var.kafka.replicas >= 1 && var.kafka.raw_partitions >= 1
    error_message = "kafka.replicas and kafka.raw_partitions must be at least 1."
  }
}

variable "spark_operator_chart_version" {
  type        = string
  description = "Version of the Kubeflow Spark operator chart (spark-operator, v2.x)."
  default     = "2.3.0"
}

variable "dlpipe_chart_path" {
  type        = string
  description = "Path of the dlpipe chart (helm/dlpipe of this repository) or a packaged .tgz."
  default     = null
}

variable "dlpipe_image" {
  type = object({
    repository = string
    tag        = string
  })
  description = "The dlpipe image built from the repository's Dockerfile and pushed to a registry the cluster can pull from."
}

variable "dlpipe_values" {
  type        = any
  description = "Extra values of the dlpipe chart (merged over what this module sets), e.g. { retrain = { gpu = { enabled = true } } }."
  default     = {}
}

variable "gpu_node_selector" {
  type        = map(string)
  description = "Node selector of the GPU executors when training on GPUs (the gke-cluster module's gpu_node_selector output); empty keeps the chart default."
  default     = {}
}
