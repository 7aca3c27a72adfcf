#!/usr/bin/env bash
# Prints the path of a Terraform CLI configuration to use as TF_CLI_CONFIG_FILE:
#   - infra/terraform.rc (kept in the repository) when the provider mirror it names exists;
#   - else, when a mirror is found elsewhere ($FERRY_TF_MIRROR, or a `registry.terraform.io`
#     directory within five levels of /), an equivalent file written to .local/terraform/;
#   - else a file that lets Terraform download providers from registry.terraform.io as usual
#     (an operator's machine with network access), with a note on stderr.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
REPO_RC="$ROOT/infra/terraform.rc"
OUT_DIR="$ROOT/.local/terraform"

has_aws() { [[ -n "$1" && -d "$1/registry.terraform.io/hashicorp/aws" ]]; }

repo_mirror="$(sed -n '/filesystem_mirror/,/}/s/^[[:space:]]*path[[:space:]]*=[[:space:]]*"\(.*\)".*/\1/p' "$REPO_RC" | head -n 1)"

mirror=""
if [[ -n "${FERRY_TF_MIRROR:-}" ]]; then
    has_aws "$FERRY_TF_MIRROR" || {
        echo "tf-cli-config: FERRY_TF_MIRROR=$FERRY_TF_MIRROR holds no registry.terraform.io/hashicorp/aws" >&2
        exit 1
    }
    mirror="$FERRY_TF_MIRROR"
elif has_aws "$repo_mirror"; then
    echo "$REPO_RC"
    exit 0
else
    while IFS= read -r dir; do
        if has_aws "$(dirname "$dir")"; then
            mirror="$(dirname "$dir")"
            break
        fi
    done < <(find / -maxdepth 5 -type d -name registry.terraform.io 2>/dev/null || true)
fi

mkdir -p "$OUT_DIR"
if [[ -n "$mirror" ]]; then
    if [[ "$mirror" == "$repo_mirror" ]]; then
        echo "$REPO_RC"
        exit 0
    fi
    sed "s#path *= *\"[^\"]*\"#path    = \"$mirror\"#" "$REPO_RC" >"$OUT_DIR/terraform.rc"
    echo "$OUT_DIR/terraform.rc"
else
    echo "tf-cli-config: no local provider mirror found; Terraform will download providers from registry.terraform.io" >&2
    printf 'provider_installation {\n  direct {}\n}\n' >"$OUT_DIR/direct.rc"
    echo "$OUT_DIR/direct.rc"
fi
