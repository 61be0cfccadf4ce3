#!/bin/sh
# Entry point of the Baton image. `agent` (the default) checks the configuration with the agent's own
# loader, then runs the agent in the foreground (tini forwards SIGTERM, so a leader releases its key
# on `docker stop`). `pgbouncer` writes PgBouncer's users file (0600, the superuser's password from
# BATON_SUPERUSER_PASSWORD, quotes doubled) and an empty include file if there is none yet, then
# runs PgBouncer with /etc/baton/pgbouncer.ini. Anything else runs as a command: `baton list`,
# `baton pooler …`, `baton-client-example …`, `psql …`.
set -eu
config=${BATON_CONFIG:-/etc/baton/agent.yml}
if [ "${1:-agent}" = agent ]; then
    shift || true
    baton check-config -c "$config" >/dev/null
    exec baton agent -c "$config" "$@"
fi
if [ "${1:-}" = pgbouncer ]; then
    [ -e /var/lib/baton-pooler/baton.ini ] || echo "[databases]" >/var/lib/baton-pooler/baton.ini
    password=$(printf '%s' "${BATON_SUPERUSER_PASSWORD:?set BATON_SUPERUSER_PASSWORD}" | sed 's/"/""/g')
    (umask 077 && printf '"postgres" "%s"\n' "$password" >/var/lib/baton-pgbouncer/userlist.txt)
    exec pgbouncer /etc/baton/pgbouncer.ini
fi
exec "$@"
