#!/usr/bin/env bash
# Regenerates pgo/raftgate.profdata.gz, the execution profile the release build is optimised
# with (profile-guided optimisation; scripts/lib.sh passes it to rustc as `-Cprofile-use`).
#
# It builds an instrumented raftgate (`-Cprofile-generate`, a target dir of its own), runs it
# as one node under the data plane's traffic, then merges the counters with llvm-profdata:
#   - HTTP/1.1 through the full pipeline (API key, RBAC, a per-key limit, audit), the most;
#   - the open route (no key), refused keys (401) and a spent limit (429);
#   - HTTP/2 (h2load, prior knowledge) through the full pipeline;
#   - the same over TLS (a second node with a throwaway certificate; HTTP/1.1 and h2 by ALPN);
#   - the admin API: keys issued, rotated and revoked, the audit trail and /metrics read.
# Code the traffic does not reach (Raft elections, snapshots, the chaos paths) is optimised for
# size, as LLVM does for code a profile calls cold; it is not on the request path.
#
# When to run it: after a change to the request path (proxy/), and whenever scripts/lib.sh
# warns that the profile was made for another rustc or crate graph (a new rustc, a dependency
# bump or a feature change: then it fits few functions or none). A stale profile is safe: LLVM
# ignores the counters of any function whose control flow changed, so such functions are
# optimised as without PGO.
# Needs llvm-profdata of LLVM 19 or newer (Debian 12: llvm-19), installed here.
# Commit the new pgo/raftgate.profdata.gz and pgo/raftgate.fingerprint; the next build through
# scripts/ uses them.
# Usage: scripts/pgo-profile.sh   (about 10 minutes after a warm build, 25 from cold)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
install_bench_tools
install_tool_packages llvm-19 nghttp2-client openssl
GEN_DIR="${CARGO_TARGET_DIR:-target}/pgo-generate"
W=$(mktemp -d)
# A fixed path: it is in the build's RUSTFLAGS, and the same flags let the next run reuse the build.
RAW="$GEN_DIR/profraw"
# The counters are matched to functions by symbol name, and cargo's symbol hashes follow the
# rustc version, whether `--target` was given, and the crate graph with its features (not
# RUSTFLAGS or the target dir). So this is the build the scripts ship, benchmark and test
# (`--workspace --bins`, the same graph as `--bin raftgate` and, for raftgate, as the test
# build's: node/Cargo.toml), in a target dir of its own. pgo/raftgate.fingerprint records that
# graph and the rustc, and lib.sh warns when a build's differ. RUSTFLAGS replaces lib.sh's, so
# the old profile plays no part in the new one.
RUSTFLAGS="-Cprofile-generate=$RAW" cargo build --release --locked --bin raftgate --target-dir "$GEN_DIR"
BIN="$GEN_DIR/release/raftgate"
# The build scripts and proc macros were instrumented too, and wrote counters while they ran.
rm -rf "$RAW"

UP=18080; RG=18082; ADM=18083; RAFT=18084
trap 'kill $(cat $W/*.pid 2>/dev/null) 2>/dev/null; nginx -c $W/upstream.conf -s stop 2>/dev/null || true; rm -rf $W' EXIT
nginx_upstream_conf "$W/upstream.conf" $UP
nginx -c "$W/upstream.conf"
head -c 32 /dev/urandom | base64 > "$W/token"
T=$(cat "$W/token")
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null

# node NAME [SERVE-FLAGS...]: starts the instrumented node, installs the benchmark policy and a
# 429 route and an open route, and leaves a key of consumer `bench` in $W/NAME.key.
node() {
    local name=$1; shift
    setsid "$BIN" serve --id 1 --data-dir "$W/$name" --raft-addr 127.0.0.1:$RAFT --admin-addr 127.0.0.1:$ADM \
        --proxy-addr 127.0.0.1:$RG --admin-token-file "$W/token" "$@" >"$W/$name.log" 2>&1 &
    echo $! > "$W/$name.pid"
    bench_policy $ADM "$T" $UP > "$W/$name.key"
    bench_api $ADM "$T" PUT /v1/rate-limits/tiny '{"limit":1,"window_s":3600,"per":"key"}' >/dev/null
    bench_api $ADM "$T" PUT /v1/routes/limited "{\"path_prefix\":\"/limited\",\"upstreams\":[\"http://127.0.0.1:$UP\"],\"rate_limits\":[\"tiny\"]}" >/dev/null
    bench_api $ADM "$T" PUT /v1/routes/open "{\"path_prefix\":\"/open\",\"upstreams\":[\"http://127.0.0.1:$UP\"],\"auth\":[\"none\"]}" >/dev/null
}
# stop NAME: SIGTERM, and wait for the node to drain and exit: the counters are written at exit.
stop() {
    local pid; pid=$(cat "$W/$1.pid")
    kill -TERM "$pid"
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
    echo "node $1 did not exit within 30 s; its profile is lost" >&2; return 1
}
BAD="rgk_000000000000000000000000000000000000000000000000aa"
admin_traffic() {
    local id
    for _ in $(seq 1 20); do
        id=$(bench_api $ADM "$T" POST /v1/keys '{"consumer":"bench"}' | sed 's/.*"id":"\([^"]*\)".*/\1/')
        bench_api $ADM "$T" POST "/v1/keys/$id/rotate" '{"grace_s":60}' >/dev/null
        bench_api $ADM "$T" POST "/v1/keys/$id/revoke" >/dev/null
    done
    bench_api $ADM "$T" GET '/v1/audit?limit=100' >/dev/null
    curl -fsS "http://127.0.0.1:$ADM/metrics" >/dev/null
}

node plain
KEY=$(cat "$W/plain.key")
wrk -t2 -c64 -d20s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$RG/orders/1" >/dev/null
wrk -t2 -c64 -d3s "http://127.0.0.1:$RG/open/x" >/dev/null
wrk -t2 -c64 -d3s -H "Authorization: Bearer $BAD" "http://127.0.0.1:$RG/orders/1" >/dev/null
wrk -t2 -c64 -d3s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$RG/limited/x" >/dev/null
h2load -n 100000 -c 16 -m 8 -H "x-api-key: $KEY" "http://127.0.0.1:$RG/orders/1" >/dev/null
admin_traffic
stop plain

node tls --proxy-tls-cert-file "$W/cert.pem" --proxy-tls-key-file "$W/key.pem"
KEY=$(cat "$W/tls.key")
wrk -t2 -c64 -d5s -H "Authorization: Bearer $KEY" "https://127.0.0.1:$RG/orders/1" >/dev/null
h2load -n 50000 -c 16 -m 8 -H "x-api-key: $KEY" "https://127.0.0.1:$RG/orders/1" >/dev/null
stop tls

mkdir -p pgo
llvm-profdata-19 merge -o "$W/raftgate.profdata" "$RAW"/*.profraw
# gzip (in every Debian install) without a name or time in it: the same profile, the same bytes.
gzip -9n -c "$W/raftgate.profdata" > pgo/raftgate.profdata.gz
{
    echo "# What pgo/raftgate.profdata.gz fits (scripts/pgo-profile.sh wrote it; scripts/lib.sh checks it)."
    pgo_fingerprint
} > pgo/raftgate.fingerprint
echo "pgo/raftgate.profdata.gz: $(du -h pgo/raftgate.profdata.gz | cut -f1), $(llvm-profdata-19 show "$W/raftgate.profdata" | sed -n 's/^Total functions: //p') functions"
