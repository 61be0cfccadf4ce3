# A local Baton cluster on 127.0.0.1 — 3 etcd members, 3 PostgreSQL 15 servers, 3 agents — under
# one directory. Used by scripts/demo and by the benchmarks. Everything started is recorded by PID
# and stopped by PID.
# shellcheck shell=bash

CLUSTER_DIR=${CLUSTER_DIR:-/tmp/baton-demo}
BATON_BIN=${BATON_BIN:-}
SCOPE=${SCOPE:-demo}
NODES=${NODES:-3}
ETCD_BASE_PORT=${ETCD_BASE_PORT:-24790}
PG_BASE_PORT=${PG_BASE_PORT:-25432}
API_BASE_PORT=${API_BASE_PORT:-28008}
TTL=${TTL:-10}
LOOP_WAIT=${LOOP_WAIT:-2}
RETRY_TIMEOUT=${RETRY_TIMEOUT:-3}
SYNC_MODE=${SYNC_MODE:-false}
# PgBouncer and `baton pooler` beside the cluster (cluster_start_pgbouncer, cluster_start_pooler).
PGBOUNCER_PORT=${PGBOUNCER_PORT:-$((PG_BASE_PORT + 10))}
POOLER_STATUS_PORT=${POOLER_STATUS_PORT:-$((PG_BASE_PORT + 11))}

cluster_write_configs() {
    local endpoints=$1 i name
    for ((i = 1; i <= NODES; i++)); do
        name="node$i"
        install -d -o postgres -m 700 "$CLUSTER_DIR/$name"
        cat >"$CLUSTER_DIR/$name.yml" <<YAML
scope: $SCOPE
name: $name
etcd3:
  hosts: [${endpoints}]
restapi:
  listen: 127.0.0.1:$((API_BASE_PORT + i))
postgresql:
  listen: 127.0.0.1:$((PG_BASE_PORT + i))
  data_dir: $CLUSTER_DIR/$name/data
  bin_dir: $(pg_bin_dir)
  authentication:
    superuser: {username: postgres}
    replication: {username: replicator}
bootstrap:
  dcs:
    ttl: $TTL
    loop_wait: $LOOP_WAIT
    retry_timeout: $RETRY_TIMEOUT
    maximum_lag_on_failover: 1048576
    synchronous_mode: $SYNC_MODE
log:
  level: info
YAML
        chmod 600 "$CLUSTER_DIR/$name.yml"
    done
}

# Secrets come from the environment, never from files on the command line.
cluster_secrets() {
    export BATON_SUPERUSER_PASSWORD=${BATON_SUPERUSER_PASSWORD:-demo-superuser-secret}
    export BATON_REPLICATION_PASSWORD=${BATON_REPLICATION_PASSWORD:-demo-replication-secret}
}

cluster_start_agent() {
    local i=$1
    cluster_secrets
    nohup "$BATON_BIN" agent -c "$CLUSTER_DIR/node$i.yml" >>"$CLUSTER_DIR/node$i.agent.log" 2>&1 </dev/null &
    echo $! >"$CLUSTER_DIR/node$i.agent.pid"
}

cluster_start() {
    mkdir -p "$CLUSTER_DIR"
    chmod 755 "$CLUSTER_DIR"
    local endpoints
    endpoints=$(etcd/local-etcd start "$CLUSTER_DIR/etcd" --members 3 --base-port "$ETCD_BASE_PORT")
    cluster_write_configs "$endpoints"
    local i
    for ((i = 1; i <= NODES; i++)); do cluster_start_agent "$i"; done
}

cluster_list() { "$BATON_BIN" list -c "$CLUSTER_DIR/node1.yml" "$@"; }

# Waits until one leader and NODES-1 streaming replicas are listed (≤ $1 seconds).
cluster_wait_healthy() {
    local limit=${1:-120} started=$SECONDS json
    while ((SECONDS - started < limit)); do
        json=$(cluster_list --format json 2>/dev/null || true)
        if [[ $(grep -o '"role":"Leader"' <<<"$json" | wc -l) -eq 1 &&
            $(grep -o '"state":"streaming"' <<<"$json" | wc -l) -eq $((NODES - 1)) ]]; then
            return 0
        fi
        sleep 0.5
    done
    return 1
}

cluster_leader() {
    cluster_list --format json 2>/dev/null | python3 2>/dev/null -c 'import json,sys; print(next((r["member"] for r in json.load(sys.stdin) if r["role"]=="Leader"), ""))'
}

# PID of node i's postmaster, from its postmaster.pid.
cluster_postmaster_pid() { head -1 "$CLUSTER_DIR/node$1/data/postmaster.pid" 2>/dev/null || true; }

cluster_kill_node() {
    local i=$1 pid
    pid=$(cat "$CLUSTER_DIR/node$i.agent.pid" 2>/dev/null || true)
    [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true
    pid=$(cluster_postmaster_pid "$i")
    [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true
}

# A real PgBouncer (transaction pooling) on 127.0.0.1:$PGBOUNCER_PORT, run as postgres. Its
# [databases] come from $CLUSTER_DIR/pgbouncer/baton.ini, which `baton pooler` writes. Clients
# and the admin console (user postgres) authenticate with SCRAM against userlist.txt (0600), whose
# plain-text password also lets PgBouncer log into the servers with SCRAM.
cluster_start_pgbouncer() {
    local dir=$CLUSTER_DIR/pgbouncer
    cluster_secrets
    install -d -o postgres -g postgres -m 750 "$dir"
    [[ -e $dir/baton.ini ]] || echo "[databases]" >"$dir/baton.ini"
    # PgBouncer's users file: "user" "password", a quote inside doubled.
    (umask 077 && printf '"postgres" "%s"\n' "${BATON_SUPERUSER_PASSWORD//\"/\"\"}" >"$dir/userlist.txt")
    cat >"$dir/pgbouncer.ini" <<INI
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $PGBOUNCER_PORT
unix_socket_dir = $dir
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
admin_users = postgres
pool_mode = transaction
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
server_connect_timeout = 2
server_login_retry = 0.2
%include $dir/baton.ini
INI
    chown postgres:postgres "$dir"/*
    nohup setpriv --reuid=postgres --regid=postgres --init-groups -- /usr/sbin/pgbouncer "$dir/pgbouncer.ini" \
        >>"$dir/pgbouncer.out" 2>&1 </dev/null &
    echo $! >"$CLUSTER_DIR/pgbouncer.pid"
}

# `baton pooler` for that PgBouncer: `app` follows the primary, `app_ro` the replicas; status on
# 127.0.0.1:$POOLER_STATUS_PORT. Extra arguments go to `baton pooler` (--no-pause-on-switchover).
cluster_start_pooler() {
    cluster_secrets
    BATON_POOLER_ADMIN_PASSWORD=$BATON_SUPERUSER_PASSWORD nohup "$BATON_BIN" pooler -c "$CLUSTER_DIR/node1.yml" \
        --name pooler1 --include-file "$CLUSTER_DIR/pgbouncer/baton.ini" --admin-port "$PGBOUNCER_PORT" \
        --admin-user postgres --database app=primary:postgres --database app_ro=replica:postgres \
        --listen "127.0.0.1:$POOLER_STATUS_PORT" --ttl 4 "$@" >>"$CLUSTER_DIR/pooler.log" 2>&1 </dev/null &
    echo $! >"$CLUSTER_DIR/pooler.pid"
}

# Whether the pooler's status endpoint says it follows the cluster.
cluster_pooler_following() {
    curl -fsS --max-time 2 "http://127.0.0.1:$POOLER_STATUS_PORT/health" 2>/dev/null | grep -q '"state":"following"'
}


# Patroni 4.1.5 from PyPI in a venv (.build/patroni-4.1.5, the one the tests use), for
# `scripts/demo migrate`: a Patroni cluster to move to Baton live.
PATRONI_VERSION=4.1.5
PATRONI_VENV=${PATRONI_VENV:-$PWD/.build/patroni-$PATRONI_VERSION}

ensure_patroni() {
    [[ -x "$PATRONI_VENV/bin/patroni" ]] && return 0
    note "installing Patroni $PATRONI_VERSION from PyPI into $PATRONI_VENV"
    # Only a venv of ours is replaced.
    [[ ! -e "$PATRONI_VENV" || -e "$PATRONI_VENV/pyvenv.cfg" ]] || die "$PATRONI_VENV exists and is not a venv"
    rm -rf "$PATRONI_VENV"
    /usr/bin/python3 -m venv "$PATRONI_VENV" &&
        "$PATRONI_VENV/bin/pip" install --quiet "patroni[etcd3,psycopg3]==$PATRONI_VERSION" ||
        die "could not install Patroni $PATRONI_VERSION from PyPI"
}

# Patroni's configuration file for node i, which Baton reads as it is (Patroni's ttl is at least
# 20 s). Secrets are in the file, as Patroni users keep them: 0600, owned by postgres.
cluster_write_patroni_configs() {
    local endpoints=${1//http:\/\//} i name superuser replication
    cluster_secrets
    # YAML single quotes: a quote inside is doubled.
    superuser=${BATON_SUPERUSER_PASSWORD//\'/\'\'}
    replication=${BATON_REPLICATION_PASSWORD//\'/\'\'}
    for ((i = 1; i <= NODES; i++)); do
        name="node$i"
        install -d -o postgres -m 700 "$CLUSTER_DIR/$name"
        # Created 0600: it holds the passwords.
        (umask 077 && cat >"$CLUSTER_DIR/$name.yml") <<YAML
scope: $SCOPE
namespace: /service/
name: $name
restapi:
  listen: 127.0.0.1:$((API_BASE_PORT + i))
  connect_address: 127.0.0.1:$((API_BASE_PORT + i))
etcd3:
  hosts: [${endpoints}]
bootstrap:
  dcs:
    ttl: 20
    loop_wait: $LOOP_WAIT
    retry_timeout: 5
    maximum_lag_on_failover: 1048576
    synchronous_mode: $SYNC_MODE
    postgresql:
      use_pg_rewind: true
      parameters: {wal_log_hints: 'on'}
postgresql:
  listen: 127.0.0.1:$((PG_BASE_PORT + i))
  connect_address: 127.0.0.1:$((PG_BASE_PORT + i))
  data_dir: $CLUSTER_DIR/$name/data
  bin_dir: $(pg_bin_dir)
  pgpass: $CLUSTER_DIR/$name/pgpass
  authentication:
    superuser: {username: postgres, password: '$superuser'}
    replication: {username: replicator, password: '$replication'}
  parameters: {unix_socket_directories: '$CLUSTER_DIR/$name'}
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 scram-sha-256
    - host replication replicator 127.0.0.1/32 scram-sha-256
log:
  level: INFO
YAML
        chown postgres: "$CLUSTER_DIR/$name.yml"
        chmod 600 "$CLUSTER_DIR/$name.yml"
    done
}

# Patroni on node i, run as postgres; its PID in node$i.patroni.pid.
cluster_start_patroni() {
    local i=$1
    # In a subshell: not a job of the caller's shell, which would report its SIGKILL.
    (
        nohup setpriv --reuid=postgres --regid=postgres --init-groups -- "$PATRONI_VENV/bin/patroni" \
            "$CLUSTER_DIR/node$i.yml" >>"$CLUSTER_DIR/node$i.patroni.log" 2>&1 </dev/null &
        echo $! >"$CLUSTER_DIR/node$i.patroni.pid"
    )
}

# Stops what a pid file names (SIGTERM, then SIGKILL if still there after 10 s) and removes the
# file; a PID whose command line is not the expected program's (a reused PID) is left alone.
cluster_stop_pidfile() {
    local file=$1 program=$2 pid
    pid=$(cat "$file" 2>/dev/null || true)
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$program"; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$file"
}

cluster_stop_pooler() { cluster_stop_pidfile "$CLUSTER_DIR/pooler.pid" " pooler "; }

cluster_stop() {
    local i pid
    cluster_stop_pooler
    cluster_stop_pidfile "$CLUSTER_DIR/pgbouncer.pid" pgbouncer
    for ((i = 1; i <= NODES; i++)); do
        cluster_stop_pidfile "$CLUSTER_DIR/node$i.patroni.pid" patroni
        pid=$(cat "$CLUSTER_DIR/node$i.agent.pid" 2>/dev/null || true)
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then kill -TERM "$pid"; fi
    done
    for ((i = 1; i <= NODES; i++)); do
        pid=$(cat "$CLUSTER_DIR/node$i.agent.pid" 2>/dev/null || true)
        for _ in $(seq 1 100); do
            [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null || true
        # A postmaster whose agent was killed keeps running: stop it by its own PID.
        pid=$(cluster_postmaster_pid "$i")
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then kill -QUIT "$pid" 2>/dev/null || true; fi
    done
    [[ -d "$CLUSTER_DIR/etcd" ]] && etcd/local-etcd stop "$CLUSTER_DIR/etcd" >/dev/null 2>&1 || true
}
