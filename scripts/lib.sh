# Shared by scripts/services.sh (one of each service) and scripts/cluster.sh (clusters):
# installing and fetching the real services, and starting, waiting for and stopping plain
# processes by pid file. Sourced, not run; the sourcing script sets LOG_TAG.
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${VENNA_CACHE_DIR:-$HOME/.cache/venna}
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$ROOT/deploy/kafka/pom.xml")
KAFKA_JARS="$CACHE/kafka-$KAFKA_VERSION"
ZK_VERSION=$(sed -n 's:.*<zookeeper.version>\(.*\)</zookeeper.version>.*:\1:p' "$ROOT/deploy/zookeeper/pom.xml")
ZK_JARS="$CACHE/zookeeper-$ZK_VERSION"

log() { printf '[%s] %s\n' "${LOG_TAG:-venna}" "$*" >&2; }

wait_for() { # wait_for NAME SECONDS CMD...
  local name=$1 secs=$2; shift 2
  for _ in $(seq 1 $((secs * 5))); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  log "$name did not come up in ${secs}s"; return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

stop_pid() { # stop_pid PIDFILE [SIGNAL]
  local f=$1 sig=${2:-TERM}
  if pid_alive "$f"; then
    local pid; pid=$(cat "$f")
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

install_clickhouse() {
  command -v clickhouse-server >/dev/null && return 0
  log "installing clickhouse-server from Debian"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq clickhouse-server clickhouse-client >/dev/null
}

# fetch_jars POM DIR NAME: the runtime jars of POM's dependencies from Maven Central into
# DIR, once (DIR/.complete marks a finished copy).
fetch_jars() {
  local pom=$1 dir=$2 name=$3
  [ -f "$dir/.complete" ] && return 0
  log "fetching $name jars from Maven Central into $dir"
  mkdir -p "$dir"
  mvn -q -B -f "$pom" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$dir" >&2
  touch "$dir/.complete"
}

fetch_kafka() { fetch_jars "$ROOT/deploy/kafka/pom.xml" "$KAFKA_JARS" "Apache Kafka $KAFKA_VERSION"; }

fetch_zookeeper() { fetch_jars "$ROOT/deploy/zookeeper/pom.xml" "$ZK_JARS" "Apache ZooKeeper $ZK_VERSION"; }

# kafka_cluster_id prints a KRaft cluster ID: 16 random bytes, base64url without padding
# (what `kafka-storage random-uuid` prints). Never one that starts with '-': the storage
# tool would read it as an option (1 start in 64 failed that way), which is also why
# Kafka's own random-uuid draws again in that case.
kafka_cluster_id() {
  local id=-
  while [ "${id#-}" != "$id" ]; do
    id=$(head -c16 /dev/urandom | base64 | tr '+/' '-_' | cut -c1-22)
  done
  echo "$id"
}

# kafka_format DIR CLUSTER_ID: formats a broker's log dir from DIR/server.properties once.
kafka_format() {
  local dir=$1 id=$2
  [ -f "$dir/data/meta.properties" ] && return 0
  java -cp "$KAFKA_JARS/*" kafka.tools.StorageTool format -t "$id" \
    -c "$dir/server.properties" >"$dir/format.log" 2>&1 || { cat "$dir/format.log" >&2; return 1; }
}

# kafka_run DIR HEAP: starts a broker from DIR/server.properties, pid in DIR/pid.
kafka_run() {
  local dir=$1 heap=$2
  java "-Xms256m" "-Xmx$heap" -XX:+UseG1GC -cp "$KAFKA_JARS/*" kafka.Kafka "$dir/server.properties" \
    >"$dir/server.log" 2>&1 &
  echo $! > "$dir/pid"
  disown # a node killed on purpose is not this shell's news ("Killed" at its exit)
}
