#!/usr/bin/env bash
# Profiles one target under load, as bench/run.sh loads it: the fake gateway (nginx) and the
# target pinned to core 1, wrk -c64 pinned to core 0, `perf record -g` on the target. Prints
# the user/kernel split, the top symbols (self) and the self time by crate. Not part of the tests.
#
#   bash bench/profile.sh                 # the relay's forward path (new messageId per request)
#   PROFILE_TARGET=replay bash bench/profile.sh
#   PROFILE_TARGET=floor bash bench/profile.sh
#   PROFILE_WARMUP=6 PROFILE_SECONDS=10 PROFILE_TOP=25 PROFILE_OUT=/tmp/relay.perf bash bench/profile.sh
#   PROFILE_BINARY=path/to/lipachat-relay bash bench/profile.sh   # another build (with symbols)
#
# Builds `cargo build --profile profiling` (release code with line tables) and, for the floor,
# the floor bench binary with the same profile. Needs perf, nginx and wrk (bench/run.sh installs
# the last two).
set -euo pipefail
cd "$(dirname "$0")/.."
target=${PROFILE_TARGET:-forward}
seconds=${PROFILE_SECONDS:-10}
warmup=${PROFILE_WARMUP:-3}
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
      taskset -c 1 "${PROFILE_BINARY:-target/profiling/lipachat-relay}" serve & pids+=($!)
    script=bench/$([ "$target" = replay ] && echo replay || echo forward).lua ;;
  *) say "PROFILE_TARGET must be forward, replay or floor"; exit 1 ;;
esac
server=${pids[-1]}
binary=$(basename "$(readlink -f /proc/"$server"/exe)")
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/healthz" && break; sleep 0.05; done
curl -s -o /dev/null "http://127.0.0.1:$port/media" -H 'content-type: application/json' --data-binary @bench/body.json

say "warm-up $warmup s, then $seconds s under perf"
taskset -c 0 wrk -t1 -c64 -d"$warmup"s -s "$script" "http://127.0.0.1:$port" >/dev/null
taskset -c 0 wrk -t1 -c64 -d"$((seconds + 2))"s -s "$script" "http://127.0.0.1:$port" >"$tmp/wrk.txt" &
wrk_pid=$!
sleep 1
perf record ${PROFILE_CALLGRAPH:--g} -F ${PROFILE_FREQ:-2999} -o "$out" -p "$server" -- sleep "$seconds" 2>/dev/null
wait "$wrk_pid"
grep -E "Requests/sec" "$tmp/wrk.txt" >&2
say "profile in $out"
# The target's CPU under perf (the samples' periods) over the requests wrk counted meanwhile.
cpu_s=$(perf script -i "$out" -F period 2>/dev/null | awk '{s += $1} END {printf "%.3f", s / 1e9}')
rps=$(awk '/Requests\/sec/ {print $2}' "$tmp/wrk.txt")
us_per_req=$(python3 -c "print(f'{$cpu_s * 1e6 / ($rps * $seconds):.1f}')")
echo "CPU under perf: $cpu_s s in $seconds s at $rps req/s = $us_per_req µs/req (perf's own cost included)"
perf report -i "$out" --no-children --sort dso --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -6 || true
echo
echo "top $top symbols (self):"
perf report -i "$out" --no-children --sort symbol --stdio 2>/dev/null | grep -E "^ +[0-9]" | head -"$top" | sed 's/ *$//; s/ *- *- *$//' || true
echo
echo "by crate (self time; a symbol counts for the first crate its name names, so inlined generics count where they were instantiated):"
perf report -i "$out" --no-children --sort dso,symbol --stdio 2>/dev/null | python3 -c '
import re, sys, collections
binary = sys.argv[2]
shares = collections.Counter()
for line in sys.stdin:
    m = re.match(r"\s+([0-9.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)", line)
    if not m:
        continue
    share, dso, kind, name = float(m[1]), m[2], m[3], m[4].strip()
    if kind == "k":
        crate = "[kernel]"
    elif dso != binary:
        crate = dso
    else:
        path = re.search(r"([A-Za-z_][A-Za-z0-9_]*)::", name.lstrip("<&*( "))
        crate = path[1] if path else "(unnamed)"
        if not path and re.match(r"_?rjem|je_|tcache|do_rallocx|arena|extent|edata", name):
            crate = "jemalloc"
        crate = "lipachat_relay (ours)" if crate == "lipachat_relay" else crate
        crate = "the floor (ours)" if crate == "floor" else crate
    shares[crate] += share
us = float(sys.argv[1])
for crate, share in shares.most_common(18):
    print(f"  {share:5.1f}%  {share * us / 100:5.2f} µs/req  {crate}")
' "$us_per_req" "$binary"
