#!/usr/bin/env bash
# Benchmarks lipachat-relay against the fake gateway alone ("direct") and a header-injecting
# nginx, in one run, and writes BENCHMARKS.md. Not part of the test suite.
# About 5 minutes once the tools are installed and the relay is built.
#
#   bash bench/run.sh                          # everything
#   BENCH_TARGETS="direct nginx" bash bench/run.sh   # without the relay
#   BENCH_ROUNDS=5 BENCH_SECONDS=10 BENCH_RATE=2000 BENCH_FILL="10000 100000 1000000"
#
# Installs what it needs when missing: Debian's nginx and wrk (apt-get, as root) and oha
# (cargo install oha --locked, about 4 minutes). bench/bench.py does the measuring; it stops
# every process it started, by PID, on exit, Ctrl-C or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_T0="${BENCH_T0:-$(date +%s.%N)}"
say() { printf '[bench] %s\n' "$*"; }

[ "$(nproc)" -ge 2 ] || { say "needs 2 cores (one for the load generator, one for the target)"; exit 1; }

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { say "missing ${missing[*]}; run as root or install them"; exit 1; }
  say "installing ${missing[*]} (apt-get)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
export PATH="$PATH:/usr/sbin:$HOME/.cargo/bin"
if ! command -v oha >/dev/null; then
  say "installing oha (cargo install oha --locked, a few minutes)"
  cargo install oha --locked --quiet || say "oha did not install; its cross-check column will be empty"
fi

targets="${BENCH_TARGETS:-direct nginx relay relay-replay}"
if [[ " $targets " == *" relay"* ]]; then
  say "cargo build --release --locked"
  cargo build --release --locked --quiet
fi
# The open-loop latency generator (bench/openloop.rs, a [[bench]] target with harness = false).
grep -q 'path = "bench/openloop.rs"' Cargo.toml \
  || { say "Cargo.toml has no [[bench]] entry for bench/openloop.rs"; exit 1; }
say "cargo bench --bench openloop --no-run --locked"
openloop=$(cargo bench --bench openloop --no-run --locked --quiet --message-format=json \
  | python3 -c 'import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "openloop"]
print(exe[-1])')
[ -x "$openloop" ] || { say "the open-loop generator did not build"; exit 1; }

say "measuring (targets: $targets)"
exec python3 bench/bench.py "$openloop"
