#!/usr/bin/env bash
# Builds ablation variants of the relay: each bench/variants/NAME.patch applied to a revision
# (default HEAD), built release into target/variants/lipachat-relay-NAME. Prints the
# BENCH_VARIANTS value for bench/run.sh, which measures them in the same rounds as the relay:
#
#   BENCH_VARIANTS="$(bash bench/variants.sh)" BENCH_TARGETS="floor relay variant-nomoka variant-noserver" bash bench/run.sh
#
#   bash bench/variants.sh HEAD nomoka fifo      # only these two
#
# A variant takes one piece out, to measure what that piece costs in place:
#   nomoka    the moka window answers "not remembered" and remembers nothing (forward only:
#             replays need it)
#   noserver  axum::serve instead of the relay's own accept loop (src/server.rs: header and
#             idle timeouts, connection limit, fd handling)
#   nostack   one gateway call straight through reqwest: no tower retry stack, no retry budget,
#             no attempt timer, no attempt metrics
#   novalidate  no JSON parse, field checks or normalised body: messageId found by a byte
#             search, the body sent as it came
#   nometrics  no request, attempt or in-flight metrics
#   noreqid   no x-request-id made or echoed (tower-http's SetRequestId/PropagateRequestId)
#   notrace   no tracing span per send and no request log record (the bench runs at
#             RUST_LOG=warn, where both are already filtered out)
#   fifo      the window of answers as a HashMap + VecDeque under one Mutex instead of moka:
#             what remembering 100,000 answers costs in the simplest store
#   u128key   the moka window keyed by a 128-bit hash of the messageId instead of the string
#             (no string to hash or compare when moka rehashes or evicts)
#   nottl     the moka window without time_to_live (no write-order queue to keep)
#   nospawn   a new send awaited in the request's own task instead of spawned on the
#             drain's TaskTracker (what the spawn costs; a caller's disconnect would then
#             cancel its send, so this breaks the SPEC)
# A bench/variants/NAME.list file (one patch name per line) applies those patches together:
#   nomoka-nostack  nomoka and nostack at once; nomoka-nostack-X adds X to them, so X is
#             measured where nothing bigger hides it
#   bare      every "no" patch at once: what is left of the relay is its routes, the in-flight
#             table, the slot and the answer; compared with floor it is the residue
# They are experiments, not builds to run: each breaks a promise of the SPEC.
#
# A bench/variants/NAME.env file (KEY=VALUE lines) makes a variant of configuration instead: a
# wrapper, target/variants/lipachat-relay-NAME, that runs target/release/lipachat-relay (the
# build bench/run.sh measures as `relay`) with those variables set:
#   window1k, window10k  the moka window at 1,000 and 10,000 answers instead of 100,000: full
#             and evicting like the default one, but a smaller, hotter working set
set -euo pipefail
cd "$(dirname "$0")/.."
rev=$(git rev-parse --verify "${1:-HEAD}^{commit}")
shift || true
# Names after the revision: build only those (default: every variant).
only=" $* "
wanted() { [ "$only" = "  " ] || [[ "$only" == *" $1 "* ]]; }
out=target/variants
mkdir -p "$out"
say() { printf '[variants] %s\n' "$*" >&2; }
list=()
for spec in bench/variants/*.patch bench/variants/*.list; do
  [ -e "$spec" ] || continue
  name=$(basename "${spec%.*}")
  wanted "$name" || continue
  if [[ "$spec" == *.list ]]; then
    patches=()
    while read -r part; do [ -n "$part" ] && patches+=("bench/variants/$part.patch"); done < "$spec"
  else
    patches=("$spec")
  fi
  binary="$out/lipachat-relay-$name"
  stamp="$rev $(cat "${patches[@]}" | sha256sum | cut -d' ' -f1)"
  if [ "$(cat "$binary.rev" 2>/dev/null)" != "$stamp" ]; then
    say "building $name at ${rev:0:10}"
    rm -rf "$out/src-$name"
    mkdir -p "$out/src-$name"
    # -m: files dated now, so cargo never takes the shared target dir's last variant as fresh
    git archive "$rev" | tar -x -m -C "$out/src-$name"
    for part in "${patches[@]}"; do patch -d "$out/src-$name" -p1 --quiet < "$part"; done
    (cd "$out/src-$name" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --locked --quiet)
    cp "$out/target/release/lipachat-relay" "$binary"
    echo "$stamp" > "$binary.rev"
  fi
  list+=("$name=$PWD/$binary")
done
for vars in bench/variants/*.env; do
  [ -e "$vars" ] || continue
  name=$(basename "$vars" .env)
  wanted "$name" || continue
  binary="$out/lipachat-relay-$name"
  {
    echo '#!/bin/sh'
    echo "# bench/variants/$name.env: the relay of target/release with these variables."
    grep -E '^[A-Z_][A-Z0-9_]*=' "$vars" | sed 's/^/export /'
    echo "exec \"$PWD/target/release/lipachat-relay\" \"\$@\""
  } > "$binary"
  chmod +x "$binary"
  list+=("$name=$PWD/$binary")
done
echo "${list[*]}"
