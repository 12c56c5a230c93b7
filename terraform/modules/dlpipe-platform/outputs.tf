output "kafka_bootstrap_servers" {
  description = "In-cluster bootstrap address of the Kafka cluster (plain listener)."
  value       = local.kafka_bootstrap
}

output "s3_endpoint" {
  description = "In-cluster endpoint of MinIO."
  value       = local.minio_endpoint
}

output "s3_secret_name" {
  description = "Name of the Secret (in the dlpipe namespace) holding the dlpipe S3 credentials."
  value       = kubernetes_secret_v1.dlpipe_s3.metadata[0].name
}

output "dlpipe_namespace" {
  description = "Namespace of the dlpipe release."
  value       = helm_release.dlpipe.namespace
}

output "releases" {
  description = "Name and chart version of every Helm release, keyed by component."
  value = {
    minio          = { name = helm_release.minio.name, version = helm_release.minio.version }
    strimzi        = { name = helm_release.strimzi.name, version = helm_release.strimzi.version }
    kafka          = { name = helm_release.kafka.name, version = helm_release.kafka.version }
    spark_operator = { name = helm_release.spark_operator.name, version = helm_release.spark_operator.version }
    dlpipe         = { name = helm_release.dlpipe.name, version = helm_release.dlpipe.version }
  }
}
