#!/usr/bin/env bash
# Proves that `make unit` needs no local component (CI step, `make unit-offline`): it runs
# `make unit` with the component binaries (Azurite, moto_server, sshd, PostgreSQL) off PATH and
# with FERRY_REPO_ROOT pointing at an empty folder, so the test harness finds neither `.local/`
# nor the installer. When strace is available, every process the run starts is traced and the
# step fails if any of them even tried to execute a component or the installer.
# Prints the wall time of the test run itself (the build happens first, in the normal env).
set -euo pipefail
cd "$(dirname "$0")/.."

components='sshd|moto_server|azurite|azurite-blob|postgres|initdb|pg_ctl|node|apt-get'

# 1. Build the unit tests first, in the normal environment, so the timing below is the run only.
cargo test --workspace --lib --no-run --quiet

# 2. PATH without every folder that holds a component binary.
clean_path=""
IFS=: read -r -a dirs <<<"$PATH"
for dir in "${dirs[@]}"; do
    keep=1
    for bin in sshd moto_server azurite azurite-blob postgres initdb; do
        if [ -e "$dir/$bin" ]; then keep=0; fi
    done
    if [ "$keep" = 1 ]; then clean_path="${clean_path:+$clean_path:}$dir"; fi
done
for bin in sshd moto_server azurite-blob postgres initdb; do
    if PATH="$clean_path" command -v "$bin" >/dev/null; then
        echo "unit-offline: $bin is still on PATH" >&2
        exit 1
    fi
done

empty_root="$(mktemp -d)"
trace="$(mktemp)"
trap 'rm -rf "$empty_root" "$trace"' EXIT

run=(make --no-print-directory unit)
how="wall, build excluded"
if command -v strace >/dev/null; then
    run=(strace -f -qq -e trace=execve -o "$trace" "${run[@]}")
    how="wall under strace, which slows it about threefold; build excluded"
else
    echo "unit-offline: strace not found; relying on PATH and FERRY_REPO_ROOT alone" >&2
fi

start=$(date +%s.%N)
env PATH="$clean_path" FERRY_REPO_ROOT="$empty_root" "${run[@]}"
end=$(date +%s.%N)

if [ -s "$trace" ]; then
    # moto runs as the venv's python with tests/harness/moto_server.py: matched by that argument.
    if grep -E "execve\(\"[^\"]*/($components)\"|install-components\.sh|moto_server\.py" "$trace" >&2; then
        echo "unit-offline: the unit tier tried to start a component (lines above)" >&2
        exit 1
    fi
    echo "unit-offline: $(grep -c 'execve(' "$trace") processes traced, none of them a component"
fi
awk -v s="$start" -v e="$end" -v how="$how" \
    'BEGIN { printf "unit-offline: make unit passed with no component in %.1f s (%s)\n", e - s, how }'
