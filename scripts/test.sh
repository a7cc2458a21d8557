#!/usr/bin/env bash
# Runs the whole test suite against real ClickHouse and a real Kafka broker, once per
# ClickHouse version the project supports:
#   18.16  Debian's clickhouse-server, over the native protocol
#   26.9   the ClickHouse 26.9 engine (chdb-core) behind the scripts/chdb_http.py harness,
#          over HTTPS, as ClickHouse Cloud is reached
# It installs and starts one Kafka broker, a Redis, stripe-mock (Stripe's API stand-in, at
# VENNA_STRIPE_MOCK_URL) and both ClickHouses once (scripts/services.sh),
# runs `go test` against each in turn (each test in its own database and topic; tests
# that compare the versions statement by statement reach the other one through
# VENNA_TEST_CLICKHOUSE_COMPARE), and stops them.
#
#   scripts/test.sh                          # both versions, then the API contract check
#                                            # (scripts/contract.sh: Schemathesis over api/openapi.json)
#                                            # and the cluster tests (scripts/cluster.sh test)
#   scripts/test.sh --engine 26.9            # one version (VENNA_TEST_ENGINES="26.9" too)
#   scripts/test.sh -run TestEndToEnd ./e2e/ # extra arguments go to `go test`
#
# Ports are VENNA_TEST_PORT_BASE (29000) and above, state in VENNA_TEST_STATE_DIR
# (/tmp/venna-test-stack): two runs side by side need both set apart.
# With VENNA_CLICKHOUSE_ADDR and VENNA_KAFKA_BROKERS already set it starts nothing and
# runs the suite once against those servers (VENNA_CLICKHOUSE_PROTOCOL, _SECURE,
# _CA_FILE, _USER, _PASSWORD say how to reach ClickHouse).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

engines=${VENNA_TEST_ENGINES:-"18.16 26.9"}
args=()
whole=1 # no arguments: the whole suite, and the contract check after it
[ $# -eq 0 ] || whole=0
while [ $# -gt 0 ]; do
  case "$1" in
    --engine) engines=$2; shift 2 ;;
    --engine=*) engines=${1#--engine=}; shift ;;
    *) args+=("$1"); shift ;;
  esac
done
pkgs=()
for a in ${args[@]+"${args[@]}"}; do case "$a" in ./*) pkgs+=("$a") ;; esac; done
[ ${#pkgs[@]} -gt 0 ] || args+=(./...)

gotest() { go test -count=1 -timeout 25m "${args[@]}"; }

if [ -n "${VENNA_CLICKHOUSE_ADDR:-}" ] && [ -n "${VENNA_KAFKA_BROKERS:-}" ]; then
  gotest
  exit
fi

BASE=${VENNA_TEST_STATE_DIR:-/tmp/venna-test-stack}
P=${VENNA_TEST_PORT_BASE:-29000}
services() { # services ENGINE-or-kafka COMMAND: scripts/services.sh with that part's state and ports
  local part=$1; shift
  case "$part" in
    kafka) VENNA_STATE_DIR=$BASE/kafka scripts/services.sh "$@" ;;
    redis) VENNA_STATE_DIR=$BASE/redis scripts/services.sh "$@" ;;
    stripe) VENNA_STATE_DIR=$BASE/stripe scripts/services.sh "$@" ;;
    18.16) VENNA_STATE_DIR=$BASE/ch-18.16 VENNA_CLICKHOUSE_ENGINE=18.16 VENNA_CH_TCP_PORT=$P \
             VENNA_CH_HTTP_PORT=$((P + 123)) VENNA_CH_TLS_PORT=$((P + 440)) scripts/services.sh "$@" ;;
    26.9) VENNA_STATE_DIR=$BASE/ch-26.9 VENNA_CLICKHOUSE_ENGINE=26.9 VENNA_CH_HTTP_PORT=$((P + 124)) \
             VENNA_CH_TLS_PORT=$((P + 443)) scripts/services.sh "$@" ;;
  esac
}
export VENNA_KAFKA_PORT=$((P + 92)) VENNA_KAFKA_CONTROLLER_PORT=$((P + 93)) VENNA_REDIS_PORT=$((P + 379))
export VENNA_STRIPE_MOCK_PORT=$((P + 512)) VENNA_STRIPE_MOCK_URL=http://127.0.0.1:$((P + 512))
# One CA for every server the suite starts, its fault tests' private ones included.
export VENNA_TLS_DIR=$BASE/tls

# The cluster tests' nodes: their own state directory and ports (P+2000 and above).
export VENNA_CLUSTER_STATE_DIR=$BASE/cluster VENNA_CLUSTER_PORT_BASE=$((P + 2000))
stop_all() {
  services stripe stripe-mock-stop; services redis redis-stop; services kafka kafka-stop; services 18.16 clickhouse-stop; services 26.9 clickhouse-stop
  [ ! -d "$VENNA_CLUSTER_STATE_DIR" ] || scripts/cluster.sh stop
}
stop_all >/dev/null 2>&1 || true
rm -rf "$BASE"
trap 'stop_all; rm -rf "$BASE"' EXIT
services kafka kafka-start
services redis redis-start
services stripe stripe-mock-start
services 18.16 clickhouse-start
services 26.9 clickhouse-start

# How the comparison tests reach the other version (a URL: clickhouse:// native, https://).
compare_url() {
  case "$1" in
    18.16) echo "clickhouse://127.0.0.1:$P" ;;
    26.9) echo "https://127.0.0.1:$((P + 443))?ca_file=$VENNA_TLS_DIR/ca.pem" ;;
  esac
}

# Fault tests stop and restart private servers of their own through this script, of the
# engine the run is on (VENNA_CLICKHOUSE_ENGINE).
export VENNA_SERVICES_SCRIPT="$ROOT/scripts/services.sh"
failed=()
for engine in $engines; do
  other=18.16
  [ "$engine" = 18.16 ] && other=26.9
  echo "=== go test on ClickHouse $engine (compared with $other)"
  set +e
  (
    eval "$(services "$engine" env)"
    export VENNA_TEST_CLICKHOUSE_COMPARE
    VENNA_TEST_CLICKHOUSE_COMPARE=$(compare_url "$other")
    gotest
  )
  rc=$?
  set -e
  [ $rc -eq 0 ] || failed+=("$engine")
done
if [ $whole -eq 1 ] && [ "${VENNA_TEST_CONTRACT:-1}" != 0 ]; then
  echo "=== API contract (Schemathesis) on ClickHouse $(echo $engines | cut -d' ' -f1)"
  if ! ( eval "$(services "$(echo $engines | cut -d' ' -f1)" env)"; scripts/contract.sh ); then
    failed+=("contract")
  fi
fi
if [ $whole -eq 1 ] && [ "${VENNA_TEST_CLUSTER:-1}" != 0 ]; then
  echo "=== cluster tests (scripts/cluster.sh test: ZooKeeper, ClickHouse 2 shards x 2 replicas, three Kafka brokers)"
  stop_all >/dev/null 2>&1 # the single servers are done: the cluster gets the machine
  if ! scripts/cluster.sh test; then
    failed+=("cluster")
  fi
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "=== FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "=== passed on ClickHouse $engines"
