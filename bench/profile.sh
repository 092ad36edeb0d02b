#!/usr/bin/env bash
# Profiles one target under load, as bench/run.sh loads it: the fake gateway (nginx) and the
# target pinned to core 1, wrk -c64 pinned to core 0, `perf record -g` on the target. Prints
# the user/kernel split and the top symbols (self and with children). Not part of the tests.
#
#   bash bench/profile.sh                 # the relay's forward path (new messageId per request)
#   PROFILE_TARGET=replay bash bench/profile.sh
#   PROFILE_TARGET=floor bash bench/profile.sh
#   PROFILE_SECONDS=10 PROFILE_TOP=25 PROFILE_OUT=/tmp/relay.perf bash bench/profile.sh
#
# Builds `cargo build --profile profiling` (release code with line tables) and, for the floor,
# the floor bench binary with the same profile. Needs perf, nginx and wrk (bench/run.sh installs
# the last two).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${PROFILE_TARGET:-forward}
seconds=${PROFILE_SECONDS:-10}
top=${PROFILE_TOP:-20}
out=${PROFILE_OUT:-$(mktemp -d)/perf.data}
say() { printf '[profile] %s\n' "$*" >&2; }
export PATH="$PATH:/usr/sbin"
for tool in perf nginx wrk taskset; do
  command -v "$tool" >/dev/null || { say "$tool is missing"; exit 1; }
done

tmp=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$tmp"; }
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

gateway=$(free_port)
cat >"$tmp/gateway.conf" <<CONF
worker_processes 1; daemon off; pid $tmp/gw.pid; error_log $tmp/gw.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; client_body_temp_path $tmp/body;
  server { listen 127.0.0.1:$gateway backlog=4096;
    location / { default_type application/json;
      return 200 '{"timestamp":"2026-11-25T08:00:00.000Z","data":{"messageId":"bench-0001","waId":"wamid.HBgMMjU0NzEyMzQ1Njc4FQIAERgSNUQ4RjM2QjNFQjY2Q0Q3NkE0AA==","status":"SENT","statusDesc":"Message sent"},"status":"success","message":"","errors":null}'; } } }
CONF
taskset -c 1 nginx -c "$tmp/gateway.conf" -p "$tmp" & pids+=($!)

port=$(free_port)
say "cargo build --profile profiling --locked"
cargo build --profile profiling --locked --quiet
case "$target" in
  floor)
    floor=$(cargo bench --profile profiling --bench floor --no-run --locked --quiet --message-format=json \
      | python3 -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("executable") and m["target"]["name"]=="floor"][-1])')
    FLOOR_LISTEN=127.0.0.1:$port FLOOR_UPSTREAM=http://127.0.0.1:$gateway/api/v1/whatsapp/media \
      FLOOR_API_KEY=profile-key taskset -c 1 "$floor" & pids+=($!)
    script=bench/forward.lua ;;
  forward|replay)
    LIPACHAT_API_KEY=profile-key LIPACHAT_BASE_URL=http://127.0.0.1:$gateway RELAY_LISTEN=127.0.0.1:$port \
      RUST_LOG=warn RELAY_SENDER_RATE=0 RELAY_PAIR_INTERVAL_MS=0 ${PROFILE_ENV:-} \
      taskset -c 1 target/profiling/lipachat-relay serve & pids+=($!)
    script=bench/$([ "$target" = replay ] && echo replay || echo forward).lua ;;
  *) say "PROFILE_TARGET must be forward, replay or floor"; exit 1 ;;
esac
server=${pids[-1]}
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.05; done
curl -s -o /dev/null "http://127.0.0.1:$port/media" -H 'content-type: application/json' --data-binary @bench/body.json

say "warm-up 3 s, then $seconds s under perf"
taskset -c 0 wrk -t1 -c64 -d3s -s "$script" "http://127.0.0.1:$port" >/dev/null
taskset -c 0 wrk -t1 -c64 -d"$((seconds + 2))"s -s "$script" "http://127.0.0.1:$port" >"$tmp/wrk.txt" &
wrk_pid=$!
sleep 1
perf record ${PROFILE_CALLGRAPH:--g} -F ${PROFILE_FREQ:-2999} -o "$out" -p "$server" -- sleep "$seconds" 2>/dev/null
wait "$wrk_pid"
grep -E "Requests/sec" "$tmp/wrk.txt" >&2
say "profile in $out"
perf report -i "$out" --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -6
echo
echo "top $top symbols (self):"
perf report -i "$out" --no-children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -"$top"
