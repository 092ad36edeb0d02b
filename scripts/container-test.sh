#!/usr/bin/env bash
# Container test: builds the image from the Dockerfile and checks what an operator relies on.
#
#   bash scripts/container-test.sh
#
# No image can be pulled here, so it first builds local stand-ins for the Dockerfile's two base
# images and passes them as build args:
#   - builder: a minimal Debian bookworm (debootstrap, with gcc and make) plus this machine's Rust
#     toolchain (`rustc --print sysroot`), in place of rust:1-bookworm;
#   - runtime: glibc, CA certificates and /etc/passwd with user 65532 only, in place of
#     gcr.io/distroless/cc-debian12:nonroot.
# and one for the compose `replicas` profile's Redis (REDIS_IMAGE):
#   - redis: a minimal Debian bookworm with Debian's redis-server, in place of redis:7-bookworm.
# The crates are vendored into a copy of the build context, so the build needs no network (a
# container here reaches the crate registry but does not trust this machine's TLS proxy).
#
# Cache: the Debian trees live in ${LIPACHAT_CI_CACHE:-/var/cache/lipachat-relay-ci}/bookworm-vN
# (and bookworm-redis-vN) and the stand-ins are Docker images named lipachat-relay-ci/*, tagged
# with STANDIN_VERSION (and the Rust version). Bump STANDIN_VERSION to rebuild them; delete the
# folder and the images to start over. A lock in the folder keeps two runs on one machine from
# building the same stand-in at once. A cold run adds about 3 minutes (debootstraps, toolchain
# import; the Redis tree took 42 s here) to the 3 of a warm one (mostly the image build; the
# replicas profile adds about 15 s). CONTAINER_TEST_REUSE_IMAGE=1 reuses an existing test image.
#
# Checks, in order: image under 30 MB with the expected user, env and HEALTHCHECK; no shell in
# the image; `docker run IMAGE` with no key exits 2 naming the variable; the default command run
# hardened (read-only root, no capabilities, key from a mounted file) turns `healthy`, runs as a
# non-root uid with no effective capabilities, cannot be written to, answers /readyz and /media,
# and exits 0 on `docker stop` within the grace time; the compose `demo` profile answers a
# SENT envelope with no secret; the compose `live` profile, its key from a compose secret and
# its settings from .env, sends through the demo's mock gateway; the compose `replicas` profile
# (two relays, one Redis, a mock gateway): a send through relay-a is replayed byte for byte by
# relay-b, and the mock's GET /mock/sends lists it once; every container exits 0.
# Skips (exit 0, saying so) when no Docker engine answers. Contacts only 127.0.0.1 and Docker's
# own networks (plus the Debian mirror and the crate registry when the cache is cold).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

say() { printf 'container-test: %s\n' "$*"; }
fail() {
  say "FAILED: $*"
  exit 1
}
apt_install() {
  apt-get install -y -qq "$@" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq "$@" >/dev/null 2>&1; }
}

if ! command -v docker >/dev/null 2>&1 || ! timeout 30 docker info >/dev/null 2>&1; then
  say "SKIPPED: no Docker engine answers"
  exit 0
fi
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  command -v docker-compose >/dev/null 2>&1 || apt_install docker-compose || true
  command -v docker-compose >/dev/null 2>&1 || fail "no compose tool (docker compose or docker-compose)"
  compose=(docker-compose)
fi
# The Dockerfile works with both builders; the classic one is used when buildx is missing.
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi

STANDIN_VERSION=2
CACHE=${LIPACHAT_CI_CACHE:-/var/cache/lipachat-relay-ci}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
RUST_VERSION=$(rustc --version | awk '{print $2}')
BUILDER_IMAGE=lipachat-relay-ci/rust:${RUST_VERSION}-bookworm-v${STANDIN_VERSION}
RUNTIME_IMAGE=lipachat-relay-ci/distroless-cc:bookworm-v${STANDIN_VERSION}
REDIS_STANDIN_IMAGE=lipachat-relay-ci/redis:bookworm-v${STANDIN_VERSION}
IMAGE=lipachat-relay:container-test
NAME=lipachat-relay-ct-$$
PROJECT=lipachat-relay-ct-$$
DEMO_KEY=demo-key-not-a-secret # the key docker-compose.yml gives the demo's mock gateway
GRACE=5                        # RELAY_SHUTDOWN_GRACE_SECS for the stop test
BODY='{"messageId":"ct-1","mediaType":"IMAGE","mediaUrl":"https://example.com/a.png","from":"254110090747","to":"254712345678"}'
work=$(mktemp -d)
project_dir=$work/compose
t_start=$(date +%s)

# Every compose call runs in a scratch project folder (not the repository) and is bounded.
compose_in() { (cd "$project_dir" && RELAY_IMAGE=$IMAGE timeout 180 "${compose[@]}" -p "$PROJECT" "$@"); }

cleanup() {
  docker rm -f "$NAME" "$NAME-size" >/dev/null 2>&1 || true
  if [ -f "$project_dir/docker-compose.yml" ]; then
    compose_in --profile demo --profile live --profile replicas down -v --remove-orphans >/dev/null 2>&1 || true
  fi
  # Whatever the compose tool could not remove (e.g. it failed to read its file).
  docker ps -aq --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network ls -q --filter "label=com.docker.compose.project=$PROJECT" | xargs -r docker network rm >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# Polls until `docker inspect` reports healthy; fails on unhealthy, exit, or after $2 seconds.
wait_healthy() {
  local id=$1 limit=$2 status=starting
  for _ in $(seq 1 "$limit"); do
    status=$(docker inspect -f '{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$id")
    [ "$status" = healthy ] && return 0
    [ "$(docker inspect -f '{{.State.Running}}' "$id")" = true ] || break
    sleep 1
  done
  docker logs "$id" 2>&1 | tail -20
  fail "container $id not healthy (${status:-no health status})"
}

# POSTs $BODY-like JSON to port $1 until the answer is a SENT envelope or $3 seconds pass.
post_until_sent() {
  local port=$1 body=$2 limit=$3 answer=""
  for _ in $(seq 1 "$limit"); do
    answer=$(curl -s --max-time 5 "http://127.0.0.1:$port/media" \
      -H 'Content-Type: application/json' -d "$body" || true)
    case "$answer" in *'"status":"SENT"'*) printf '%s' "$answer"; return 0 ;; esac
    sleep 1
  done
  printf '%s' "$answer"
  return 1
}

# --- base-image stand-ins ----------------------------------------------------------------
# One run at a time builds stand-ins on this machine (other worktrees share the cache).
lock_cache() {
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock -w 3600 9 || fail "waited an hour for $CACHE/.lock"
}
unlock_cache() { flock -u 9; }

prepare_rootfs() {
  ROOTFS=$CACHE/bookworm-v$STANDIN_VERSION
  [ -f "$ROOTFS/.complete" ] && return
  command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap || fail "cannot install debootstrap"
  say "debootstrap bookworm into $ROOTFS (once; log in $CACHE/debootstrap.log)"
  rm -rf "$ROOTFS"
  mkdir -p "$CACHE"
  timeout 1800 nice debootstrap --variant=minbase --include=gcc,libc6-dev,make,ca-certificates \
    bookworm "$ROOTFS" "$DEBIAN_MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log"; fail "debootstrap"; }
  touch "$ROOTFS/.complete"
}

build_builder_standin() {
  docker image inspect "$BUILDER_IMAGE" >/dev/null 2>&1 && return
  prepare_rootfs
  local sysroot
  sysroot=$(rustc --print sysroot)
  say "builder stand-in $BUILDER_IMAGE: Debian + Rust $RUST_VERSION from $sysroot"
  # The toolchain without docs and sources: cargo, rustc, their libraries, the std rlibs.
  nice tar -C "$ROOTFS" -cf "$work/builder.tar" --exclude=./.complete \
    --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' .
  nice tar -C "$sysroot" -rf "$work/builder.tar" --exclude=lib/rustlib/src \
    --exclude=lib/rustlib/rustc-src --transform='s,^,usr/local/rust/,S' bin/cargo bin/rustc lib
  docker import \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    "$work/builder.tar" "$BUILDER_IMAGE" >/dev/null
  rm -f "$work/builder.tar"
}

build_runtime_standin() {
  docker image inspect "$RUNTIME_IMAGE" >/dev/null 2>&1 && return
  prepare_rootfs
  local dir=$work/runtime lib
  say "runtime stand-in $RUNTIME_IMAGE: glibc, CA certificates, user nonroot (65532)"
  mkdir -p "$dir"/{etc/ssl/certs,lib/x86_64-linux-gnu,lib64,tmp,home/nonroot}
  for lib in libc.so.6 libm.so.6 libgcc_s.so.1 ld-linux-x86-64.so.2; do
    cp -L "$ROOTFS/lib/x86_64-linux-gnu/$lib" "$dir/lib/x86_64-linux-gnu/"
  done
  ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$dir/lib64/ld-linux-x86-64.so.2"
  cp -L "$ROOTFS/etc/ssl/certs/ca-certificates.crt" "$dir/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
  chmod 1777 "$dir/tmp"
  chown 65532:65532 "$dir/home/nonroot"
  tar -C "$dir" -c . | docker import - "$RUNTIME_IMAGE" >/dev/null
}

build_redis_standin() {
  docker image inspect "$REDIS_STANDIN_IMAGE" >/dev/null 2>&1 && return
  local rootfs=$CACHE/bookworm-redis-v$STANDIN_VERSION
  if [ ! -f "$rootfs/.complete" ]; then
    command -v debootstrap >/dev/null 2>&1 || apt_install debootstrap || fail "cannot install debootstrap"
    say "debootstrap bookworm with redis-server into $rootfs (once; log in $CACHE/debootstrap-redis.log)"
    rm -rf "$rootfs"
    timeout 1800 nice debootstrap --variant=minbase --include=redis-server \
      bookworm "$rootfs" "$DEBIAN_MIRROR" >"$CACHE/debootstrap-redis.log" 2>&1 ||
      { tail -20 "$CACHE/debootstrap-redis.log"; fail "debootstrap (redis)"; }
    touch "$rootfs/.complete"
  fi
  say "redis stand-in $REDIS_STANDIN_IMAGE: Debian bookworm's redis-server, user redis"
  nice tar -C "$rootfs" -c --exclude=./.complete --exclude='./proc/*' --exclude='./sys/*' \
    --exclude='./dev/*' --exclude='./var/cache/apt/*' --exclude='./var/lib/apt/lists/*' . |
    docker import --change 'USER redis' --change 'WORKDIR /var/lib/redis' \
      --change 'CMD ["redis-server"]' - "$REDIS_STANDIN_IMAGE" >/dev/null
}

# --- the build context: the repository's files plus vendored crates -----------------------
prepare_context() {
  CONTEXT=$work/context
  mkdir -p "$CONTEXT"
  if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    # Tracked and untracked-but-not-ignored files, so no target/; deleted files are skipped.
    git -C "$repo" ls-files -z --cached --others --exclude-standard |
      while IFS= read -r -d '' f; do [ -f "$f" ] && printf '%s\0' "$f"; done |
      xargs -0 -r cp --parents -t "$CONTEXT"
  else
    tar -C "$repo" --exclude=./target --exclude=./.git -cf - . | tar -C "$CONTEXT" -xf -
  fi
  say "vendoring crates into the build context"
  (cd "$CONTEXT" && nice cargo vendor --locked --quiet vendor >/dev/null) || fail "cargo vendor"
  mkdir -p "$CONTEXT/.cargo"
  cat >"$CONTEXT/.cargo/config.toml" <<'TOML'
[source.crates-io]
replace-with = "vendored-sources"
[source.vendored-sources]
directory = "vendor"
TOML
}

# --- build ---------------------------------------------------------------------------------
build_image() {
  t0=$(date +%s)
  lock_cache
  build_builder_standin
  build_runtime_standin
  unlock_cache
  prepare_context
  standin_secs=$(($(date +%s) - t0))

  build_args=(--build-arg "BUILDER_IMAGE=$BUILDER_IMAGE" --build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")
  # The classic builder's nice: a quarter of the default CPU weight for the compile.
  builder=BuildKit
  if [ "${DOCKER_BUILDKIT:-}" = 0 ]; then
    builder=classic
    build_args+=(--cpu-shares 256)
  fi
  say "building $IMAGE (context $(du -sh "$CONTEXT" | cut -f1), $builder builder)"
  build_started=$(date +%s)
  timeout 2400 docker build "${build_args[@]}" -t "$IMAGE" "$CONTEXT" >"$work/build.log" 2>&1 ||
    { tail -40 "$work/build.log"; fail "docker build"; }
  build_secs=$(($(date +%s) - build_started))
  # The classic builder keeps the build stage as an untagged image (1.6 GB here), and the
  # previous test image loses its tag: remove both kinds (dangling images only, by label).
  docker image prune -f --filter label=lipachat-relay.stage=build >/dev/null 2>&1 || true
  docker image prune -f --filter label=org.opencontainers.image.title=lipachat-relay >/dev/null 2>&1 || true
}

# CONTAINER_TEST_REUSE_IMAGE=1 skips the build when $IMAGE exists (to iterate on the checks).
if [ "${CONTAINER_TEST_REUSE_IMAGE:-0}" = 1 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "reusing $IMAGE (CONTAINER_TEST_REUSE_IMAGE=1): not rebuilt"
  standin_secs=0 build_secs=0
else
  build_image
fi

# --- the image ------------------------------------------------------------------------------
image_bytes=$(docker image inspect -f '{{.Size}}' "$IMAGE")
docker create --name "$NAME-size" "$IMAGE" >/dev/null
docker cp "$NAME-size:/usr/local/bin/lipachat-relay" "$work/lipachat-relay"
docker rm "$NAME-size" >/dev/null
binary_bytes=$(stat -c %s "$work/lipachat-relay")
say "built in ${build_secs}s (stand-ins and context ${standin_secs}s); runtime image $((image_bytes / 1000)) kB, binary $((binary_bytes / 1000)) kB"
[ "$image_bytes" -lt 30000000 ] || fail "runtime image is not under 30 MB"

image_user=$(docker image inspect -f '{{.Config.User}}' "$IMAGE")
case "$image_user" in "" | 0 | 0:* | root | root:*) fail "image user is root (${image_user:-unset})" ;; esac
docker image inspect -f '{{range .Config.Env}}{{println .}}{{end}}' "$IMAGE" | grep -qx 'RELAY_LISTEN=0.0.0.0:8080' ||
  fail "image does not set RELAY_LISTEN=0.0.0.0:8080"
health_test=$(docker image inspect -f '{{json .Config.Healthcheck.Test}}' "$IMAGE")
[ "$health_test" = '["CMD","/usr/local/bin/lipachat-relay","healthcheck"]' ] ||
  fail "unexpected HEALTHCHECK $health_test"
say "image: user $image_user, RELAY_LISTEN=0.0.0.0:8080, HEALTHCHECK $health_test"

if docker run --rm --entrypoint /bin/sh "$IMAGE" -c true >/dev/null 2>&1; then
  fail "the runtime image has a shell"
fi
say "no /bin/sh in the runtime image"

code=0
missing=$(timeout 60 docker run --rm "$IMAGE" 2>&1) || code=$?
if [ "$code" != 2 ] || [[ "$missing" != *LIPACHAT_API_KEY* ]]; then
  fail "docker run IMAGE with no key: exit $code, '$missing' (want exit 2 naming LIPACHAT_API_KEY)"
fi
say "docker run IMAGE with no key: exit 2: $missing"

# --- the default command, hardened, with the key from a mounted file -----------------------
mkdir -p "$work/secret"
printf 'ct-key-%s\n' "$$" >"$work/secret/key"
chmod 0444 "$work/secret/key"
docker run -d --name "$NAME" --read-only --cap-drop ALL --security-opt no-new-privileges:true \
  --memory 128m --health-interval 2s -p 127.0.0.1::8080 \
  -v "$work/secret/key:/run/secrets/lipachat_api_key:ro" \
  -e LIPACHAT_API_KEY_FILE=/run/secrets/lipachat_api_key \
  -e LIPACHAT_BASE_URL=http://127.0.0.1:9 -e RELAY_MAX_ATTEMPTS=1 \
  -e RELAY_SHUTDOWN_GRACE_SECS=$GRACE "$IMAGE" >/dev/null
wait_healthy "$NAME" 60
say "docker inspect: healthy (default command \`serve\`, key from LIPACHAT_API_KEY_FILE)"

pid=$(docker inspect -f '{{.State.Pid}}' "$NAME")
uid=$(awk '/^Uid:/ {print $2}' "/proc/$pid/status")
gid=$(awk '/^Gid:/ {print $2}' "/proc/$pid/status")
caps=$(awk '/^CapEff:/ {print $2}' "/proc/$pid/status")
[ "$uid" != 0 ] || fail "the relay process runs as uid 0"
[ "$caps" = 0000000000000000 ] || fail "effective capabilities $caps"
say "process: uid $uid, gid $gid, effective capabilities $caps"

[ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$NAME")" = true ] || fail "root filesystem writable"
# The image has no shell to try a write with: docker itself must refuse to put a file in.
if docker cp "$work/lipachat-relay" "$NAME:/tmp/probe" >/dev/null 2>&1; then
  fail "a file could be copied into the root filesystem"
fi
say "root filesystem: read-only (docker cp into /tmp refused)"

host_port=$(docker port "$NAME" 8080/tcp | head -1 | sed 's/.*://')
ready=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$host_port/readyz")
[ "$ready" = 200 ] || fail "/readyz answered $ready"
unreachable=$(curl -s -o /dev/null -w '%{http_code}' --max-time 30 "http://127.0.0.1:$host_port/media" \
  -H 'Content-Type: application/json' -d "$BODY")
[ "$unreachable" = 502 ] || fail "POST /media with no gateway answered $unreachable, want 502"
say "/readyz 200; POST /media with the gateway unreachable: 502"

stop_started=$(date +%s%N)
docker stop -t $((GRACE + 10)) "$NAME" >/dev/null
stop_ms=$((($(date +%s%N) - stop_started) / 1000000))
code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || { docker logs "$NAME" 2>&1 | tail -20; fail "exit code $code after docker stop"; }
[ "$stop_ms" -lt $((GRACE * 1000)) ] || fail "docker stop took ${stop_ms} ms (grace ${GRACE} s)"
say "docker stop: exit code 0 after ${stop_ms} ms (grace ${GRACE} s)"
docker logs "$NAME" 2>&1 | grep -q "ct-key-$$" && fail "the key appears in the log"
docker rm "$NAME" >/dev/null

# --- compose: the demo profile, with no secret and (where compose allows) no .env ----------
mkdir -p "$project_dir"
cp docker-compose.yml "$project_dir/"
env_note="no .env"
if ! compose_in --profile demo config -q >"$work/config.log" 2>&1; then
  grep -qi 'env.file\|\.env' "$work/config.log" || { cat "$work/config.log"; fail "compose config"; }
  # docker-compose v1 and compose v2 before 2.34 read every service's env_file.
  : >"$project_dir/.env"
  env_note="an empty .env: ${compose[*]} $("${compose[@]}" version --short 2>/dev/null || true) reads every service's env_file"
  compose_in --profile demo config -q || fail "compose config with an empty .env"
fi
demo_port=$(free_port)
RELAY_PORT=$demo_port compose_in --profile demo up -d --no-build >"$work/up.log" 2>&1 ||
  { cat "$work/up.log"; compose_in --profile demo logs | tail -30; fail "compose --profile demo up"; }
answer=$(post_until_sent "$demo_port" "$BODY" 60) ||
  { compose_in --profile demo logs | tail -30; fail "demo: no SENT envelope: $answer"; }
say "compose demo (no secret, $env_note) answered: $answer"

# --- compose: the live profile, key from a compose secret, settings from .env --------------
# Its gateway is the demo's mock, which accepts only $DEMO_KEY: a SENT proves the secret file
# was read (and its newline trimmed) and the header injected.
cat >"$project_dir/.env" <<ENV
LIPACHAT_BASE_URL=http://mock-gateway:8080
RELAY_MAX_ATTEMPTS=2
RELAY_LOG_FORMAT=text
ENV
mkdir -p "$project_dir/secrets"
printf '%s\n' "$DEMO_KEY" >"$project_dir/secrets/lipachat_api_key"
chmod 0444 "$project_dir/secrets/lipachat_api_key"
live_port=$(free_port)
RELAY_PORT=$live_port compose_in --profile live up -d --no-build relay >"$work/up.log" 2>&1 ||
  { cat "$work/up.log"; fail "compose --profile live up relay"; }
relay_id=$(compose_in --profile live ps -q relay)
wait_healthy "$relay_id" 60
answer=$(post_until_sent "$live_port" "${BODY/ct-1/ct-2}" 30) ||
  { docker logs "$relay_id" 2>&1 | tail -30; fail "live: no SENT envelope: $answer"; }
say "compose live relay (healthy; key from the secret) answered: $answer"
inspect() { docker inspect -f "$1" "$relay_id"; }
[ "$(inspect '{{.HostConfig.ReadonlyRootfs}}')" = true ] || fail "live relay: root filesystem writable"
[ "$(inspect '{{.HostConfig.CapDrop}}')" = '[ALL]' ] || fail "live relay: cap_drop is $(inspect '{{.HostConfig.CapDrop}}')"
[ "$(inspect '{{.HostConfig.Memory}}')" = 134217728 ] || fail "live relay: memory limit $(inspect '{{.HostConfig.Memory}}')"
# shellcheck disable=SC2016 # a Go template, not shell
[ "$(inspect '{{range $p, $b := .HostConfig.PortBindings}}{{range $b}}{{.HostIp}} {{end}}{{end}}')" = '127.0.0.1 ' ] ||
  fail "live relay: port not published on 127.0.0.1 only"
inspect '{{range .Config.Env}}{{println .}}{{end}}' | grep -qx 'RELAY_MAX_ATTEMPTS=2' || fail "live relay: .env not applied"
inspect '{{range .Config.Env}}{{println .}}{{end}}' | grep -q '^LIPACHAT_API_KEY=' && fail "live relay: the key is in its environment"
say "compose live relay: read_only, cap_drop ALL, 128 MiB, 127.0.0.1 only, .env applied, key only as a file"

# --- compose: the replicas profile, two relays sharing one Redis --------------------------
# A send through relay-a, then the same through relay-b: b replays a's answer (shared window),
# and the mock gateway saw the messageId once.
lock_cache
build_redis_standin
unlock_cache
a_port=$(free_port) b_port=$(free_port) mock_port=$(free_port)
REDIS_IMAGE=$REDIS_STANDIN_IMAGE RELAY_A_PORT=$a_port RELAY_B_PORT=$b_port MOCK_PORT=$mock_port \
  compose_in --profile replicas up -d --no-build >"$work/up.log" 2>&1 ||
  { cat "$work/up.log"; compose_in --profile replicas logs | tail -30; fail "compose --profile replicas up"; }
for service in redis relay-a relay-b; do
  wait_healthy "$(compose_in --profile replicas ps -q "$service")" 60
done
say "compose replicas: redis ($REDIS_STANDIN_IMAGE), relay-a, relay-b healthy"
REPLICA_BODY=${BODY/ct-1/ct-3}
from_a=$(post_until_sent "$a_port" "$REPLICA_BODY" 30) ||
  { compose_in --profile replicas logs | tail -30; fail "replicas: relay-a answered no SENT envelope: $from_a"; }
curl -s -D "$work/b.headers" -o "$work/b.body" --max-time 10 "http://127.0.0.1:$b_port/media" \
  -H 'Content-Type: application/json' -d "$REPLICA_BODY" || fail "replicas: relay-b did not answer"
from_b=$(cat "$work/b.body")
head -1 "$work/b.headers" | grep -q ' 200' || fail "replicas: relay-b answered $(head -1 "$work/b.headers")"
grep -qi '^idempotent-replayed: true' "$work/b.headers" ||
  { compose_in --profile replicas logs | tail -30; fail "replicas: relay-b sent again instead of replaying: $from_b"; }
[ "$from_b" = "$from_a" ] || fail "replicas: relay-b's replay differs from relay-a's answer"
sent=$(curl -s --max-time 5 "http://127.0.0.1:$mock_port/mock/sends")
times=$(printf '%s' "$sent" | python3 -c 'import json,sys; print(json.load(sys.stdin)["messageIds"].count("ct-3"))') ||
  fail "replicas: GET /mock/sends answered $sent"
[ "$times" = 1 ] || fail "replicas: the mock gateway saw ct-3 $times times: $sent"
say "compose replicas: sent through relay-a, replayed by relay-b (idempotent-replayed: true, same body); GET /mock/sends: ct-3 once"

ids=$(compose_in --profile demo --profile live --profile replicas ps -q)
compose_in --profile demo --profile live --profile replicas stop >/dev/null 2>&1 || fail "compose stop"
for id in $ids; do
  code=$(docker inspect -f '{{.State.ExitCode}}' "$id")
  [ "$code" = 0 ] || fail "$(docker inspect -f '{{.Name}}' "$id") exited $code on stop"
done
say "compose stop: every container ($(echo "$ids" | wc -w)) exited 0"

say "PASSED in $(($(date +%s) - t_start))s (image $((image_bytes / 1000)) kB, binary $((binary_bytes / 1000)) kB, build ${build_secs}s)"
