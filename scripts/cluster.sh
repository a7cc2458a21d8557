#!/usr/bin/env bash
# Starts, on one machine, the clusters Venna scales out on, each node a plain process with
# its own ports, config and data under $VENNA_CLUSTER_STATE_DIR:
#   - Apache ZooKeeper, one node (ReplicatedMergeTree and ON CLUSTER need a Keeper);
#   - ClickHouse 18.16, 2 shards x 2 replicas: ch-1-1 ch-1-2 ch-2-1 ch-2-2, cluster "venna"
#     (remote_servers with internal_replication, {shard}/{replica} macros, distributed_ddl,
#     the users.d of deploy/clickhouse/cluster/);
#   - Apache Kafka, three KRaft brokers (each broker and controller): kafka-1 kafka-2 kafka-3,
#     replication factor 3 and min.insync.replicas 2 by default.
#
#   scripts/cluster.sh start          # fetch/install what is missing, start every node, wait
#   scripts/cluster.sh stop           # stop every node (and Venna roles started by `up`)
#   scripts/cluster.sh env            # the env that points Venna and the cluster tests at it
#   scripts/cluster.sh kill NODE      # kill -9 one node (zookeeper, ch-S-R, kafka-N)
#   scripts/cluster.sh stop-node NODE # stop one node gracefully
#   scripts/cluster.sh restart NODE   # start a stopped or killed node again, wait for it
#   scripts/cluster.sh up             # start + venna migrate on the cluster + two gateways, two
#                                     # ingest members, two aggregate roles and the API
#   scripts/cluster.sh demo           # up, then the demo's traffic through each gateway and
#                                     # the usage and invoices it made
#   scripts/cluster.sh test [ARGS]    # start + the cluster tests (go test -run ^TestCluster ./e2e ARGS)
#   scripts/cluster.sh bench [ARGS]   # start + a single-node stack beside it + BenchmarkClusterIngest
#   scripts/cluster.sh config NODE    # print a ClickHouse node's generated config
#
# Ports from VENNA_CLUSTER_PORT_BASE (B, default 24000, below the ephemeral ports 32768+): ZooKeeper B+181; ch-S-R native
# B+10*i, HTTP B+10*i+1, interserver B+10*i+2 with i = 2*(S-1)+R; kafka-N B+100+10*N,
# its controller listener one above.
set -euo pipefail

LOG_TAG=cluster
# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
STATE=${VENNA_CLUSTER_STATE_DIR:-/tmp/venna-cluster}
B=${VENNA_CLUSTER_PORT_BASE:-24000}
ZK_PORT=$((B + 181))
CH_NODES="ch-1-1 ch-1-2 ch-2-1 ch-2-2"
KAFKA_NODES="kafka-1 kafka-2 kafka-3"
CLUSTER=venna

ch_index() { # ch-S-R -> 2*(S-1)+R
  local s r; IFS=- read -r _ s r <<<"$1"
  echo $((2 * (s - 1) + r))
}
ch_tcp() { echo $((B + 10 * $(ch_index "$1"))); }
kafka_port() { echo $((B + 100 + 10 * ${1#kafka-})); }

# --- ZooKeeper -----------------------------------------------------------------------------

zk_start() {
  fetch_zookeeper
  local dir="$STATE/zookeeper"
  if pid_alive "$dir/pid" && port_open "$ZK_PORT"; then return 0; fi
  mkdir -p "$dir/data"
  cat > "$dir/zoo.cfg" <<CFG
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$dir/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat
CFG
  log "starting Apache ZooKeeper $ZK_VERSION on 127.0.0.1:$ZK_PORT"
  java -Xms64m -Xmx256m -cp "$ZK_JARS/*" org.apache.zookeeper.server.ZooKeeperServerMain "$dir/zoo.cfg" \
    >>"$dir/server.log" 2>&1 &
  echo $! > "$dir/pid"
  disown # a node killed on purpose is not this shell's news ("Killed" at its exit)
  wait_for zookeeper 60 zk_ok
}

# zk_ok asks ZooKeeper "srvr" and wants a Mode line: "ruok" answers imok while a restarted
# server still loads its snapshot and refuses sessions ("not currently serving requests"),
# and a ClickHouse started then gives up on its Replicated tables. A server still starting
# may take the connection and never answer, hence the timeout.
zk_ok() {
  timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$ZK_PORT; printf srvr >&3; cat <&3" 2>/dev/null | grep -q '^Mode: '
}

# --- ClickHouse ----------------------------------------------------------------------------

ch_config() { # ch_config NODE: the server config of one node
  local node=$1 dir="$STATE/$1" s r; IFS=- read -r _ s r <<<"$1"
  local tcp; tcp=$(ch_tcp "$node")
  local shards="" sh rep
  for sh in 1 2; do
    shards+="      <shard><internal_replication>true</internal_replication>"
    for rep in 1 2; do
      shards+="<replica><host>127.0.0.1</host><port>$(ch_tcp "ch-$sh-$rep")</port></replica>"
    done
    shards+="</shard>"$'\n'
  done
  cat <<XML
<?xml version="1.0"?>
<yandex>
  <logger><level>warning</level><log>$dir/log/server.log</log><errorlog>$dir/log/error.log</errorlog><console>0</console></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>$tcp</tcp_port>
  <http_port>$((tcp + 1))</http_port>
  <interserver_http_port>$((tcp + 2))</interserver_http_port>
  <interserver_http_host>127.0.0.1</interserver_http_host>
  <path>$dir/data/</path>
  <tmp_path>$dir/tmp/</tmp_path>
  <user_files_path>$dir/user_files/</user_files_path>
  <format_schema_path>$dir/format_schemas/</format_schema_path>
  <timezone>UTC</timezone>
  <mark_cache_size>134217728</mark_cache_size>
  <max_concurrent_queries>200</max_concurrent_queries>
  <users_config>$dir/users.xml</users_config>
  <default_profile>default</default_profile>
  <default_database>default</default_database>
  <!-- As deploy/clickhouse/cluster/config.d/venna-cluster.xml, on this machine's ports. -->
  <remote_servers>
    <$CLUSTER>
$shards    </$CLUSTER>
  </remote_servers>
  <macros><shard>$s</shard><replica>$node</replica></macros>
  <zookeeper><node><host>127.0.0.1</host><port>$ZK_PORT</port></node><session_timeout_ms>30000</session_timeout_ms></zookeeper>
  <distributed_ddl><path>/clickhouse/task_queue/ddl</path></distributed_ddl>
</yandex>
XML
}

ch_start() {
  install_clickhouse
  local node=$1 dir="$STATE/$1" tcp; tcp=$(ch_tcp "$1")
  if pid_alive "$dir/pid" && port_open "$tcp"; then return 0; fi
  mkdir -p "$dir/data" "$dir/tmp" "$dir/user_files" "$dir/format_schemas" "$dir/log" "$dir/users.d"
  ch_config "$node" > "$dir/config.xml"
  cp "$ROOT/deploy/clickhouse/users.xml" "$dir/users.xml"
  # The deploy drop-in, for 18.16: root renamed (it merges only files whose root is
  # <yandex>) and without optimize_skip_unused_shards, a setting it does not know yet.
  sed -e 's:<\(/\?\)clickhouse>:<\1yandex>:' -e '/optimize_skip_unused_shards>/d' \
    "$ROOT/deploy/clickhouse/cluster/users.d/venna-cluster.xml" > "$dir/users.d/venna-cluster.xml"
  log "starting ClickHouse $node on 127.0.0.1:$tcp"
  clickhouse-server --config-file="$dir/config.xml" >>"$dir/log/stdout.log" 2>&1 &
  echo $! > "$dir/pid"
  disown # a node killed on purpose is not this shell's news ("Killed" at its exit)
}

ch_wait() { # until the server answers; at once when its process is gone
  local _
  for _ in $(seq 1 450); do
    clickhouse-client --port "$(ch_tcp "$1")" --query "SELECT 1" >/dev/null 2>&1 && return 0
    pid_alive "$STATE/$1/pid" || break
    sleep 0.2
  done
  log "ClickHouse $1 did not come up:"; tail -n 5 "$STATE/$1/log/error.log" >&2; return 1
}

# ch_restore is the operator's step when a server killed mid-write will not start because a
# sharded Replicated table has more rows in parts Keeper does not know than
# replicated_max_ratio_of_wrong_parts allows (deploy/README.md, "After a crash"): the
# force_restore_data flag makes it detach those parts and fetch from its peers, once.
ch_restore() {
  grep -q "look like the set of parts in ZooKeeper" "$STATE/$1/log/error.log" 2>/dev/null || return 1
  log "$1 refused its local parts after the crash; starting it once with flags/force_restore_data"
  mkdir -p "$STATE/$1/data/flags"
  touch "$STATE/$1/data/flags/force_restore_data"
  : > "$STATE/$1/log/error.log"
  ch_start "$1"
  ch_wait "$1"
}

# --- Kafka ---------------------------------------------------------------------------------

kafka_config() {
  local node=$1 id=${1#kafka-} dir="$STATE/$1" port; port=$(kafka_port "$1")
  local voters="" n
  for n in 1 2 3; do voters+="${voters:+,}$n@127.0.0.1:$(( $(kafka_port "kafka-$n") + 1 ))"; done
  cat <<PROPS
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$((port + 1))
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
num.partitions=6
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
log.retention.hours=168
PROPS
}

kafka_node_start() {
  fetch_kafka
  local node=$1 dir="$STATE/$1"
  if pid_alive "$dir/pid" && port_open "$(kafka_port "$node")"; then return 0; fi
  mkdir -p "$dir/data"
  kafka_config "$node" > "$dir/server.properties"
  [ -f "$STATE/kafka-cluster-id" ] || kafka_cluster_id > "$STATE/kafka-cluster-id"
  kafka_format "$dir" "$(cat "$STATE/kafka-cluster-id")"
  log "starting Apache Kafka $KAFKA_VERSION $node on 127.0.0.1:$(kafka_port "$node")"
  kafka_run "$dir" 512m
}

kafka_wait() { wait_for "$1" 90 port_open "$(kafka_port "$1")"; }

# --- the whole cluster ---------------------------------------------------------------------

start_all() {
  mkdir -p "$STATE"
  zk_start
  local n
  for n in $CH_NODES; do ch_start "$n"; done
  for n in $KAFKA_NODES; do kafka_node_start "$n"; done
  for n in $CH_NODES; do ch_wait "$n"; done
  for n in $KAFKA_NODES; do kafka_wait "$n"; done
  # Every server sees the ZooKeeper and the whole cluster.
  wait_for "ClickHouse cluster" 60 clickhouse-client --port "$(ch_tcp ch-1-1)" --query \
    "SELECT throwIf(count() != 4) FROM system.clusters WHERE cluster = '$CLUSTER'"
  wait_for "ClickHouse ZooKeeper" 60 clickhouse-client --port "$(ch_tcp ch-2-2)" --query \
    "SELECT count() FROM system.zookeeper WHERE path = '/'"
}

node_pidfile() {
  case "$1" in
    zookeeper|ch-[12]-[12]|kafka-[123]) echo "$STATE/$1/pid" ;;
    *) log "unknown node $1: zookeeper, ch-1-1 ch-1-2 ch-2-1 ch-2-2, kafka-1 kafka-2 kafka-3"; exit 2 ;;
  esac
}

node_start() {
  case "$1" in
    zookeeper) zk_start ;;
    ch-*) ch_start "$1"; ch_wait "$1" || ch_restore "$1" ;;
    kafka-*) kafka_node_start "$1"; kafka_wait "$1" ;;
  esac
}

ch_addrs() { local n a=""; for n in $CH_NODES; do a+="${a:+,}127.0.0.1:$(ch_tcp "$n")"; done; echo "$a"; }
kafka_addrs() { local n a=""; for n in $KAFKA_NODES; do a+="${a:+,}127.0.0.1:$(kafka_port "$n")"; done; echo "$a"; }

print_env() {
  cat <<ENV
export VENNA_CLICKHOUSE_ENGINE=18.16
export VENNA_CLICKHOUSE_ADDR=$(ch_addrs)
export VENNA_CLICKHOUSE_PROTOCOL=native
export VENNA_CLICKHOUSE_CLUSTER=$CLUSTER
export VENNA_KAFKA_BROKERS=$(kafka_addrs)
export VENNA_KAFKA_REPLICATION=3
export VENNA_KAFKA_MIN_INSYNC_REPLICAS=2
export VENNA_CLUSTER_SCRIPT=$ROOT/scripts/cluster.sh
export VENNA_CLUSTER_STATE_DIR=$STATE
export VENNA_CLUSTER_PORT_BASE=$B
ENV
  local n
  for n in $CH_NODES; do echo "export VENNA_CLUSTER_$(echo "${n//-/_}" | tr a-z A-Z)=127.0.0.1:$(ch_tcp "$n")"; done
  for n in $KAFKA_NODES; do echo "export VENNA_CLUSTER_$(echo "${n//-/_}" | tr a-z A-Z)=127.0.0.1:$(kafka_port "$n")"; done
}

stop_all() {
  local f
  for f in "$STATE"/venna-*.pid; do [ -e "$f" ] && stop_pid "$f"; done
  local n
  for n in $KAFKA_NODES; do stop_pid "$STATE/$n/pid" & done
  wait
  for n in $CH_NODES; do stop_pid "$STATE/$n/pid" & done
  wait
  stop_pid "$STATE/zookeeper/pid"
  [ ! -d "$STATE/single" ] || single_services stop
}

# single_services runs scripts/services.sh for the benchmark's single-node stack (one
# ClickHouse 18.16, one broker) beside the cluster, on ports B+600..B+605.
single_services() {
  VENNA_STATE_DIR="$STATE/single" VENNA_CLICKHOUSE_ENGINE=18.16 VENNA_CH_TCP_PORT=$((B + 600)) \
    VENNA_CH_HTTP_PORT=$((B + 601)) VENNA_CH_TLS_PORT=$((B + 602)) VENNA_KAFKA_PORT=$((B + 603)) \
    VENNA_KAFKA_CONTROLLER_PORT=$((B + 604)) VENNA_REDIS_PORT=$((B + 605)) "$ROOT/scripts/services.sh" "$@"
}

# up: the Venna roles on the cluster, two of each that scales (see deploy/README.md).
up() {
  start_all
  eval "$(print_env)"
  local bin="$STATE/bin/venna"
  mkdir -p "$STATE/bin" "$STATE/venna"
  (cd "$ROOT" && go build -o "$bin" ./cmd/venna)
  export VENNA_CLICKHOUSE_DATABASE=${VENNA_CLICKHOUSE_DATABASE:-venna}
  "$bin" migrate
  local p=$((B + 500)) i
  export VENNA_SIM_ADDR=127.0.0.1:$((p + 40))
  sed "s|http://127.0.0.1:18090/v1|http://$VENNA_SIM_ADDR/v1|" "$ROOT/deploy/routes.yaml" > "$STATE/routes.yaml"
  export VENNA_ROUTES_FILE="$STATE/routes.yaml" VENNA_PRICES_FILE="$ROOT/deploy/prices.yaml"
  run_role sim sim-upstream
  for i in 1 2; do
    VENNA_GATEWAY_ADDR=127.0.0.1:$((p + i)) VENNA_SPOOL_DIR="$STATE/venna/spool-$i" \
      run_role "gateway-$i" gateway
    VENNA_INGEST_METRICS_ADDR=127.0.0.1:$((p + 10 + i)) run_role "ingest-$i" ingest
    VENNA_AGGREGATE_METRICS_ADDR=127.0.0.1:$((p + 20 + i)) run_role "aggregate-$i" aggregate
  done
  VENNA_API_ADDR=127.0.0.1:$((p + 30)) run_role api api
  wait_for "the API" 60 port_open $((p + 30))
  for i in 1 2; do wait_for "gateway-$i" 60 port_open $((p + i)); done
  log "gateways http://127.0.0.1:$((p + 1)) http://127.0.0.1:$((p + 2)), API http://127.0.0.1:$((p + 30)); logs in $STATE/venna"
}

# demo: up, then the demo's traffic through both gateways, and each workspace's usage and
# invoice read back from the API.
demo() {
  up
  local p=$((B + 500)) i
  for i in 1 2; do
    "$STATE/bin/venna" demo --requests "${REQUESTS:-150}" --gateway-url "http://127.0.0.1:$((p + i))" \
      --api-url "http://127.0.0.1:$((p + 30))" 2> >(grep -v '"level":"INFO"' >&2)
  done
}

run_role() { # run_role NAME ROLE
  local pidf="$STATE/venna-$1.pid"
  pid_alive "$pidf" && return 0
  "$STATE/bin/venna" "$2" >"$STATE/venna/$1.log" 2>&1 &
  echo $! > "$pidf"
}

case "${1:-}" in
  start) start_all; print_env ;;
  stop) stop_all ;;
  env) print_env ;;
  kill) stop_pid "$(node_pidfile "${2:?node}")" KILL ;;
  stop-node) stop_pid "$(node_pidfile "${2:?node}")" TERM ;;
  restart) node_pidfile "${2:?node}" >/dev/null; node_start "$2" ;;
  config) ch_config "${2:?node}" ;;
  up) up ;;
  demo) demo ;;
  test)
    shift
    start_all
    eval "$(print_env)"
    cd "$ROOT" && go test -count=1 -timeout 60m -run '^TestCluster' ./e2e "$@"
    ;;
  bench)
    shift
    start_all
    eval "$(print_env)"
    single_services start >/dev/null
    export VENNA_BENCH_SINGLE_CLICKHOUSE=127.0.0.1:$((B + 600)) VENNA_BENCH_SINGLE_KAFKA=127.0.0.1:$((B + 603))
    export VENNA_BENCH_SINGLE_STATE_DIR="$STATE/single"
    cd "$ROOT" && go test -count=1 -timeout 60m -run '^$' -bench '^BenchmarkClusterIngest$' -benchtime 1x ./e2e "$@"
    ;;
  fetch) fetch_zookeeper; fetch_kafka; install_clickhouse ;;
  *) echo "usage: $0 start|stop|env|kill NODE|stop-node NODE|restart NODE|up|demo|test [go test args]|bench [go test args]|config NODE|fetch" >&2; exit 2 ;;
esac
