# Shared shell helpers for scripts/*: output, package installation, tool locations.
# shellcheck shell=bash

if [[ -t 1 ]]; then
    _bold=$'\e[1m' _dim=$'\e[2m' _red=$'\e[31m' _reset=$'\e[0m'
else
    _bold='' _dim='' _red='' _reset=''
fi

step() { printf '%s==> %s%s\n' "$_bold" "$*" "$_reset"; }
note() { printf '%s    %s%s\n' "$_dim" "$*" "$_reset"; }
die() {
    printf '%serror:%s %s\n' "$_red" "$_reset" "$*" >&2
    exit 2
}

# The Debian packages Baton's build, tests, demo and benchmarks need.
BATON_PACKAGES=(
    libpq-dev libcurl4-openssl-dev pkg-config
    postgresql-15 postgresql-client-15
    etcd-server etcd-client
    iproute2 iptables curl wrk procps util-linux python3 python3-psycopg2 e2fsprogs openssl
    python3-yaml haproxy systemd python3-venv pgbackrest pgbouncer
)
# pgbackrest is for the backup tests (a real repository on the local disk); pgbouncer for the
# pooler tests (`baton pooler` in front of a real PgBouncer; Debian does not start it).
# python3-yaml, haproxy (`haproxy -c`) and systemd (`systemd-analyze verify`) are for the static
# checks of the deployment files (scripts/lib/validate_deploy.py); no service of theirs is used.
# python3-venv: the compatibility tests install Patroni (the oracle) from PyPI into a venv.

# Only for some benchmarks, so that CI (scripts/test) does not install them:
# python3-matplotlib draws the chart of `scripts/bench failover`.
BATON_BENCH_PACKAGES=(python3-matplotlib)

# Installs whatever is missing from BATON_PACKAGES and the packages given as arguments (e.g.
# `ensure_packages "${BATON_BENCH_PACKAGES[@]}"`); needs root or sudo; apt-get only.
ensure_packages() {
    local missing=()
    local package
    for package in "${BATON_PACKAGES[@]}" "$@"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
    done
    if ((${#missing[@]} == 0)); then
        note "all $((${#BATON_PACKAGES[@]} + $#)) packages present"
        return
    fi
    note "installing: ${missing[*]}"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null || die "missing packages (${missing[*]}) and not root: install them, or run as root"
        sudo=(sudo)
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Debian's postgresql package starts a cluster of its own on 5432; Baton never uses it.
    command -v swift >/dev/null || die "swift is not on PATH (expected Swift 6.2 or later, e.g. /opt/swift/usr/bin)"
}

# Where PostgreSQL's server binaries live (initdb, postgres, pg_ctl, pg_basebackup, pg_rewind).
pg_bin_dir() {
    local dir
    for dir in "${BATON_PG_BIN:-}" /usr/lib/postgresql/15/bin; do
        if [[ -n "$dir" && -x "$dir/postgres" ]]; then
            echo "$dir"
            return 0
        fi
    done
    return 1
}

# The agent's two executables, release build in .build-release: `baton` and the fence guard it
# starts from the same directory (`baton-fence-guard`). Prints errors and the last line of each.
build_agent_release() {
    local product
    for product in baton baton-fence-guard; do
        swift build -c release --scratch-path .build-release --product "$product" 2>&1 |
            grep -E "error|complete" | tail -2
    done
}
