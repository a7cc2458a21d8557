#!/usr/bin/env bash
# Checks the REST API against its contract, api/openapi.json, with Schemathesis (pinned, in
# a venv under ~/.cache/venna): it builds venna, migrates a database of its own, creates a
# workspace with a key, a budget, a credit grant, an invoice run, a webhook endpoint and
# the grant's webhook event (aggregate --once), serves the API, then runs every phase and
# check of Schemathesis over the workspace routes (with the workspace key) and the admin
# routes (with the admin token). Any finding fails it.
#
# Needs running services: VENNA_CLICKHOUSE_ADDR (and _PROTOCOL, _SECURE, _CA_FILE) and
# VENNA_KAFKA_BROKERS, as scripts/services.sh env prints them; scripts/test.sh runs it.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
CACHE=${VENNA_CACHE_DIR:-$HOME/.cache/venna}
VERSION=4.32.5
VENV="$CACHE/schemathesis-$VERSION"
log() { printf '[contract] %s\n' "$*" >&2; }

if [ ! -f "$VENV/.complete" ]; then
  log "installing schemathesis $VERSION from PyPI into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$VERSION" >&2
  touch "$VENV/.complete"
fi
: "${VENNA_CLICKHOUSE_ADDR:?point VENNA_CLICKHOUSE_ADDR at a ClickHouse (scripts/services.sh env)}"
: "${VENNA_KAFKA_BROKERS:?point VENNA_KAFKA_BROKERS at Kafka (scripts/services.sh env)}"

work=$(mktemp -d)
bin="$work/venna"
go build -o "$bin" ./cmd/venna
name="contract_$(date +%s)_$$"
export VENNA_CLICKHOUSE_DATABASE=$name VENNA_KAFKA_TOPIC=$name VENNA_KAFKA_PARTITIONS=1 VENNA_LOG_LEVEL=error
export VENNA_ADMIN_TOKEN="contract-admin-$(head -c12 /dev/urandom | od -An -tx1 | tr -d ' \n')"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export VENNA_API_ADDR=127.0.0.1:$port
"$bin" migrate >/dev/null
"$bin" workspace create --id ws_contract --name "Contract" >/dev/null
token=$("$bin" key create --workspace ws_contract --name contract | sed -n 's/^secret.*: //p')
"$bin" budget set --workspace ws_contract --monthly-usd 10 --hard >/dev/null
"$bin" credit grant --workspace ws_contract --amount-usd 5 --reason contract >/dev/null
"$bin" invoice run >/dev/null
"$bin" webhook add --workspace ws_contract --url http://127.0.0.1:9/contract --description contract >/dev/null
"$bin" aggregate --once >/dev/null # the grant's webhook event, and a delivery attempt refused at port 9

"$bin" api >"$work/api.log" 2>&1 &
api=$!
trap 'kill $api 2>/dev/null; wait $api 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do
  curl -fs "http://$VENNA_API_ADDR/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

run() { # run TAG TOKEN
  log "schemathesis over the $1 routes"
  "$VENV/bin/schemathesis" --config-file "$ROOT/api/contract/schemathesis.toml" run "http://$VENNA_API_ADDR/openapi.json" \
    --include-tag "$1" -H "Authorization: Bearer $2" --workers 1 --seed "${VENNA_CONTRACT_SEED:-20261202}" \
    --report junit --report-dir "$work/reports-$1" 2>&1 | grep -v "^  *$" | tail -n "${VENNA_CONTRACT_LINES:-200}"
  return "${PIPESTATUS[0]}"
}
status=0
run workspace "$token" || status=1
run admin "$VENNA_ADMIN_TOKEN" || status=1
if [ $status -ne 0 ]; then
  log "findings above; the API's log:"
  tail -n 20 "$work/api.log" >&2
fi
exit $status
