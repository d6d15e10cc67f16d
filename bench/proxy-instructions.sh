#!/usr/bin/env bash
# Instructions per proxied request, raftgate against nginx, counted by valgrind's callgrind.
#
# Wall-clock figures on a shared 2-core machine move by ±20 % from run to run (docs/benchmarks.md),
# which hides any change of a few per cent. Instructions executed in user space do not depend on
# what else the machine is doing, so this is the figure to compare two builds with. It leaves
# out the kernel (the system calls per request are compared with strace; see benchmarks.md).
#
# Both proxies run under callgrind in front of the same nginx upstream (static 200). Each gets
# a warm-up, then collection is switched on for exactly N requests from oha (-c 8) and off
# again; everything the process executes in that window counts, background threads included
# (Raft heartbeats, the audit writer), as nginx has none.
# Usage: bench/proxy-instructions.sh [requests] [extra routes]
# Extra routes (default 0) are installed before counting, each with a prefix of its own
# (/svcN/v1), as a policy with many routes has; the measured requests still match the catch-all
# route `api`, the worst case for a router that tries routes one by one.
# RAFTGATE_BIN=path counts that binary instead of this tree's build.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/lib.sh
N=${1:-20000}; ROUTES=${2:-0}
install_bench_tools
install_tool_packages valgrind
if [ -n "${RAFTGATE_BIN:-}" ]; then
    BIN="$RAFTGATE_BIN"
else
    cargo build --release --locked --workspace --bins >/dev/null
    BIN="$CARGO_TARGET_DIR/release/raftgate"
fi
W=$(mktemp -d)
cleanup() {
    kill "$(cat "$W/rg.pid" 2>/dev/null)" "$(cat "$W/ngx.pid" 2>/dev/null)" 2>/dev/null || true
    nginx -c "$W/upstream.conf" -s stop 2>/dev/null || true
    [ -n "${KEEP:-}" ] && echo "kept $W" || rm -rf "$W"
}
trap cleanup EXIT
UP=18180; NGX=18181; RG=18182; ADM=18183; RAFT=18184
nginx_upstream_conf "$W/upstream.conf" $UP
# The peer: one nginx process (no master), so callgrind sees all of its work.
nginx_proxy_conf "$W/proxy.conf" $NGX $UP 1 "daemon off; master_process off;"
nginx -c "$W/upstream.conf"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/ngx.cg" \
    nginx -c "$W/proxy.conf" >"$W/ngx.log" 2>&1 &
echo $! > "$W/ngx.pid"

head -c 32 /dev/urandom | base64 > "$W/token"
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$W/rg.cg" \
    "$BIN" serve --id 1 --data-dir "$W/rg" --raft-addr 127.0.0.1:$RAFT --admin-addr 127.0.0.1:$ADM \
    --proxy-addr 127.0.0.1:$RG --admin-token-file "$W/token" >"$W/rg.log" 2>&1 &
echo $! > "$W/rg.pid"
KEY=$(bench_policy $ADM "$(cat "$W/token")" $UP)
for i in $(seq 1 "$ROUTES"); do
    bench_api $ADM "$(cat "$W/token")" PUT "/v1/routes/r$i" \
        "{\"path_prefix\":\"/svc$i/v1\",\"upstreams\":[\"http://127.0.0.1:$UP\"]}" >/dev/null
done
# The passthrough (benchmarks.md's S3): an open route, no key, no limit, audit still on; what
# the framework costs before any policy.
bench_api $ADM "$(cat "$W/token")" PUT /v1/routes/open \
    "{\"path_prefix\":\"/open\",\"upstreams\":[\"http://127.0.0.1:$UP\"],\"auth\":[\"none\"]}" >/dev/null
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$NGX/" >/dev/null 2>&1 && break; sleep 0.2; done

# dump NAME PID: the instructions counted since collection was last switched on (the newest
# dump's total), once callgrind has written it.
dump() {
    local name=$1 pid=$2 before
    before=$(ls "$W"/"$name".cg.* 2>/dev/null | wc -l)
    callgrind_control -d "$pid" >/dev/null
    for _ in $(seq 1 100); do
        [ "$(ls "$W"/"$name".cg.* 2>/dev/null | wc -l)" -gt "$before" ] && break
        sleep 0.1
    done
    grep -h '^totals:' "$(ls -t "$W"/"$name".cg.* | head -1)" | awk '{print $2}'
}
# count NAME PID URL [HEADER]: instructions over N requests after a warm-up, less what the
# process does when idle over the same time (timers, Raft heartbeats): "name Ir ok".
count() {
    local name=$1 pid=$2 url=$3 hdr=${4:-X-Bench: 1} out ok idle t0 t1 load
    "$OHA" -n 2000 -c 8 --no-tui -H "$hdr" "$url" >/dev/null
    callgrind_control -i on "$pid" >/dev/null
    sleep 5
    callgrind_control -i off "$pid" >/dev/null
    idle=$(dump "$name" "$pid")
    callgrind_control -i on "$pid" >/dev/null
    t0=$(date +%s.%N)
    out=$("$OHA" -n "$N" -c 8 --no-tui --output-format json -H "$hdr" "$url")
    t1=$(date +%s.%N)
    callgrind_control -i off "$pid" >/dev/null
    load=$(dump "$name" "$pid")
    # Answered as expected: 200 when proxied, 401 or 429 (auth_flood) for the invalid key.
    ok=$(echo "$out" | python3 -c 'import json,sys; d=json.load(sys.stdin)["statusCodeDistribution"]; print(sum(d.get(c, 0) for c in ("200", "401", "429")))')
    awk -v n="$name" -v l="$load" -v i="$idle" -v a="$t0" -v b="$t1" -v ok="$ok" \
        'BEGIN { printf "%s %.0f %d %.0f %.1f\n", n, l - i * (b - a) / 5, ok, i / 5, b - a }'
}
# The same request to both proxies (as in proxy-bench.sh): nginx forwards the key, raftgate
# checks it and strips it.
NG=$(count ngx "$(cat "$W/ngx.pid")" "http://127.0.0.1:$NGX/orders/1" "Authorization: Bearer $KEY")
RGL=$(count rg "$(cat "$W/rg.pid")" "http://127.0.0.1:$RG/orders/1" "Authorization: Bearer $KEY")
# SHA-256 in software: `compress256` with all it calls; or, where the build inlined it into its
# callers (the PGO build does: docs/ARCHITECTURE.md, "Building"), every instruction whose line
# is in sha2's software rounds or in a function of them (the "=>" lines are calls, counted
# under their callee already).
RGCG=$(ls -t "$W"/rg.cg.* | head -1)
SHA_CALL=$(callgrind_annotate --inclusive=yes "$RGCG" 2>/dev/null |
    awk '/sha2::sha256::compress256/ { gsub(",", "", $1); if ($1 + 0 > m) m = $1 + 0 } END { print m + 0 }')
SHA_LINES=$(callgrind_annotate --inclusive=no --threshold=100 "$RGCG" 2>/dev/null |
    awk '!/=>/ && (/\/sha2-[^\/]*\/src\/sha256\/soft\.rs:/ || /sha2::sha256::soft::/) { gsub(",", "", $1); s += $1 } END { print s + 0 }')
SHA=$((SHA_CALL > SHA_LINES ? SHA_CALL : SHA_LINES))
# Heap allocations in the same window: calls into Rust's allocator (RocksDB's C++ allocates
# on its own and is not counted), from callgrind's call counts. With LTO the allocator shims
# (`__rust_alloc`) are inlined away, and the calls land directly on the entry points mimalloc's
# `GlobalAlloc` uses (C++ reaches mimalloc through `malloc` and `new`, not these).
ALLOCS=$(python3 - "$(ls -t "$W"/rg.cg.* | head -1)" <<'PY'
import re, sys
from collections import Counter
names, calls, callee = {}, Counter(), None
for line in open(sys.argv[1], errors="replace"):
    if line.startswith(("fn=", "cfn=")):
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if m.group(2):
            names[m.group(1)] = m.group(2).strip()
        callee = m.group(1) if line.startswith("cfn=") else None
    elif line.startswith("calls=") and callee is not None:
        calls[names.get(callee)] += int(line.split("=")[1].split()[0])
        callee = None
shims = calls["__rustc::__rust_alloc"] + calls["__rustc::__rust_alloc_zeroed"]
print(shims or calls["mi_malloc_aligned"] + calls["mi_zalloc_aligned"])
PY
)
PASS=$(count rg "$(cat "$W/rg.pid")" "http://127.0.0.1:$RG/open/x")
# The invalid-key flood (proxy-bench.sh's key): refused with 401, then 429 auth_flood.
FLOOD=$(count rg "$(cat "$W/rg.pid")" "http://127.0.0.1:$RG/orders/1" \
    "Authorization: Bearer rgk_000000000000000000000000000000000000000000000000aa")
# valgrind does not emulate the SHA extensions, so SHA-256 (the key digest, the audit hash
# chain) runs in software here and costs far more than on the machine itself: SHA (above) says
# how much, from the proxied run's profile.
echo "requests per proxy: $N (oha -c 8, after 2,000 to warm up), raftgate with $((ROUTES + 1)) routes, valgrind $(valgrind --version | cut -d- -f2)"
echo "$NG" "$RGL" | awk '{
    n = $2 / $3; r = $7 / $8;
    printf "nginx proxy: %.0f instructions for %d requests answered 200 (%.1f s; idle: %.0f a second): %.0f per request\n", $2, $3, $5, $4, n;
    printf "raftgate, key auth + RBAC + rate limit + audit: %.0f for %d (%.1f s; idle: %.0f a second): %.0f per request\n", $7, $8, $10, $9, r;
    printf "raftgate / nginx = %.2f (user-space instructions per proxied request)\n", r / n }'
echo "$RGL" | awk -v sha="$SHA" '{ printf "of raftgate'"'"'s, SHA-256 in software (valgrind hides SHA-NI): %.0f per request; without it raftgate / nginx = ", sha / $3 }'
echo "$NG" "$RGL" | awk -v sha="$SHA" '{ printf "%.2f\n", (($7 - sha) / $8) / ($2 / $3) }'
echo "$RGL" | awk -v a="$ALLOCS" '{ printf "raftgate heap allocations (Rust'"'"'s allocator): %.1f per proxied request\n", a / $3 }'
echo "$PASS" "$RGL" | awk '{ printf "raftgate passthrough (open route: no key, no limit, audit on): %.0f per request; the policy adds %.0f (%.1f %%)\n", $2 / $3, $7 / $8 - $2 / $3, 100 * ($7 / $8 - $2 / $3) / ($2 / $3) }'
echo "$FLOOD" "$RGL" | awk '{ printf "raftgate, invalid-key flood (401 / 429 auth_flood, audited): %.0f per refused request, %.2f of a proxied one\n", $2 / $3, ($2 / $3) / ($7 / $8) }'
