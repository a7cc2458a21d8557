#!/usr/bin/env bash
# Runs the whole test suite against a real ClickHouse server and a real Kafka broker.
# Unless VENNA_CLICKHOUSE_ADDR and VENNA_KAFKA_BROKERS already point at servers, it installs
# and starts both once (scripts/services.sh) on test ports, runs `go test`, and stops them.
# Extra arguments go to `go test` (e.g. scripts/test.sh -run TestEndToEnd ./e2e/).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [ -z "${VENNA_CLICKHOUSE_ADDR:-}" ] || [ -z "${VENNA_KAFKA_BROKERS:-}" ]; then
  export VENNA_STATE_DIR=${VENNA_TEST_STATE_DIR:-/tmp/venna-test-stack}
  export VENNA_CH_TCP_PORT=${VENNA_CH_TCP_PORT:-29000} VENNA_CH_HTTP_PORT=${VENNA_CH_HTTP_PORT:-28123}
  export VENNA_KAFKA_PORT=${VENNA_KAFKA_PORT:-29092} VENNA_KAFKA_CONTROLLER_PORT=${VENNA_KAFKA_CONTROLLER_PORT:-29093}
  scripts/services.sh stop >/dev/null 2>&1 || true
  rm -rf "$VENNA_STATE_DIR"
  eval "$(scripts/services.sh start)"
  trap 'scripts/services.sh stop; rm -rf "$VENNA_STATE_DIR"' EXIT
  # Fault tests stop and restart the broker and the server through this script.
  export VENNA_SERVICES_SCRIPT="$ROOT/scripts/services.sh"
fi

pkgs=()
for a in "$@"; do case "$a" in ./*) pkgs+=("$a") ;; esac; done
[ ${#pkgs[@]} -gt 0 ] || set -- "$@" ./...
go test -count=1 -timeout 25m "$@"
