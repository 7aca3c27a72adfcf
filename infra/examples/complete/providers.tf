locals {
  # With aws_endpoint_url set (a local emulator such as moto), every service this example uses
  # goes to that endpoint and the provider skips the checks that need real AWS.
  local_endpoint = var.aws_endpoint_url != null
}

provider "aws" {
  region = var.region

  skip_credentials_validation = local.local_endpoint
  skip_requesting_account_id  = local.local_endpoint
  skip_metadata_api_check     = local.local_endpoint
  s3_use_path_style           = local.local_endpoint

  endpoints {
    cloudwatch     = var.aws_endpoint_url
    iam            = var.aws_endpoint_url
    lambda         = var.aws_endpoint_url
    logs           = var.aws_endpoint_url
    s3             = var.aws_endpoint_url
    scheduler      = var.aws_endpoint_url
    secretsmanager = var.aws_endpoint_url
    sns            = var.aws_endpoint_url
    sqs            = var.aws_endpoint_url
    sts            = var.aws_endpoint_url
  }

  default_tags {
    tags = merge({ Application = "ferry" }, var.tags)
  }
}
