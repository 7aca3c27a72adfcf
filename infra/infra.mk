# ferry packaging and deployment targets. Included by the top-level Makefile
# (`include infra/infra.mk`); every path is relative to the repository root.
#
#   make build      one deployable zip per function: target/lambda/<function>/bootstrap.zip
#   make deploy     build, then terraform init + apply of infra/examples/complete
#   make tf-check   terraform fmt -check, init and validate of every module and example
#
# Knobs (override on the command line, e.g. `make build LAMBDA_ARCH=arm64`):
#   FUNCTIONS       functions to package (each is a workspace binary of the same name)
#   LAMBDA_ARCH     x86_64 (default, builds offline) or arm64 (needs the aarch64 Rust target:
#                   `rustup target add aarch64-unknown-linux-gnu`)
#   DEPLOY_DIR      root module `make deploy` applies
#   DEPLOY_ARGS     extra arguments for `terraform apply`, e.g. -var-file=$PWD/prod.tfvars
#                   (terraform runs with -chdir=$(DEPLOY_DIR): give absolute paths)
#   TERRAFORM       terraform binary

FUNCTIONS ?= webhook-ingest blob-copy view-sync token-refresh export-pull reconcile
LAMBDA_ARCH ?= x86_64
LAMBDA_DIR ?= target/lambda
DEPLOY_DIR ?= infra/examples/complete
DEPLOY_ARGS ?=
TERRAFORM ?= terraform

FERRY_VENV ?= .local/venv
CARGO_LAMBDA := $(FERRY_VENV)/bin/cargo-lambda
TF_CHECK_DIR := .local/tf-check
# Picks infra/terraform.rc, or an equivalent for a mirror found elsewhere (see the script).
TF_RC_CMD := bash infra/scripts/tf-cli-config.sh

ifeq ($(LAMBDA_ARCH),arm64)
CARGO_LAMBDA_ARCH_FLAG := --arm64
else ifeq ($(LAMBDA_ARCH),x86_64)
CARGO_LAMBDA_ARCH_FLAG := --x86-64
else
$(error LAMBDA_ARCH must be x86_64 or arm64, not "$(LAMBDA_ARCH)")
endif

.PHONY: build deploy tf-check

## build: package every function with cargo-lambda (installed into .local/venv from PyPI if missing).
build: $(CARGO_LAMBDA)
	PATH="$(abspath $(FERRY_VENV)/bin):$$PATH" $(CARGO_LAMBDA) lambda build --release \
		--output-format zip $(CARGO_LAMBDA_ARCH_FLAG) --lambda-dir $(LAMBDA_DIR) \
		$(foreach f,$(FUNCTIONS),--package $(f) --bin $(f))
	@echo "Lambda packages ($(LAMBDA_ARCH), runtime provided.al2023, handler bootstrap):"
	@for f in $(FUNCTIONS); do \
		zip="$(LAMBDA_DIR)/$$f/bootstrap.zip"; \
		if [ ! -f "$$zip" ]; then echo "  $$f: MISSING $$zip" >&2; exit 1; fi; \
		bytes=$$(stat -c %s "$$zip"); \
		printf '  %-16s %10d bytes (%s MiB)  %s\n' "$$f" "$$bytes" \
			"$$(awk -v b=$$bytes 'BEGIN { printf "%.2f", b / 1048576 }')" "$$zip"; \
	done

$(CARGO_LAMBDA):
	@command -v python3 >/dev/null || { echo "python3 is needed to install cargo-lambda" >&2; exit 1; }
	@[ -x "$(FERRY_VENV)/bin/python" ] || python3 -m venv "$(FERRY_VENV)"
	@echo "installing cargo-lambda (and zig) from PyPI into $(FERRY_VENV) ..."
	"$(FERRY_VENV)/bin/python" -m pip install --quiet --disable-pip-version-check cargo-lambda
	@[ -x "$@" ] || { echo "pip finished but $@ is missing" >&2; exit 1; }

## deploy: build, then terraform init/apply of infra/examples/complete with the built packages.
deploy: build
	@set -e; \
	export TF_CLI_CONFIG_FILE="$$($(TF_RC_CMD))"; \
	export CHECKPOINT_DISABLE=1; \
	$(TERRAFORM) -chdir=$(DEPLOY_DIR) init -input=false; \
	$(TERRAFORM) -chdir=$(DEPLOY_DIR) apply \
		-var 'lambda_package_dir=$(abspath $(LAMBDA_DIR))' \
		-var 'architecture=$(LAMBDA_ARCH)' \
		$(DEPLOY_ARGS)

## tf-check: terraform fmt -check, then init and validate of every module and example (in a
## copy under .local/, so no .terraform/ or lock file lands in the source tree).
tf-check:
	@set -e; \
	export TF_CLI_CONFIG_FILE="$$($(TF_RC_CMD))"; \
	export CHECKPOINT_DISABLE=1 TF_IN_AUTOMATION=1; \
	echo "terraform fmt -check -recursive infra"; \
	$(TERRAFORM) fmt -check -recursive -diff infra; \
	rm -rf $(TF_CHECK_DIR); mkdir -p $(TF_CHECK_DIR); cp -R infra $(TF_CHECK_DIR)/; \
	for dir in $(TF_CHECK_DIR)/infra/modules/* $(TF_CHECK_DIR)/infra/examples/*; do \
		echo "terraform init + validate $${dir#$(TF_CHECK_DIR)/}"; \
		$(TERRAFORM) -chdir=$$dir init -backend=false -input=false -no-color >$$dir/init.log 2>&1 \
			|| { cat $$dir/init.log; exit 1; }; \
		$(TERRAFORM) -chdir=$$dir validate -no-color; \
	done
