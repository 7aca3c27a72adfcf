#!/usr/bin/env bash
# Installs the local components that ferry's tests and demo run against, idempotently:
#   - Azurite (npm `azurite@3`)        -> .local/azurite/node_modules/.bin/azurite-blob
#   - moto server (PyPI `moto[server]`) -> .local/venv/bin/moto_server
#   - OpenSSH server (Debian)           -> /usr/sbin/sshd (never left running as a system service)
#   - PostgreSQL server (Debian)        -> /usr/lib/postgresql/*/bin (no system cluster left running)
#   - GnuPG (Debian `gnupg`)            -> gpg, gpg-agent (the encryption tests decrypt with it)
# Everything except sshd goes under the git-ignored .local/ of the repository.
# Quiet and fast when everything is already present; fails loudly otherwise.
set -euo pipefail

ROOT="${FERRY_REPO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}"
LOCAL="$ROOT/.local"
AZURITE_BIN="$LOCAL/azurite/node_modules/.bin/azurite-blob"
MOTO_BIN="$LOCAL/venv/bin/moto_server"
SSHD_BIN="/usr/sbin/sshd"

say() { echo "install-components: $*" >&2; }
die() {
    echo "install-components: ERROR: $*" >&2
    exit 1
}

# Runs a command with its output captured to a log; on failure prints the log tail and dies.
run_logged() {
    local what="$1"
    shift
    local log
    log="$(mktemp "${TMPDIR:-/tmp}/ferry-install.XXXXXX")"
    if ! "$@" >"$log" 2>&1; then
        echo "----- last lines of: $* -----" >&2
        tail -n 40 "$log" >&2
        echo "-----" >&2
        rm -f "$log"
        die "$what failed (command: $*)"
    fi
    rm -f "$log"
}

install_azurite() {
    [[ -x "$AZURITE_BIN" ]] && return 0
    command -v npm >/dev/null 2>&1 || die "npm not found: install Node.js/npm to get Azurite"
    say "installing Azurite (npm azurite@3) into $LOCAL/azurite ..."
    mkdir -p "$LOCAL/azurite"
    run_logged "npm install azurite@3" \
        npm install --prefix "$LOCAL/azurite" --no-audit --no-fund --loglevel=error azurite@3
    [[ -x "$AZURITE_BIN" ]] || die "npm install finished but $AZURITE_BIN is missing"
    say "Azurite installed: $AZURITE_BIN"
}

install_moto() {
    [[ -x "$MOTO_BIN" ]] && return 0
    local py
    py="$(command -v python3 || true)"
    [[ -n "$py" ]] || die "python3 not found: it is needed for the moto server"
    say "installing moto[server] into $LOCAL/venv ..."
    mkdir -p "$LOCAL"
    if [[ ! -x "$LOCAL/venv/bin/python" ]]; then
        "$py" -c 'import venv, ensurepip' 2>/dev/null ||
            die "$py cannot create virtual environments (no venv/ensurepip module; on Debian's python3: apt-get install python3-venv)"
        run_logged "python3 -m venv $LOCAL/venv" "$py" -m venv "$LOCAL/venv"
    fi
    run_logged "pip install moto[server]" \
        "$LOCAL/venv/bin/python" -m pip install --quiet --disable-pip-version-check 'moto[server]'
    [[ -x "$MOTO_BIN" ]] || die "pip install finished but $MOTO_BIN is missing"
    say "moto installed: $MOTO_BIN"
}

install_sshd() {
    [[ -x "$SSHD_BIN" ]] && return 0
    command -v apt-get >/dev/null 2>&1 || die "$SSHD_BIN is missing and apt-get is not available: install OpenSSH server by hand"
    [[ "$(id -u)" == 0 ]] || die "$SSHD_BIN is missing; installing openssh-server needs root (run: sudo apt-get install -y openssh-server)"
    say "installing openssh-server (apt-get) ..."

    # Keep the package from starting a system sshd on port 22: a policy-rc.d that
    # answers 101 ("action forbidden") makes invoke-rc.d skip the start. Only add one
    # (and remove it afterwards) when the machine does not already have one.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
        # Removed below; also if this script is interrupted.
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    local had_pid=""
    [[ -s /run/sshd.pid ]] && had_pid="$(cat /run/sshd.pid 2>/dev/null || true)"

    local rc=0
    (
        export DEBIAN_FRONTEND=noninteractive
        run_logged "apt-get update" apt-get update -q
        run_logged "apt-get install openssh-server" \
            apt-get install -y -q --no-install-recommends openssh-server
    ) || rc=$?

    if [[ "$created_policy" == 1 ]]; then
        rm -f "$policy"
        trap - EXIT
    fi
    # Belt and braces: if the install still started a system sshd, stop exactly that one.
    if [[ -s /run/sshd.pid ]]; then
        local pid
        pid="$(cat /run/sshd.pid 2>/dev/null || true)"
        if [[ -n "$pid" && "$pid" != "$had_pid" ]] && kill -0 "$pid" 2>/dev/null; then
            say "stopping the system sshd (pid $pid) started by the package install"
            kill "$pid" 2>/dev/null || true
        fi
    fi
    [[ "$rc" == 0 ]] || exit "$rc"
    [[ -x "$SSHD_BIN" ]] || die "apt-get install finished but $SSHD_BIN is missing"
    say "OpenSSH server installed: $SSHD_BIN"
}

# True when PostgreSQL server binaries (initdb + postgres) are on this machine: the same places
# the test harness looks (tests/harness/src/postgres.rs).
have_postgres() {
    local d
    if [[ -n "${FERRY_PG_BIN_DIR:-}" ]]; then
        [[ -x "$FERRY_PG_BIN_DIR/initdb" && -x "$FERRY_PG_BIN_DIR/postgres" ]]
        return
    fi
    for d in /usr/lib/postgresql/*/bin; do
        [[ -x "$d/initdb" && -x "$d/postgres" ]] && return 0
    done
    command -v initdb >/dev/null 2>&1 && command -v postgres >/dev/null 2>&1
}

install_postgres() {
    have_postgres && return 0
    command -v apt-get >/dev/null 2>&1 || die "PostgreSQL server binaries are missing and apt-get is not available: install PostgreSQL by hand (or set FERRY_PG_BIN_DIR)"
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL server binaries are missing; installing them needs root (run: sudo apt-get install -y postgresql)"
    say "installing postgresql (apt-get) ..."

    # The tests start their own throwaway clusters; keep the package from starting the system
    # cluster it creates (same policy-rc.d guard as for sshd above).
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        created_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    local rc=0
    (
        export DEBIAN_FRONTEND=noninteractive
        run_logged "apt-get update" apt-get update -q
        run_logged "apt-get install postgresql" \
            apt-get install -y -q --no-install-recommends postgresql
    ) || rc=$?
    if [[ "$created_policy" == 1 ]]; then
        rm -f "$policy"
        trap - EXIT
    fi
    # Belt and braces: stop any system cluster the install started anyway.
    if command -v pg_lsclusters >/dev/null 2>&1; then
        local ver name port status rest
        while read -r ver name port status rest; do
            if [[ "$status" == online* ]]; then
                say "stopping the system PostgreSQL cluster $ver/$name started by the package install"
                pg_ctlcluster "$ver" "$name" stop || true
            fi
        done < <(pg_lsclusters --no-header 2>/dev/null || true)
    fi
    [[ "$rc" == 0 ]] || exit "$rc"
    have_postgres || die "apt-get install finished but no initdb/postgres was found"
    say "PostgreSQL installed: $(ls -d /usr/lib/postgresql/*/bin | tail -n 1)"
}

# True when gpg and its agent are on this machine (the pgp tests generate keys and decrypt).
have_gpg() {
    command -v gpg >/dev/null 2>&1 && command -v gpg-agent >/dev/null 2>&1 && command -v gpgconf >/dev/null 2>&1
}

install_gpg() {
    have_gpg && return 0
    command -v apt-get >/dev/null 2>&1 || die "gpg is missing and apt-get is not available: install GnuPG by hand"
    [[ "$(id -u)" == 0 ]] || die "gpg is missing; installing gnupg needs root (run: sudo apt-get install -y gnupg)"
    say "installing gnupg (apt-get) ..."
    (
        export DEBIAN_FRONTEND=noninteractive
        run_logged "apt-get update" apt-get update -q
        run_logged "apt-get install gnupg" apt-get install -y -q --no-install-recommends gnupg
    )
    have_gpg || die "apt-get install finished but gpg, gpg-agent or gpgconf is missing"
    say "GnuPG installed: $(command -v gpg)"
}

# Fast path: nothing to do.
if [[ -x "$AZURITE_BIN" && -x "$MOTO_BIN" && -x "$SSHD_BIN" ]] && have_postgres && have_gpg; then
    exit 0
fi

# Several test binaries may start at once on a fresh machine: install one at a time.
mkdir -p "$LOCAL"
if command -v flock >/dev/null 2>&1; then
    exec 9>"$LOCAL/.install.lock"
    flock 9
fi

install_azurite
install_moto
install_sshd
install_postgres
install_gpg
