#!/usr/bin/env bash
# Global rate-limit benchmark: starts nginx as a fast static upstream (for the throughput part),
# then runs chaos-tests' bench-global-limits (accuracy on 3 and 5 nodes, req/s and Raft entries
# under a global vs a local limit, p99 at a fixed rate with oha, revoke latency). Prints its figures.
# Usage: bench/global-bench.sh [windows] [seconds]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
WINDOWS=${1:-3}; SECS=${2:-10}
install_bench_tools
W=$(mktemp -d); trap 'nginx -c $W/nginx.conf -s stop 2>/dev/null || true; rm -rf $W' EXIT
UP=18090
nginx_upstream_conf "$W/nginx.conf" $UP
nginx -c "$W/nginx.conf"
cargo build --release --locked --workspace --bins >/dev/null
BENCH_OHA="$OHA" RAFTGATE_BIN="$CARGO_TARGET_DIR/release/raftgate" BENCH_UPSTREAM="http://127.0.0.1:$UP" "$CARGO_TARGET_DIR/release/bench-global-limits" --windows "$WINDOWS" --seconds "$SECS"
