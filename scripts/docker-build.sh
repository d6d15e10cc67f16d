#!/usr/bin/env bash
# Builds the raftgate:local image from a binary compiled on the host.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
scripts/docker-base-image.sh
cargo build --release --locked --bin raftgate
CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
cp docker/Dockerfile "$CTX/"
cp "$CARGO_TARGET_DIR/release/raftgate" "$CTX/raftgate"
# The image needs no debug info (the host binary keeps it for profiling).
strip --strip-debug "$CTX/raftgate"
docker build -q -t "${RAFTGATE_IMAGE:-raftgate:local}" "$CTX" >/dev/null
echo "==> built ${RAFTGATE_IMAGE:-raftgate:local}"
