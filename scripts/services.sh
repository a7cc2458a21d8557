#!/usr/bin/env bash
# Installs (if missing) and starts/stops the real services Venna needs on one machine:
# a ClickHouse, a single-node Apache Kafka broker in KRaft mode and a Redis (what gateway
# replicas share budgets and rate limits through), each as a plain process with its config
# and data under $VENNA_STATE_DIR, on ports of ours; and for the tests, stripe-mock (Stripe's
# API stand-in, stateless: it validates requests and answers with fixtures).
#
#   scripts/services.sh start   # install + start all three, wait until they answer
#   scripts/services.sh stop    # stop them
#   scripts/services.sh env     # print the env vars that point Venna and the tests at them
#   scripts/services.sh kafka-stop | kafka-start | clickhouse-stop | clickhouse-start | redis-stop | redis-start
#   scripts/services.sh stripe-mock-start | stripe-mock-stop   # on VENNA_STRIPE_MOCK_PORT (12111)
#
# VENNA_CLICKHOUSE_ENGINE picks the ClickHouse:
#   18.16 (default)  Debian's clickhouse-server, native protocol on VENNA_CH_TCP_PORT, HTTP on
#                    VENNA_CH_HTTP_PORT, native TLS on VENNA_CH_TLS_PORT
#   26.9             the ClickHouse 26.9 engine of chdb-core (PyPI, in a venv under the cache)
#                    behind scripts/chdb_http.py, a test harness serving ClickHouse's HTTP
#                    interface: HTTP on VENNA_CH_HTTP_PORT, HTTPS on VENNA_CH_TLS_PORT. Its
#                    env points Venna at the HTTPS port, as a ClickHouse Cloud user connects.
# Both get TLS with a CA of their own, made with openssl into $VENNA_TLS_DIR (default
# $VENNA_STATE_DIR/tls): clients trust its ca.pem.
set -euo pipefail

LOG_TAG=services
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STATE=${VENNA_STATE_DIR:-/tmp/venna-stack}
CH_TCP_PORT=${VENNA_CH_TCP_PORT:-19000}
CH_HTTP_PORT=${VENNA_CH_HTTP_PORT:-18123}
CH_TLS_PORT=${VENNA_CH_TLS_PORT:-19440}
CH_ENGINE=${VENNA_CLICKHOUSE_ENGINE:-18.16}
TLS_DIR=${VENNA_TLS_DIR:-$STATE/tls}
CHDB_VERSION=26.9.0
CHDB_VENV="$CACHE/chdb-core-$CHDB_VERSION"
KAFKA_PORT=${VENNA_KAFKA_PORT:-19092}
KAFKA_CONTROLLER_PORT=${VENNA_KAFKA_CONTROLLER_PORT:-19093}
REDIS_PORT=${VENNA_REDIS_PORT:-16379}
STRIPE_MOCK_PORT=${VENNA_STRIPE_MOCK_PORT:-12111}
STRIPE_MOCK_VERSION=0.203.0
STRIPE_MOCK_BIN="$CACHE/stripe-mock-$STRIPE_MOCK_VERSION/stripe-mock"

install_chdb() {
  [ -f "$CHDB_VENV/.complete" ] && return 0
  log "installing chdb-core $CHDB_VERSION (ClickHouse 26.9 engine) from PyPI into $CHDB_VENV"
  rm -rf "$CHDB_VENV"
  python3 -m venv "$CHDB_VENV"
  # chdb needs none of its optional dependencies (pandas, pyarrow) for what the harness does.
  "$CHDB_VENV/bin/pip" install -q --disable-pip-version-check --no-deps "chdb-core==$CHDB_VERSION" >&2
  touch "$CHDB_VENV/.complete"
}

# make_tls writes a CA and a server certificate for 127.0.0.1 and localhost signed by it,
# once per state directory: the servers' TLS ports use them, clients trust ca.pem.
make_tls() {
  local dir="$TLS_DIR"
  [ -f "$dir/server.pem" ] && return 0
  mkdir -p "$dir"
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Venna test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' > "$dir/san.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 3650 -extfile "$dir/san.ext" -out "$dir/server.pem" >/dev/null 2>&1
  chmod 644 "$dir/server.key"
}

clickhouse_start() {
  make_tls
  case "$CH_ENGINE" in
    18.16) clickhouse_server_start ;;
    26.9) chdb_start ;;
    *) log "VENNA_CLICKHOUSE_ENGINE=$CH_ENGINE: use 18.16 or 26.9"; return 2 ;;
  esac
}

chdb_start() {
  install_chdb
  local dir="$STATE/clickhouse"
  if pid_alive "$dir/pid" && port_open "$CH_TLS_PORT"; then return 0; fi
  mkdir -p "$dir/log"
  log "starting ClickHouse $CHDB_VERSION engine (chdb-core, test harness) on 127.0.0.1:$CH_HTTP_PORT (HTTP) and :$CH_TLS_PORT (HTTPS)"
  "$CHDB_VENV/bin/python" "$ROOT/scripts/chdb_http.py" --path "$dir/data" --port "$CH_HTTP_PORT" \
    --tls-port "$CH_TLS_PORT" --tls-cert "$TLS_DIR/server.pem" --tls-key "$TLS_DIR/server.key" \
    --users-xml "$ROOT/deploy/clickhouse/users.xml" >"$dir/log/stdout.log" 2>&1 &
  echo $! > "$dir/pid"
  disown # a node killed on purpose is not this shell's news ("Killed" at its exit)
  wait_for clickhouse 60 port_open "$CH_TLS_PORT" || { cat "$dir/log/stdout.log" >&2; return 1; }
}

clickhouse_server_start() {
  install_clickhouse
  local dir="$STATE/clickhouse"
  if pid_alive "$dir/pid" && port_open "$CH_TCP_PORT"; then return 0; fi
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log"
  cat > "$dir/config.xml" <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>$CH_TCP_PORT</tcp_port>
  <http_port>$CH_HTTP_PORT</http_port>
  <tcp_port_secure>$CH_TLS_PORT</tcp_port_secure>
  <openSSL>
    <server>
      <certificateFile>$TLS_DIR/server.pem</certificateFile>
      <privateKeyFile>$TLS_DIR/server.key</privateKeyFile>
      <verificationMode>none</verificationMode>
      <loadDefaultCAFile>false</loadDefaultCAFile>
      <cacheSessions>true</cacheSessions>
      <disableProtocols>sslv2,sslv3,tlsv1,tlsv1_1</disableProtocols>
      <preferServerCiphers>true</preferServerCiphers>
    </server>
  </openSSL>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <timezone>UTC</timezone>
  <mark_cache_size>268435456</mark_cache_size>
  <max_concurrent_queries>200</max_concurrent_queries>
  <users_config>$ROOT/deploy/clickhouse/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <!-- A one-shard, one-replica cluster of this server alone, and the macros a Replicated
       table names, for the schema's cluster mode tests (schema/cluster_test.go). -->
  <remote_servers>
    <venna_test_cluster><shard><replica><host>127.0.0.1</host><port>$CH_TCP_PORT</port></replica></shard></venna_test_cluster>
  </remote_servers>
  <macros><shard>1</shard><replica>127.0.0.1:$CH_TCP_PORT</replica></macros>
</yandex>
XML
  log "starting ClickHouse $(clickhouse-client --version 2>/dev/null | awk '{print $NF}') on 127.0.0.1:$CH_TCP_PORT"
  clickhouse-server --config-file="$dir/config.xml" >"$dir/log/stdout.log" 2>&1 &
  echo $! > "$dir/pid"
  disown # a node killed on purpose is not this shell's news ("Killed" at its exit)
  wait_for clickhouse 60 clickhouse-client --port "$CH_TCP_PORT" --query "SELECT 1"
}

clickhouse_stop() { stop_pid "$STATE/clickhouse/pid" "${1:-TERM}"; }

kafka_start() {
  fetch_kafka
  local dir="$STATE/kafka"
  if pid_alive "$dir/pid" && port_open "$KAFKA_PORT"; then return 0; fi
  mkdir -p "$dir/data"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
PROPS
  kafka_format "$dir" "$(kafka_cluster_id)"
  log "starting Apache Kafka $KAFKA_VERSION (KRaft) on 127.0.0.1:$KAFKA_PORT"
  kafka_run "$dir" 1g
  wait_for kafka 90 port_open "$KAFKA_PORT"
}

kafka_stop() { stop_pid "$STATE/kafka/pid" "${1:-TERM}"; }

# print_env prints what points Venna and the tests at these services. The tests also
# read VENNA_CLICKHOUSE_ENGINE (what a test that needs a server feature the harness lacks
# skips on) and VENNA_TEST_CLICKHOUSE_* (the other endpoints of the same server).
install_redis() {
  command -v redis-server >/dev/null && return 0
  log "installing redis-server from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq redis-server >/dev/null
}

redis_start() {
  install_redis
  local dir="$STATE/redis"
  if pid_alive "$dir/pid" && port_open "$REDIS_PORT"; then return 0; fi
  mkdir -p "$dir"
  log "starting Redis $(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p') on 127.0.0.1:$REDIS_PORT"
  # Spend counters are rebuilt from ClickHouse when lost: no persistence needed.
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" --save "" --appendonly no \
    --daemonize no --protected-mode yes >"$dir/redis.log" 2>&1 &
  echo $! > "$dir/pid"
  disown # a node killed on purpose is not this shell's news ("Killed" at its exit)
  wait_for redis 20 redis-cli -p "$REDIS_PORT" ping
}

redis_stop() { stop_pid "$STATE/redis/pid" "${1:-TERM}"; }

# stripe-mock is built from source with the Go toolchain (the Go module proxy), once, into
# the cache.
install_stripe_mock() {
  [ -x "$STRIPE_MOCK_BIN" ] && return 0
  log "building stripe-mock $STRIPE_MOCK_VERSION into $(dirname "$STRIPE_MOCK_BIN")"
  GOBIN=$(dirname "$STRIPE_MOCK_BIN") go install "github.com/stripe/stripe-mock@v$STRIPE_MOCK_VERSION" >&2
}

stripe_mock_start() {
  install_stripe_mock
  local dir="$STATE/stripe-mock"
  if pid_alive "$dir/pid" && port_open "$STRIPE_MOCK_PORT"; then return 0; fi
  mkdir -p "$dir"
  log "starting stripe-mock $STRIPE_MOCK_VERSION on 127.0.0.1:$STRIPE_MOCK_PORT"
  # Its HTTPS listener (unused) on the next port: by default it takes 12112, which a second
  # stripe-mock on the machine (another test run) would hold.
  "$STRIPE_MOCK_BIN" -http-addr "127.0.0.1:$STRIPE_MOCK_PORT" -https-addr "127.0.0.1:$((STRIPE_MOCK_PORT + 1))" \
    >"$dir/stripe-mock.log" 2>&1 &
  echo $! > "$dir/pid"
  disown # a node killed on purpose is not this shell's news ("Killed" at its exit)
  wait_for stripe-mock 30 port_open "$STRIPE_MOCK_PORT" || { cat "$dir/stripe-mock.log" >&2; return 1; }
}

stripe_mock_stop() { stop_pid "$STATE/stripe-mock/pid" "${1:-TERM}"; }

print_env() {
  case "$CH_ENGINE" in
    26.9) cat <<ENV
export VENNA_CLICKHOUSE_ENGINE=26.9
export VENNA_CLICKHOUSE_ADDR=127.0.0.1:$CH_TLS_PORT
export VENNA_CLICKHOUSE_PROTOCOL=http
export VENNA_CLICKHOUSE_SECURE=true
export VENNA_CLICKHOUSE_CA_FILE=$TLS_DIR/ca.pem
export VENNA_TEST_CLICKHOUSE_PLAIN=http://127.0.0.1:$CH_HTTP_PORT
export VENNA_CH_HTTP_PORT=$CH_HTTP_PORT
ENV
      ;;
    *) cat <<ENV
export VENNA_CLICKHOUSE_ENGINE=18.16
export VENNA_CLICKHOUSE_ADDR=127.0.0.1:$CH_TCP_PORT
export VENNA_CLICKHOUSE_PROTOCOL=native
export VENNA_CLICKHOUSE_SECURE=false
export VENNA_CLICKHOUSE_CA_FILE=
export VENNA_TEST_CLICKHOUSE_TLS=clickhouses://127.0.0.1:$CH_TLS_PORT?ca_file=$TLS_DIR/ca.pem
export VENNA_CH_HTTP_PORT=$CH_HTTP_PORT
ENV
      ;;
  esac
  echo "export VENNA_KAFKA_BROKERS=127.0.0.1:$KAFKA_PORT"
  echo "export VENNA_REDIS_ADDR=127.0.0.1:$REDIS_PORT"
  echo "export VENNA_STRIPE_MOCK_URL=http://127.0.0.1:$STRIPE_MOCK_PORT"
}

case "${1:-}" in
  start) clickhouse_start; kafka_start; redis_start; print_env ;;
  stop) stop_pid "$STATE/venna.pid"; stripe_mock_stop; redis_stop; kafka_stop; clickhouse_stop ;;
  env) print_env ;;
  clickhouse-start) clickhouse_start ;;
  clickhouse-stop) clickhouse_stop "${2:-TERM}" ;;
  kafka-start) kafka_start ;;
  kafka-stop) kafka_stop "${2:-TERM}" ;;
  redis-start) redis_start ;;
  redis-stop) redis_stop "${2:-TERM}" ;;
  stripe-mock-start) stripe_mock_start ;;
  stripe-mock-stop) stripe_mock_stop "${2:-TERM}" ;;
  fetch) fetch_kafka; install_clickhouse; install_chdb; install_redis; install_stripe_mock ;;
  kafka-cluster-id) for _ in $(seq "${2:-1}"); do kafka_cluster_id; done ;;
  *) echo "usage: $0 start|stop|env|fetch|kafka-start|kafka-stop [SIG]|clickhouse-start|clickhouse-stop [SIG]|redis-start|redis-stop [SIG]|stripe-mock-start|stripe-mock-stop [SIG]|kafka-cluster-id [N]" >&2; exit 2 ;;
esac
