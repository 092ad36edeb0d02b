#!/usr/bin/env bash
# Builds ablation variants of the relay: each bench/variants/NAME.patch applied to a revision
# (default HEAD), built release into target/variants/lipachat-relay-NAME. Prints the
# BENCH_VARIANTS value for bench/run.sh, which measures them in the same rounds as the relay:
#
#   BENCH_VARIANTS="$(bash bench/variants.sh)" BENCH_TARGETS="floor relay variant-nomoka variant-noserver" bash bench/run.sh
#
# A variant takes one piece out, to measure what that piece costs in place:
#   nomoka    the moka window answers "not remembered" and remembers nothing (forward only:
#             replays need it)
#   noserver  axum::serve instead of the relay's own accept loop (src/server.rs: header and
#             idle timeouts, connection limit, fd handling)
#   nostack   one gateway call straight through reqwest: no tower retry stack, no retry budget,
#             no attempt timer, no attempt metrics
# They are experiments, not builds to run: each breaks a promise of the SPEC.
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$(git rev-parse --verify "${1:-HEAD}^{commit}")
out=target/variants
mkdir -p "$out"
say() { printf '[variants] %s\n' "$*" >&2; }
list=()
for patch in bench/variants/*.patch; do
  name=$(basename "$patch" .patch)
  binary="$out/lipachat-relay-$name"
  stamp="$rev $(sha256sum "$patch" | cut -d' ' -f1)"
  if [ "$(cat "$binary.rev" 2>/dev/null)" != "$stamp" ]; then
    say "building $name at ${rev:0:10}"
    rm -rf "$out/src-$name"
    mkdir -p "$out/src-$name"
    git archive "$rev" | tar -x -C "$out/src-$name"
    patch -d "$out/src-$name" -p1 --quiet < "$patch"
    (cd "$out/src-$name" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked --quiet)
    cp "$out/target/release/lipachat-relay" "$binary"
    echo "$stamp" > "$binary.rev"
  fi
  list+=("$name=$PWD/$binary")
done
echo "${list[*]}"
