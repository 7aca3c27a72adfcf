output "bucket_id" {
  description = "Name of the state bucket (what ferry's config calls `state.bucket`)."
  value       = aws_s3_bucket.this.id
}

output "bucket_arn" {
  description = "ARN of the state bucket; function modules scope their IAM statements to prefixes under it."
  value       = aws_s3_bucket.this.arn
}

output "bucket_regional_domain_name" {
  description = "Regional domain name of the state bucket."
  value       = aws_s3_bucket.this.bucket_regional_domain_name
}

output "expiring_prefixes" {
  description = "Map of prefix to the number of days after which its objects expire, as configured in the lifecycle rules."
  value       = local.expiring_prefixes
}
