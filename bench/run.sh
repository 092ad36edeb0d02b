#!/usr/bin/env bash
# Benchmarks lipachat-relay against the fake gateway alone ("direct"), a header-injecting
# nginx and the bare axum + reqwest forwarder ("floor", bench/floor.rs), in one run, and writes
# BENCHMARKS.md. Not part of the test suite. Also measures the relay with its rate limits on
# (relay-limited) and with its dedup store in a local redis-server (relay-redis*).
# About 8 minutes once the tools are installed and the relay is built.
#
#   bash bench/run.sh                          # everything
#   BENCH_TARGETS="direct nginx floor" bash bench/run.sh   # without the relay
#   BENCH_ROUNDS=5 BENCH_SECONDS=10 BENCH_RATE=2000 BENCH_FILL="10000 100000 1000000"
#   BENCH_BEFORE=77f91a7 bash bench/run.sh     # also an older build of the relay, in the same rounds
#
# BENCH_BEFORE names a git revision: it is built (release, in target/bench-before) and measured
# as the targets `before` (forward) and `before-replay`, interleaved with the others, so a
# change's "before and after" come from one run.
#
# Installs what it needs when missing: Debian's nginx, wrk and (for the relay-redis targets)
# redis-server (apt-get, as root) and oha (cargo install oha --locked, about 4 minutes).
# bench/bench.py does the measuring; it stops every process it started, by PID, on exit,
# Ctrl-C or SIGTERM.
set -euo pipefail
cd "$(dirname "$0")/.."
export BENCH_T0="${BENCH_T0:-$(date +%s.%N)}"
say() { printf '[bench] %s\n' "$*" >&2; }
default_targets="direct nginx floor relay relay-replay relay-limited relay-redis relay-redis-replay"
[ -n "${BENCH_BEFORE:-}" ] && default_targets="direct nginx floor before relay before-replay relay-replay relay-limited relay-redis before-redis relay-redis-replay before-redis-replay"
export BENCH_TARGETS="${BENCH_TARGETS:-$default_targets}"
targets="$BENCH_TARGETS"

[ "$(nproc)" -ge 2 ] || { say "needs 2 cores (one for the load generator, one for the target)"; exit 1; }

missing=()
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v wrk >/dev/null || missing+=(wrk)
command -v taskset >/dev/null || missing+=(util-linux)
command -v curl >/dev/null || missing+=(curl)
command -v python3 >/dev/null || missing+=(python3)
# Optional: without it bench.py skips the relay-redis targets and says so.
if [[ " $targets " == *" relay-redis"* ]] && ! command -v redis-server >/dev/null; then
  if [ "$(id -u)" -eq 0 ]; then missing+=(redis-server)
  else say "redis-server is missing and this is not root: the relay-redis targets will be skipped"; fi
fi
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

if [[ " $targets " == *" relay"* ]]; then
  say "cargo build --release --locked"
  cargo build --release --locked --quiet
fi
# A [[bench]] target with harness = false, built as `cargo bench` builds it; prints its path.
bench_binary() {
  grep -q "path = \"bench/$1.rs\"" Cargo.toml \
    || { say "Cargo.toml has no [[bench]] entry for bench/$1.rs"; return 1; }
  say "cargo bench --bench $1 --no-run --locked"
  cargo bench --bench "$1" --no-run --locked --quiet --message-format=json \
    | python3 -c 'import json, sys
exe = [m["executable"] for m in map(json.loads, sys.stdin)
       if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == sys.argv[1]]
print(exe[-1])' "$1"
}
# The open-loop latency generator (bench/openloop.rs).
openloop=$(bench_binary openloop)
[ -x "$openloop" ] || { say "the open-loop generator did not build"; exit 1; }
# The floor: the bare axum + reqwest forwarder (bench/floor.rs).
floor=""
if [[ " $targets " == *" floor "* ]]; then
  floor=$(bench_binary floor)
  [ -x "$floor" ] || { say "the floor did not build"; exit 1; }
fi

# An older build of the relay, for before/after in one run.
export BENCH_BEFORE_BIN=""
if [[ " $targets " == *" before"* ]]; then
  [ -n "${BENCH_BEFORE:-}" ] || { say "the before targets need BENCH_BEFORE=<git revision>"; exit 1; }
  before_dir=target/bench-before
  rev=$(git rev-parse --verify "$BENCH_BEFORE^{commit}") || { say "BENCH_BEFORE=$BENCH_BEFORE is not a revision"; exit 1; }
  if [ "$(cat "$before_dir/rev" 2>/dev/null)" != "$rev" ]; then
    say "building $BENCH_BEFORE ($rev) into $before_dir"
    rm -rf "$before_dir/src"
    mkdir -p "$before_dir/src"
    git archive "$rev" | tar -x -C "$before_dir/src"
    (cd "$before_dir/src" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked --quiet)
    echo "$rev" > "$before_dir/rev"
  fi
  export BENCH_BEFORE_BIN="$PWD/$before_dir/target/release/lipachat-relay"
  export BENCH_BEFORE_REV="$rev"
fi

say "measuring (targets: $targets)"
exec python3 bench/bench.py "$openloop" "$floor"
