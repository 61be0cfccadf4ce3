#!/bin/sh
# Entry point of the Baton image. `agent` (the default) checks the configuration with the agent's own
# loader, then runs the agent in the foreground (tini forwards SIGTERM, so a leader releases its key
# on `docker stop`). Anything else runs as a command: `baton list`, `baton-client-example …`, `psql …`.
set -eu
config=${BATON_CONFIG:-/etc/baton/agent.yml}
if [ "${1:-agent}" = agent ]; then
    shift || true
    baton check-config -c "$config" >/dev/null
    exec baton agent -c "$config" "$@"
fi
exec "$@"
