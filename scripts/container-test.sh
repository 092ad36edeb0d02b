#!/usr/bin/env bash
# Container test: builds the image from the Dockerfile and checks what an SRE relies on.
#
# No image can be pulled here, so it first builds local stand-ins for the Dockerfile's two
# base images and passes them as build args:
#   - builder: a minimal Debian bookworm (debootstrap, with gcc) plus this machine's Rust
#     toolchain, in place of rust:1-bookworm;
#   - runtime: glibc, CA certificates and /etc/passwd only, in place of
#     gcr.io/distroless/cc-debian12:nonroot.
# The crates are vendored into the build context, so the build needs no network.
# Stand-ins are cached as Docker images, and the Debian tree under
# ${LIPACHAT_CI_CACHE:-/var/cache/lipachat-relay-ci}; bump STANDIN_VERSION to rebuild them.
#
# Then: build the image, start it, wait for `docker inspect` to say healthy, send a request
# through the compose `demo` profile and expect a SENT envelope, check the user is not root
# and the root filesystem is read-only, `docker stop` exits 0 within the grace time, and
# print the image and binary sizes. Skips (exit 0, saying so) when no Docker engine answers.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'container-test: %s\n' "$*" >&2; }
fail() { say "FAILED: $*"; exit 1; }

if ! command -v docker >/dev/null 2>&1 || ! docker info >/dev/null 2>&1; then
  say "SKIPPED: no Docker engine answers"
  exit 0
fi
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null 2>&1; then
  compose=(docker-compose)
else
  apt-get install -y -qq docker-compose >/dev/null 2>&1 || true
  command -v docker-compose >/dev/null 2>&1 || fail "no docker compose tool"
  compose=(docker-compose)
fi
# The classic builder when BuildKit's buildx is not installed.
docker buildx version >/dev/null 2>&1 || export DOCKER_BUILDKIT=0

STANDIN_VERSION=1
CACHE=${LIPACHAT_CI_CACHE:-/var/cache/lipachat-relay-ci}
RUST_VERSION=$(rustc --version | awk '{print $2}')
BUILDER_IMAGE=lipachat-relay-ci/rust:${RUST_VERSION}-bookworm-v${STANDIN_VERSION}
RUNTIME_IMAGE=lipachat-relay-ci/distroless-cc:bookworm-v${STANDIN_VERSION}
IMAGE=lipachat-relay:container-test
PROJECT=lipachat-relay-ct
NAME=lipachat-relay-ct-$$
work=$(mktemp -d)
created_env=0

cleanup() {
  docker rm -f "$NAME" "$NAME-size" >/dev/null 2>&1 || true
  if [ ${#compose[@]} -gt 0 ]; then
    RELAY_IMAGE=$IMAGE "${compose[@]}" -p "$PROJECT" --profile demo down -v >/dev/null 2>&1 || true
  fi
  [ "$created_env" = 1 ] && rm -f .env
  rm -rf "$work"
}
trap cleanup EXIT

rootfs() {
  local dir=$CACHE/bookworm-v$STANDIN_VERSION
  if [ ! -f "$dir/.complete" ]; then
    command -v debootstrap >/dev/null 2>&1 || apt-get install -y -qq debootstrap >/dev/null
    say "debootstrap bookworm into $dir (once)"
    rm -rf "$dir"
    mkdir -p "$CACHE"
    debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates \
      bookworm "$dir" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 \
      || { tail -20 "$CACHE/debootstrap.log"; fail "debootstrap"; }
    touch "$dir/.complete"
  fi
  echo "$dir"
}

build_builder_standin() {
  docker image inspect "$BUILDER_IMAGE" >/dev/null 2>&1 && return
  local root sysroot
  root=$(rootfs)
  sysroot=$(rustc --print sysroot)
  say "builder stand-in $BUILDER_IMAGE: Debian + Rust $RUST_VERSION from $sysroot"
  # The toolchain without docs and sources: cargo, rustc, their libraries, the std rlibs.
  tar -C "$root" -cf "$work/builder.tar" --exclude='./proc/*' --exclude='./sys/*' --exclude='./dev/*' .
  tar -C "$sysroot" -rf "$work/builder.tar" --exclude=lib/rustlib/src --exclude=lib/rustlib/rustc-src \
    --transform='s,^,usr/local/rust/,S' bin/cargo bin/rustc lib
  docker import \
    --change 'ENV PATH=/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_HOME=/usr/local/cargo' \
    "$work/builder.tar" "$BUILDER_IMAGE" >/dev/null
  rm -f "$work/builder.tar"
}

build_runtime_standin() {
  docker image inspect "$RUNTIME_IMAGE" >/dev/null 2>&1 && return
  local root dir
  root=$(rootfs)
  dir=$work/runtime
  say "runtime stand-in $RUNTIME_IMAGE: glibc, CA certificates, nonroot user"
  mkdir -p "$dir"/{etc/ssl/certs,lib/x86_64-linux-gnu,lib64,tmp,home/nonroot}
  for lib in libc.so.6 libm.so.6 libgcc_s.so.1 ld-linux-x86-64.so.2; do
    cp -L "$root/lib/x86_64-linux-gnu/$lib" "$dir/lib/x86_64-linux-gnu/"
  done
  ln -s /lib/x86_64-linux-gnu/ld-linux-x86-64.so.2 "$dir/lib64/ld-linux-x86-64.so.2"
  cp -L "$root/etc/ssl/certs/ca-certificates.crt" "$dir/etc/ssl/certs/"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
  chmod 1777 "$dir/tmp"
  chown 65532:65532 "$dir/home/nonroot"
  tar -C "$dir" -c . | docker import - "$RUNTIME_IMAGE" >/dev/null
}

build_context() {
  # The repository as git knows it (no target/), plus vendored crates for an offline build.
  local ctx=$work/context
  mkdir -p "$ctx"
  git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$ctx/"
  cp .dockerignore "$ctx/" 2>/dev/null || true
  say "vendoring crates into the build context"
  (cd "$ctx" && cargo vendor --locked --quiet vendor >/dev/null) || fail "cargo vendor"
  mkdir -p "$ctx/.cargo"
  cat >"$ctx/.cargo/config.toml" <<'TOML'
[source.crates-io]
replace-with = "vendored-sources"
[source.vendored-sources]
directory = "vendor"
TOML
  echo "$ctx"
}

build_builder_standin
build_runtime_standin
ctx=$(build_context)

say "building $IMAGE"
started=$(date +%s)
docker build -q -t "$IMAGE" \
  --build-arg BUILDER_IMAGE="$BUILDER_IMAGE" \
  --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" \
  "$ctx" >/dev/null || fail "docker build"
build_secs=$(( $(date +%s) - started ))
image_bytes=$(docker image inspect -f '{{.Size}}' "$IMAGE")
docker create --name "$NAME-size" "$IMAGE" >/dev/null
docker cp "$NAME-size:/usr/local/bin/lipachat-relay" "$work/lipachat-relay"
docker rm "$NAME-size" >/dev/null
binary_bytes=$(stat -c %s "$work/lipachat-relay")
say "built in ${build_secs}s; runtime image $((image_bytes / 1000)) kB, binary $((binary_bytes / 1000)) kB"
[ "$image_bytes" -lt 30000000 ] || fail "runtime image is not under 30 MB"

# 1. The image alone, hardened as compose runs it: healthy, non-root, read-only.
grace=5
docker run -d --name "$NAME" --read-only --cap-drop ALL --security-opt no-new-privileges:true \
  -e RELAY_SHUTDOWN_GRACE_SECS=$grace "$IMAGE" serve --mock-upstream >/dev/null
status=starting
for _ in $(seq 1 60); do
  status=$(docker inspect -f '{{.State.Health.Status}}' "$NAME")
  [ "$status" = healthy ] && break
  [ "$(docker inspect -f '{{.State.Running}}' "$NAME")" = true ] || break
  sleep 1
done
[ "$status" = healthy ] || { docker logs "$NAME" | tail -20; fail "container not healthy ($status)"; }
say "docker inspect: healthy"
user=$(docker inspect -f '{{.Config.User}}' "$NAME")
case "$user" in "" | 0 | 0:* | root | root:*) fail "runs as root ($user)" ;; esac
say "user: $user"
[ "$(docker inspect -f '{{.HostConfig.ReadonlyRootfs}}' "$NAME")" = true ] || fail "root filesystem writable"
# The image has no shell to try a write with; docker itself must refuse to copy a file in.
if docker cp "$work/lipachat-relay" "$NAME:/tmp/probe" >/dev/null 2>&1; then
  fail "a file could be copied into the root filesystem"
fi
say "root filesystem: read-only"
started=$(date +%s%N)
docker stop -t $((grace + 5)) "$NAME" >/dev/null
stop_ms=$(( ($(date +%s%N) - started) / 1000000 ))
code=$(docker inspect -f '{{.State.ExitCode}}' "$NAME")
[ "$code" = 0 ] || { docker logs "$NAME" | tail -20; fail "exit code $code after docker stop"; }
[ "$stop_ms" -lt $(( (grace + 1) * 1000 )) ] || fail "stop took ${stop_ms} ms"
say "docker stop: exit code 0 after ${stop_ms} ms"
docker rm "$NAME" >/dev/null

# 2. The compose demo profile: relay + mock gateway, no secret.
if [ ! -f .env ]; then
  cp .env.example .env
  created_env=1
fi
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
export RELAY_IMAGE=$IMAGE RELAY_PORT=$port
"${compose[@]}" -p "$PROJECT" --profile demo up -d --no-build >/dev/null 2>&1 \
  || { "${compose[@]}" -p "$PROJECT" --profile demo logs | tail -30; fail "compose up"; }
answer=""
for _ in $(seq 1 60); do
  answer=$(curl -s "http://127.0.0.1:$port/media" -H 'content-type: application/json' \
    -d '{"messageId":"ct-1","mediaType":"IMAGE","mediaUrl":"https://example.com/a.png","from":"254110090747","to":"254712345678"}' || true)
  case "$answer" in *'"status":"SENT"'*) break ;; esac
  sleep 1
done
case "$answer" in
  *'"status":"SENT"'*) say "compose demo answered: $answer" ;;
  *) "${compose[@]}" -p "$PROJECT" --profile demo logs | tail -30; fail "no SENT envelope: $answer" ;;
esac
"${compose[@]}" -p "$PROJECT" --profile demo down -v >/dev/null 2>&1

say "PASSED (image $((image_bytes / 1000)) kB, binary $((binary_bytes / 1000)) kB, build ${build_secs}s)"
