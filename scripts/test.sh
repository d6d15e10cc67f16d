#!/usr/bin/env bash
# Runs the whole test suite: unit, property, storage conformance and multi-process cluster
# tests. One cargo profile (release) serves tests, benches and the binary the tests start.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
install_system_packages

echo "==> building (target dir: $CARGO_TARGET_DIR)"
cargo build --release --locked --workspace --bins
export RAFTGATE_BIN="$CARGO_TARGET_DIR/release/raftgate"

echo "==> lints (rustfmt, clippy with warnings denied)"
cargo fmt --all --check
cargo clippy --release --locked --workspace --all-targets -- -D warnings

if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --release --locked --workspace --no-fail-fast
else
    echo "==> cargo-nextest not found; using cargo test"
    cargo test --release --locked --workspace --no-fail-fast
fi

# Container-level chaos: the docker-compose cluster, when a Docker Engine answers here.
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1 && command -v docker-compose >/dev/null 2>&1; then
    echo "==> container chaos test (docker-compose cluster)"
    scripts/docker-build.sh
    python3 scripts/docker-chaos.py
else
    echo "==> container chaos test skipped: no Docker Engine (or no docker-compose) answers on this machine"
fi
