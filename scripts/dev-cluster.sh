#!/usr/bin/env bash
# Sets everything up on a fresh Debian machine and runs a local 3-node cluster on loopback.
# Usage: scripts/dev-cluster.sh [start|stop|status]   (default: start)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh

ROOT="$PWD/.local-cluster"
BIN="$CARGO_TARGET_DIR/release/raftgate"
PEERS="1=127.0.0.1:7101,2=127.0.0.1:7102,3=127.0.0.1:7103"

stop() {
    for pidfile in "$ROOT"/node*.pid; do
        [ -f "$pidfile" ] || continue
        kill -TERM "$(cat "$pidfile")" 2>/dev/null || true
        rm -f "$pidfile"
    done
}

status() {
    for i in 1 2 3; do
        printf 'node %s: ' "$i"
        curl -fsS "http://127.0.0.1:720$i/v1/health" || printf 'down'
        echo
    done
}

start() {
    install_system_packages
    echo "==> building raftgate (first build compiles RocksDB: ~20 minutes on 2 cores)"
    cargo build --release --locked --bin raftgate
    mkdir -p "$ROOT"
    if [ ! -f "$ROOT/admin-token" ]; then
        (umask 077; head -c 32 /dev/urandom | base64 | tr -d '/+=' > "$ROOT/admin-token")
    fi
    stop
    for i in 1 2 3; do
        nohup "$BIN" serve --id "$i" --data-dir "$ROOT/node$i" \
            --raft-addr "127.0.0.1:710$i" --admin-addr "127.0.0.1:720$i" --proxy-addr "127.0.0.1:730$i" \
            --peers "$PEERS" --admin-token-file "$ROOT/admin-token" >"$ROOT/node$i.log" 2>&1 &
        echo $! >"$ROOT/node$i.pid"
    done
    for _ in $(seq 1 100); do
        if curl -fsS -H "Authorization: Bearer $(cat "$ROOT/admin-token")" http://127.0.0.1:7201/v1/consumers >/dev/null 2>&1; then
            break
        fi
        sleep 0.2
    done
    status
    cat <<MSG

raftgate is running: 3 nodes on loopback (logs and data in $ROOT).
  admin API:  http://127.0.0.1:7201  :7202  :7203   (any node)
  admin token: $ROOT/admin-token

Try it:
  export RAFTGATE_TOKEN_FILE=$ROOT/admin-token
  $BIN consumers create acme
  $BIN keys create --consumer acme          # the secret is shown once
  $BIN cluster status --addr http://127.0.0.1:7203
  curl -s -H "Authorization: Bearer \$(cat $ROOT/admin-token)" http://127.0.0.1:7202/v1/keys

Stop it: scripts/dev-cluster.sh stop
MSG
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac
