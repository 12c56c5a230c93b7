# Everything dlpipe needs in the cluster, in dependency order within one apply:
# MinIO (with the buckets), the Strimzi operator, then its Kafka cluster, the Spark operator,
# and the dlpipe chart. Credentials are generated here, stored only in Kubernetes Secrets and
# handed to the charts by name (existingSecret).

locals {
  dlpipe_chart    = coalesce(var.dlpipe_chart_path, "${path.module}/../../../helm/dlpipe")
  kafka_bootstrap = "${var.kafka.name}-kafka-bootstrap.${var.namespaces.kafka}.svc.cluster.local:9092"
  minio_endpoint  = "http://minio.${var.namespaces.minio}.svc.cluster.local:9000"
  s3_secret_name  = "dlpipe-s3"
}

resource "kubernetes_namespace_v1" "this" {
  for_each = toset(values(var.namespaces))
  metadata {
    name = each.value
    labels = {
      "pod-security.kubernetes.io/enforce" = each.value == var.namespaces.dlpipe ? "restricted" : "baseline"
    }
  }
}

# -- credentials ---------------------------------------------------------------------------
resource "random_password" "minio_root" {
  length  = 40
  special = false
}

resource "random_password" "dlpipe_s3" {
  length  = 40
  special = false
}

resource "kubernetes_secret_v1" "minio_root" {
  metadata {
    name      = "minio-root"
    namespace = kubernetes_namespace_v1.this[var.namespaces.minio].metadata[0].name
  }
  data = {
    rootUser     = "minio-root"
    rootPassword = random_password.minio_root.result
  }
}

# The identity the dlpipe jobs and servers use: a MinIO user limited to the dlpipe buckets.
resource "kubernetes_secret_v1" "dlpipe_s3_user" {
  metadata {
    name      = "dlpipe-s3-user"
    namespace = kubernetes_namespace_v1.this[var.namespaces.minio].metadata[0].name
  }
  data = {
    secretKey = random_password.dlpipe_s3.result
  }
}

resource "kubernetes_secret_v1" "dlpipe_s3" {
  metadata {
    name      = local.s3_secret_name
    namespace = kubernetes_namespace_v1.this[var.namespaces.dlpipe].metadata[0].name
  }
  data = {
    access-key = "dlpipe"
    secret-key = random_password.dlpipe_s3.result
  }
}

# -- MinIO ---------------------------------------------------------------------------------
resource "helm_release" "minio" {
  name       = "minio"
  namespace  = kubernetes_namespace_v1.this[var.namespaces.minio].metadata[0].name
  repository = "https://charts.min.io"
  chart      = "minio"
  version    = var.minio.chart_version
  wait       = true
  timeout    = 900

  values = [yamlencode({
    mode           = var.minio.mode
    replicas       = var.minio.replicas
    existingSecret = kubernetes_secret_v1.minio_root.metadata[0].name
    persistence = {
      size         = var.minio.volume_size
      storageClass = var.minio.storage_class
    }
    resources = { requests = { memory = "2Gi", cpu = "500m" } }
    buckets   = [for name in values(var.buckets) : { name = name, policy = "none", purge = false }]
    policies = [{
      name = "dlpipe-rw"
      statements = [{
        actions   = ["s3:*"]
        resources = flatten([for name in values(var.buckets) : ["arn:aws:s3:::${name}", "arn:aws:s3:::${name}/*"]])
      }]
    }]
    users = [{
      accessKey         = "dlpipe"
      existingSecret    = kubernetes_secret_v1.dlpipe_s3_user.metadata[0].name
      existingSecretKey = "secretKey"
      policy            = "dlpipe-rw"
    }]
  })]
}

# -- Kafka: the Strimzi operator, then its cluster -----------------------------------------
resource "helm_release" "strimzi" {
  name       = "strimzi"
  namespace  = kubernetes_namespace_v1.this[var.namespaces.kafka].metadata[0].name
  repository = "oci://quay.io/strimzi-helm"
  chart      = "strimzi-kafka-operator"
  version    = var.strimzi_chart_version
  wait       = true

  values = [yamlencode({
    watchNamespaces = []
  })]
}

# The Kafka and KafkaNodePool resources as a small local chart: a helm_release (unlike
# kubernetes_manifest) needs no CRDs at plan time, so the cluster comes up in one apply.
resource "helm_release" "kafka" {
  name      = var.kafka.name
  namespace = kubernetes_namespace_v1.this[var.namespaces.kafka].metadata[0].name
  chart     = "${path.module}/charts/kafka-cluster"
  wait      = true
  timeout   = 900

  values = [yamlencode({
    name          = var.kafka.name
    version       = var.kafka.version
    replicas      = var.kafka.replicas
    volumeSize    = var.kafka.volume_size
    rawTopic      = var.kafka.raw_topic
    rawPartitions = var.kafka.raw_partitions
  })]

  depends_on = [helm_release.strimzi]
}

# -- the Spark operator --------------------------------------------------------------------
resource "helm_release" "spark_operator" {
  name       = "spark-operator"
  namespace  = kubernetes_namespace_v1.this[var.namespaces.spark_operator].metadata[0].name
  repository = "https://kubeflow.github.io/spark-operator"
  chart      = "spark-operator"
  version    = var.spark_operator_chart_version
  wait       = true

  values = [yamlencode({
    spark = {
      jobNamespaces = [var.namespaces.dlpipe]
      # The dlpipe chart brings its own driver service account and Role.
      serviceAccount = { create = false }
      rbac           = { create = false }
    }
    # Pod-level fields (security contexts, tolerations, volumes) are applied by the webhook.
    webhook = { enable = true }
  })]
}

# -- dlpipe --------------------------------------------------------------------------------
resource "helm_release" "dlpipe" {
  name      = "dlpipe"
  namespace = kubernetes_namespace_v1.this[var.namespaces.dlpipe].metadata[0].name
  chart     = local.dlpipe_chart
  wait      = false # serving becomes ready only once training has promoted a model

  values = [
    yamlencode({
      image = var.dlpipe_image
      s3 = {
        endpoint       = local.minio_endpoint
        existingSecret = kubernetes_secret_v1.dlpipe_s3.metadata[0].name
      }
      buckets = var.buckets
      kafka = {
        bootstrapServers = local.kafka_bootstrap
        rawTopic         = var.kafka.raw_topic
      }
    }),
    yamlencode(length(var.gpu_node_selector) == 0 ? {} : {
      retrain = { gpu = { nodeSelector = var.gpu_node_selector } }
    }),
    yamlencode(var.dlpipe_values),
  ]

  depends_on = [helm_release.minio, helm_release.kafka, helm_release.spark_operator]
}
