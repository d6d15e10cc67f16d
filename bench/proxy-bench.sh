#!/usr/bin/env bash
# Data-plane benchmark (../shared/reference/benchmarks.md protocol): one fast upstream (nginx
# returning a static 200), wrk at fixed connections, interleaved rounds of
#   (a) direct to the upstream, (b) nginx as a keep-alive reverse proxy with no checks,
#   (c) raftgate with key auth + RBAC + rate limit + audit,
# plus the invalid-key flood and the 429 path. Prints req/s, ratios, CPU per request, and p99 at
# a fixed rate of half of nginx's throughput (oha, open loop).
# Usage: bench/proxy-bench.sh [rounds] [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
ROUNDS=${1:-3}; SECS=${2:-10}; CONNS=${3:-64}
install_bench_tools
cargo build --release --locked --workspace --bins >/dev/null
BIN="$CARGO_TARGET_DIR/release/raftgate"
W=$(mktemp -d); trap 'kill $(cat $W/rg.pid 2>/dev/null) 2>/dev/null; nginx -c $W/upstream.conf -s stop 2>/dev/null || true; nginx -c $W/proxy.conf -s stop 2>/dev/null || true; rm -rf $W' EXIT
UP=18080; NGX=18081; RG=18082; ADM=18083; RAFT=18084
# The fair protocol (benchmarks.md §5): the upstream is its own nginx with 1 worker; the nginx
# proxy gets as many workers as raftgate has proxy threads (one per core).
THREADS=$(nproc)
nginx_upstream_conf "$W/upstream.conf" $UP
nginx_proxy_conf "$W/proxy.conf" $NGX $UP "$THREADS"
nginx -c "$W/upstream.conf"
nginx -c "$W/proxy.conf"
sleep 0.5
NGX_WORKERS=$(pgrep -P "$(cat "$W/proxy.conf.pid")" | tr '\n' ' ')

head -c 32 /dev/urandom | base64 > "$W/token"
"$BIN" serve --id 1 --data-dir "$W/rg" --raft-addr 127.0.0.1:$RAFT --admin-addr 127.0.0.1:$ADM \
    --proxy-addr 127.0.0.1:$RG --admin-token-file "$W/token" >"$W/rg.log" 2>&1 &
echo $! > "$W/rg.pid"
RGPID=$(cat "$W/rg.pid")
T=$(cat "$W/token")
KEY=$(bench_policy $ADM "$T" $UP)
# The 429 path: a route whose per-key limit is spent after one request.
bench_api $ADM "$T" PUT /v1/rate-limits/tiny '{"limit":1,"window_s":3600,"per":"key"}' >/dev/null
bench_api $ADM "$T" PUT /v1/routes/limited "{\"path_prefix\":\"/limited\",\"upstreams\":[\"http://127.0.0.1:$UP\"],\"rate_limits\":[\"tiny\"]}" >/dev/null
BAD="rgk_000000000000000000000000000000000000000000000000aa"

cpu_ticks() { local t=0 p; for p in "$@"; do t=$((t + $(awk '{print $14+$15}' /proc/"$p"/stat))); done; echo $t; }
# split_ticks PID...: "proxy-user proxy-sys other-user other-sys" over the threads of the given
# processes, where proxy threads are raftgate's `proxy-N` (every thread of nginx counts as proxy).
split_ticks() {
    local p
    for p in "$@"; do
        for t in /proc/"$p"/task/*; do echo "$(cat "$t/comm") $(awk '{print $14, $15}' "$t/stat")"; done
    done | awk '{ if ($1 ~ /^proxy-/ || $1 ~ /^nginx/) { pu += $2; ps += $3 } else { ou += $2; os += $3 } }
                END { print pu + 0, ps + 0, ou + 0, os + 0 }'
}
run() { # name url [header]
    local name=$1 url=$2 hdr=${3:-} out rps
    if [ -n "$hdr" ]; then out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency -H "$hdr" "$url"); else out=$(wrk -t2 -c"$CONNS" -d"${SECS}s" --latency "$url"); fi
    rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
    p99=$(echo "$out" | awk '/ 99%/ {print $2}')
    echo "$name $rps $p99"
}
declare -A SUM SPLIT
echo "rounds=$ROUNDS seconds=$SECS connections=$CONNS (wrk -t2), nginx $(nginx -v 2>&1 | cut -d/ -f2): upstream 1 worker, proxy $THREADS workers; raftgate $THREADS proxy threads"
for r in $(seq 1 "$ROUNDS"); do
    for case in direct nginx raftgate flood limited; do
        t0=$(cpu_ticks "$RGPID"); n0=$(cpu_ticks $NGX_WORKERS)
        s0=$(split_ticks "$RGPID"); m0=$(split_ticks $NGX_WORKERS)
        case $case in
            direct) line=$(run direct "http://127.0.0.1:$UP/") ;;
            nginx) line=$(run nginx "http://127.0.0.1:$NGX/") ;;
            raftgate) line=$(run raftgate "http://127.0.0.1:$RG/orders/1" "Authorization: Bearer $KEY") ;;
            flood) line=$(run flood "http://127.0.0.1:$RG/orders/1" "Authorization: Bearer $BAD") ;;
            limited) line=$(run limited "http://127.0.0.1:$RG/limited/x" "Authorization: Bearer $KEY") ;;
        esac
        t1=$(cpu_ticks "$RGPID"); n1=$(cpu_ticks $NGX_WORKERS)
        s1=$(split_ticks "$RGPID"); m1=$(split_ticks $NGX_WORKERS)
        rps=$(echo "$line" | awk '{print $2}')
        # Where the CPU went, summed over the rounds: ticks and requests served.
        if [ "$case" = raftgate ]; then
            SPLIT[rg]=$(echo "${SPLIT[rg]:-0 0 0 0 0}" $s0 $s1 "$rps" | awk -v s="$SECS" '{
                printf "%d %d %d %d %.0f", $1 + $10 - $6, $2 + $11 - $7, $3 + $12 - $8, $4 + $13 - $9, $5 + $14 * s }')
        elif [ "$case" = nginx ]; then
            SPLIT[ngx]=$(echo "${SPLIT[ngx]:-0 0 0 0 0}" $m0 $m1 "$rps" | awk -v s="$SECS" '{
                printf "%d %d %d %d %.0f", $1 + $10 - $6, $2 + $11 - $7, $3 + $12 - $8, $4 + $13 - $9, $5 + $14 * s }')
        fi
        echo "round $r: $line  raftgate-cpu-ticks=$((t1 - t0)) nginx-proxy-cpu-ticks=$((n1 - n0))"
        SUM[$case]="${SUM[$case]:-} $rps"
        if [ "$case" = nginx ]; then
            SUM[ngx_cpu]="${SUM[ngx_cpu]:-} $(awk -v t=$((n1 - n0)) -v r="$rps" -v s="$SECS" 'BEGIN{ printf "%.1f", t*10000/(r*s) }')"
        fi
        if [ "$case" = raftgate ]; then
            SUM[rg_cpu]="${SUM[rg_cpu]:-} $(awk -v t=$((t1 - t0)) -v r="$rps" -v s="$SECS" 'BEGIN{ printf "%.1f", t*10000/(r*s) }')"
        fi
    done
done
median() { echo "$@" | tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
D=$(median ${SUM[direct]}); N=$(median ${SUM[nginx]}); G=$(median ${SUM[raftgate]}); F=$(median ${SUM[flood]}); L=$(median ${SUM[limited]})
echo
echo "median req/s: direct $D | nginx proxy $N | raftgate full pipeline $G | invalid-key flood $F | 429 path $L"
awk -v d="$D" -v n="$N" -v g="$G" -v f="$F" 'BEGIN {
  printf "raftgate / direct = %.2f   raftgate / nginx = %.2f   flood / raftgate = %.2f\n", g/d, g/n, f/g }'
echo "CPU per proxied request (µs, user+sys, medians): raftgate $(median ${SUM[rg_cpu]}) | nginx proxy $(median ${SUM[ngx_cpu]})"
# 100 ticks a second: ticks * 10,000 / requests = µs per request.
echo "${SPLIT[rg]} ${SPLIT[ngx]}" | awk '{
    printf "CPU split (µs per request, all rounds): raftgate proxy threads user %.1f sys %.1f, other threads (audit writer, RocksDB, Raft) user %.1f sys %.1f | nginx proxy workers user %.1f sys %.1f\n",
        $1 * 10000 / $5, $2 * 10000 / $5, $3 * 10000 / $5, $4 * 10000 / $5, $6 * 10000 / $10, $7 * 10000 / $10 }'
# p99 at a fixed rate of half of nginx's median throughput (open loop, corrected for
# coordinated omission), nginx proxy and raftgate interleaved.
RATE=$(awk -v n="$N" 'BEGIN { printf "%d", n / 2 }')
fixed() { # name url [header]
    local out
    if [ -n "${3:-}" ]; then out=$("$OHA" -z "${SECS}s" -q "$RATE" -c "$CONNS" --no-tui --latency-correction --output-format json -H "$3" "$2"); \
    else out=$("$OHA" -z "${SECS}s" -q "$RATE" -c "$CONNS" --no-tui --latency-correction --output-format json "$2"); fi
    echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin); p=d["latencyPercentiles"]; print("%.3f %.3f %.4f" % (p["p50"]*1000, p["p99"]*1000, d["summary"]["successRate"]))'
}
for r in $(seq 1 "$ROUNDS"); do
    SUM[fx_nginx]="${SUM[fx_nginx]:-} $(fixed nginx "http://127.0.0.1:$NGX/" | awk '{print $2}')"
    SUM[fx_rg]="${SUM[fx_rg]:-} $(fixed raftgate "http://127.0.0.1:$RG/orders/1" "Authorization: Bearer $KEY" | awk '{print $2}')"
done
FXN=$(median ${SUM[fx_nginx]}); FXR=$(median ${SUM[fx_rg]})
echo "p99 at a fixed $RATE req/s (50 % of nginx's median; oha -c$CONNS, corrected; medians of $ROUNDS): nginx proxy $FXN ms | raftgate $FXR ms | added $(awk -v a="$FXR" -v b="$FXN" 'BEGIN { printf "%.3f", a - b }') ms"
echo "audit queue after the run: $(curl -fsS http://127.0.0.1:$ADM/metrics | grep -E '^raftgate_audit_(queue_depth|dropped)' | tr '\n' ' ')"
