#!/usr/bin/env bash
# Runs the whole test suite. Installs moto[server] (the local S3/KMS server),
# openapi-spec-validator and schemathesis into a virtualenv on first use, and strace (Debian) when
# missing; starts moto on a free loopback port, builds the binaries the
# end-to-end tests drive, and runs every test of the workspace, including the
# corpus tests that read ../shared/data.
# Extra arguments go to `cargo test`.
set -euo pipefail
cd "$(dirname "$0")/.."

MOTO_VERSION="5.2.5"
# The API contract test validates the served OpenAPI document with it.
VALIDATOR_VERSION="0.9.0"
# The API fuzz test runs it against the real server.
SCHEMATHESIS_VERSION="4.32.5"
VENV="${BILLVAULT_MOTO_VENV:-$HOME/.cache/vault-moto-venv}"
if ! "$VENV/bin/python" -c "import moto, sys; sys.exit(moto.__version__ != '$MOTO_VERSION')" 2>/dev/null; then
  echo "== installing moto[server]==$MOTO_VERSION into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$MOTO_VERSION"
fi
if ! "$VENV/bin/pip" show openapi-spec-validator 2>/dev/null | grep -x "Version: $VALIDATOR_VERSION" >/dev/null; then
  echo "== installing openapi-spec-validator==$VALIDATOR_VERSION into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "openapi-spec-validator==$VALIDATOR_VERSION"
fi
if ! "$VENV/bin/pip" show schemathesis 2>/dev/null | grep -x "Version: $SCHEMATHESIS_VERSION" >/dev/null; then
  echo "== installing schemathesis==$SCHEMATHESIS_VERSION into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

# strace: the durability test traces the server's fsyncs (a Debian package).
if ! command -v strace >/dev/null; then
  echo "== installing strace"
  if command -v apt-get >/dev/null; then
    timeout 300 apt-get install -y -qq strace >/dev/null 2>&1 ||
      { timeout 300 apt-get update -qq >/dev/null 2>&1 && timeout 300 apt-get install -y -qq strace >/dev/null 2>&1; } ||
      echo "strace could not be installed: the durability test will fail and say so"
  fi
fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
log="$(mktemp -t vault-moto.XXXXXX.log)"
# moto_server with S3's atomic conditional writes (see the script for why).
"$VENV/bin/python" infra/moto_atomic.py -H 127.0.0.1 -p "$port" >"$log" 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then break; fi
  sleep 0.2
done
python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" || { echo "moto_server did not start:"; cat "$log"; exit 1; }
echo "== moto_server on 127.0.0.1:$port"
export BILLVAULT_TEST_MOTO_URL="http://127.0.0.1:$port"
export PATH="$VENV/bin:$PATH"

echo "== building"
cargo build --workspace --bins
echo "== testing"
results="$(mktemp -t vault-test-results.XXXXXX)"
set +e
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$results"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole suite (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1) } }
     END { printf "%d passed, %d failed\n", p, f }' "$results"
exit "$status"
