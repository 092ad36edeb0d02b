#!/usr/bin/env bash
# Runs schemathesis, every check, against the relay started with --mock-upstream, using the
# OpenAPI document the relay serves: every send path and its gateway alias (one per row of
# src/sends SEND_TYPES), GET /templates and its alias, and the ops routes. The paths come from
# the document alone, so a new send type or route is covered once it is documented
# (schemathesis leaves out /openapi.json itself, the document it was given).
# scripts/schemathesis_hooks.py adds what the schema cannot say (unique messageIds, the list's
# 10 rows in all). Installs schemathesis from PyPI if it is missing.
# Usage: bash scripts/schemathesis.sh        (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
if ! command -v st >/dev/null 2>&1 || ! st --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  python3 -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
  hash -r
fi

cargo build --locked --quiet
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()')
# Rate limits off: generated requests reuse example phone numbers far faster than WhatsApp's
# limits allow, and a 429 to schema-valid data would read as a contract failure. The limits
# have their own tests (tests/api/limits.rs).
RELAY_LISTEN="127.0.0.1:$port" RELAY_SENDER_RATE=0 RELAY_PAIR_INTERVAL_MS=0 RUST_LOG=warn \
  ./target/debug/lipachat-relay serve --mock-upstream &
relay=$!
trap 'kill "$relay" 2>/dev/null || true; wait "$relay" 2>/dev/null || true' EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.05
done

SCHEMATHESIS_HOOKS=scripts/schemathesis_hooks.py \
  st --config-file scripts/schemathesis.toml run "http://127.0.0.1:$port/openapi.json" \
  --checks all --max-examples 100 --no-color
