# Shared by the data-plane benchmarks: the nginx configurations and the benchmark policy.
# shellcheck shell=bash

# nginx_upstream_conf FILE PORT: nginx as the fast upstream, one worker answering a static 200.
# Its pid file is FILE.pid.
nginx_upstream_conf() {
    cat > "$1" <<NGINX
worker_processes 1;
pid $1.pid;
error_log $1.error.log;
events { worker_connections 4096; }
http { access_log off; server { listen 127.0.0.1:$2; location / { return 200 "ok\n"; } } }
NGINX
}

# nginx_proxy_conf FILE PORT UPSTREAM_PORT WORKERS [DIRECTIVES] [ACCESS_LOG]: nginx as a keep-alive
# reverse proxy with no checks, the peer raftgate is compared with. DIRECTIVES go first (for
# example "daemon off; master_process off;"). ACCESS_LOG is the `access_log` directive's argument
# (default `off`; benchmarks.md §5: logging on for all peers or off for all, buffered when on).
# Its pid file is FILE.pid.
nginx_proxy_conf() {
    cat > "$1" <<NGINX
${5:-}
worker_processes $4;
pid $1.pid;
error_log $1.error.log;
events { worker_connections 4096; }
http {
  access_log ${6:-off};
  upstream up { server 127.0.0.1:$3; keepalive 128; }
  server { listen 127.0.0.1:$2; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } }
}
NGINX
}

# bench_api ADMIN_PORT TOKEN METHOD PATH [JSON]: one admin API call.
bench_api() {
    curl -fsS -X "$3" -H "Authorization: Bearer $2" -H 'content-type: application/json' \
        "http://127.0.0.1:$1$4" ${5:+-d "$5"}
}

# bench_policy ADMIN_PORT TOKEN UPSTREAM_PORT: waits for the node's admin API, then installs the
# full pipeline the benchmarks measure: role `reader` (GET /**), a per-key limit `big` too high
# to bite, route `api` (/ → the upstream, limited by `big`) and consumer `bench`. Prints a new
# key of `bench`.
bench_policy() {
    local adm=$1 t=$2 up=$3
    for _ in $(seq 1 300); do bench_api "$adm" "$t" GET /v1/consumers >/dev/null 2>&1 && break; sleep 0.2; done
    bench_api "$adm" "$t" PUT /v1/roles/reader '{"permissions":[{"methods":["GET"],"path":"/**"}]}' >/dev/null
    bench_api "$adm" "$t" PUT /v1/rate-limits/big '{"limit":100000000,"window_s":60,"per":"key"}' >/dev/null
    bench_api "$adm" "$t" PUT /v1/routes/api \
        "{\"path_prefix\":\"/\",\"upstreams\":[\"http://127.0.0.1:$up\"],\"rate_limits\":[\"big\"]}" >/dev/null
    bench_api "$adm" "$t" POST /v1/consumers '{"name":"bench","roles":["reader"]}' >/dev/null
    bench_api "$adm" "$t" POST /v1/keys '{"consumer":"bench"}' | sed 's/.*"key":"\([^"]*\)".*/\1/'
}
