# ferry: every command a developer or CI needs. The first two are the README's set-up commands.
CARGO ?= cargo
export TF_CLI_CONFIG_FILE := $(CURDIR)/infra/terraform.rc
# Local runs talk to moto only: never let an AWS SDK probe the EC2 metadata address.
export AWS_EC2_METADATA_DISABLED := true

.PHONY: demo demo-views test setup lint fmt unit unit-offline bench

## demo: install and start Azurite, moto and sshd on loopback, then run the end-to-end demo
## (the `ferry-demo` binary: feature `demo`, so the operational `ferry` never links the harness).
demo: setup
	$(CARGO) run --quiet --features demo --bin ferry-demo -- copy

## demo-views: the scheduled view sync into PostgreSQL and S3 on local components.
demo-views: setup
	$(CARGO) run --quiet --features demo --bin ferry-demo -- views

## test: install the local components, then every test (unit, integration, conformance, terraform).
test: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) test --workspace --no-fail-fast

## setup: install Azurite, moto, OpenSSH server, PostgreSQL and GnuPG (the last three via apt when missing; idempotent).
setup:
	bash scripts/install-components.sh

## unit: the fast tier, seconds: every crate's unit tests (`--lib`), on the in-memory state store,
## in-process sources/destinations and wiremock fakes; starts no local component.
unit:
	$(CARGO) test --workspace --lib

## unit-offline: proves `unit` starts no component (CI): component binaries off PATH, the harness
## pointed at an empty folder, every process traced; prints the run's wall time.
unit-offline:
	bash scripts/unit-offline.sh

## lint: formatting and clippy, warnings are errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --features demo -- -D warnings

fmt:
	$(CARGO) fmt --all

## bench: ferry vs rclone and the raw limits on the local components (loopback, then a wide-area
## profile at 20 and 60 ms RTT through a delay proxy), CPU seconds per GiB and peak RSS of every
## copy, then view sync vs a plain Python script; writes docs/benchmarks.md. The S3 copies also
## go to s3s-fs (a Rust S3 server, installed into .local/s3s), where moto is not the bound.
## FERRY_BENCH_SIZES=64,1024,4096 adds the 4 GiB run (needs ~10 GB free disk);
## FERRY_BENCH_PROFILE=profiling measures a non-LTO release build (minutes less to build);
## tests/bench/bench.rs lists the other knobs.
export FERRY_BENCH_PROFILE ?= release
bench: setup
	@command -v rclone >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rclone curl)
	.local/venv/bin/python -m pip install --quiet --disable-pip-version-check 'psycopg[binary]==3.2.*'
	@test -x .local/s3s/bin/s3s-fs || $(CARGO) install --quiet s3s-fs --version 0.14.1 --features binary --locked --root .local/s3s
	$(CARGO) build --profile $(FERRY_BENCH_PROFILE) --workspace --bins
	$(CARGO) build --profile $(FERRY_BENCH_PROFILE) --example hello_bootstrap
	$(CARGO) run --quiet --example bench
	$(CARGO) run --quiet --example bench_view_sync -- 100000 s3 1000 --append docs/benchmarks.md
	$(CARGO) run --quiet --example bench_view_sync -- 100000 postgres 1000 --append docs/benchmarks.md

-include infra/infra.mk
