variable "name" {
  description = "Name of the schedule and of its IAM role (the role gets the suffix `-scheduler`)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9_.-]{1,54}$", var.name))
    error_message = "name must be 1-54 letters, digits, '.', '-' or '_' (the role name adds '-scheduler' within IAM's 64-character limit)."
  }
}

variable "description" {
  description = "Description of the schedule."
  type        = string
  default     = ""
}

variable "function_arn" {
  description = "ARN of the Lambda function the schedule invokes."
  type        = string
}

variable "schedule_expression" {
  description = "When to run: `rate(5 minutes)`, `cron(0/15 * * * ? *)` or `at(2030-01-01T00:00:00)`."
  type        = string

  validation {
    condition     = can(regex("^(rate|cron|at)\\(.+\\)$", var.schedule_expression))
    error_message = "schedule_expression must be rate(...), cron(...) or at(...)."
  }
}

variable "schedule_expression_timezone" {
  description = "IANA time zone the cron expression is evaluated in."
  type        = string
  default     = "UTC"
}

variable "group_name" {
  description = "EventBridge Scheduler schedule group."
  type        = string
  default     = "default"
}

variable "enabled" {
  description = "Whether the schedule fires. False keeps it, disabled, so a pause is one variable away."
  type        = bool
  default     = true
}

variable "input" {
  description = "JSON text passed to the function as its event on every run."
  type        = string
  default     = "{}"

  validation {
    condition     = can(jsondecode(var.input))
    error_message = "input must be valid JSON."
  }
}

variable "maximum_retry_attempts" {
  description = "How often Scheduler retries an invocation it could not deliver (throttled or failed to start). The next scheduled run picks up the work anyway, so few retries are needed."
  type        = number
  default     = 2

  validation {
    condition     = var.maximum_retry_attempts >= 0 && var.maximum_retry_attempts <= 185
    error_message = "maximum_retry_attempts must be between 0 and 185."
  }
}

variable "maximum_event_age_in_seconds" {
  description = "Drop an undelivered invocation after this many seconds (keep it below the schedule interval so runs do not pile up)."
  type        = number
  default     = 300

  validation {
    condition     = var.maximum_event_age_in_seconds >= 60 && var.maximum_event_age_in_seconds <= 86400
    error_message = "maximum_event_age_in_seconds must be between 60 and 86400."
  }
}

variable "permissions_boundary_arn" {
  description = "ARN of a permissions boundary policy for the scheduler's IAM role, if your organisation requires one."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to the scheduler's IAM role (schedules themselves take no tags)."
  type        = map(string)
  default     = {}
}
