#!/usr/bin/env bash
# The main job, on one machine: starts a real ClickHouse and a real Kafka broker
# (installing/fetching them if missing), migrates, runs every Venna role plus the simulated
# upstream in one process, sends completions for two workspaces through the gateway, and
# prints each workspace's usage and invoice as the REST API serves them.
#   REQUESTS=500 scripts/demo.sh        # more traffic
#   VENNA_KEEP_RUNNING=1 scripts/demo.sh  # leave everything up afterwards: the roles (gateway :8080,
#                                         # API :8081) and the services (stop all: scripts/services.sh stop)
#   VENNA_CLICKHOUSE_ENGINE=26.9 scripts/demo.sh  # on the ClickHouse 26.9 engine (the chdb
#                                                 # harness, over HTTPS) instead of 18.16
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
engine=${VENNA_CLICKHOUSE_ENGINE:-18.16}
# Each engine keeps its data in a state directory of its own.
default_state=/tmp/venna-stack
[ "$engine" = 18.16 ] || default_state=/tmp/venna-stack-$engine
export VENNA_STATE_DIR=${VENNA_STATE_DIR:-$default_state}
eval "$(scripts/services.sh start)"
export VENNA_CLICKHOUSE_DATABASE=${VENNA_CLICKHOUSE_DATABASE:-venna}
export VENNA_SPOOL_DIR=${VENNA_SPOOL_DIR:-$VENNA_STATE_DIR/spool}

mkdir -p bin
go build -o bin/venna ./cmd/venna
bin/venna migrate

bin/venna all --with-sim >"$VENNA_STATE_DIR/venna.log" 2>&1 &
pid=$!
# scripts/services.sh stop stops this process too.
echo "$pid" > "$VENNA_STATE_DIR/venna.pid"
cleanup() {
  if [ -n "${VENNA_KEEP_RUNNING:-}" ] && kill -0 "$pid" 2>/dev/null; then
    echo "left running: venna all (pid $pid; gateway http://127.0.0.1:8080, API http://127.0.0.1:8081), ClickHouse, Kafka, Redis"
    echo "stop everything with: VENNA_STATE_DIR=$VENNA_STATE_DIR scripts/services.sh stop"
    return
  fi
  kill -TERM "$pid" 2>/dev/null && wait "$pid" 2>/dev/null || true
  rm -f "$VENNA_STATE_DIR/venna.pid"
  scripts/services.sh stop
}
trap cleanup EXIT
for _ in $(seq 1 100); do
  (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && (exec 3<>/dev/tcp/127.0.0.1/8081) 2>/dev/null && break
  kill -0 "$pid" 2>/dev/null || { cat "$VENNA_STATE_DIR/venna.log" >&2; exit 1; }
  sleep 0.1
done
bin/venna demo --requests "${REQUESTS:-150}" 2> >(grep -v '"level":"INFO"' >&2)
echo
echo "logs of the roles: $VENNA_STATE_DIR/venna.log"
