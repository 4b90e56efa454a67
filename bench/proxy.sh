#!/usr/bin/env bash
# The proxy benchmark: one fast backend (nginx answering `200 ok`), reached directly,
# through nginx (1 worker), through HAProxy (1 thread) and through ferry's outbound listener
# (--worker-threads 1), side by side in one run. Every proxy runs on core 1; the backend
# and the load generators on core 0.
# For each path: latency at a fixed 1,000 req/s (bench/loadgen `rate`, open loop,
# coordinated omission corrected, 10 s, 8 connections), then maximum throughput (wrk -t1
# -c64, 10 s). Ferry's peak RSS is read after the fixed-rate runs and again at the end. Prints a Markdown section; --record appends it to
# bench/RESULTS.md. FERRY=path benchmarks that binary instead of building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
record=false
[ "${1:-}" = "--record" ] && record=true
seconds=10

source bench/common.sh
install_missing nginx:nginx-light haproxy:haproxy wrk:wrk
ferry=${FERRY:-$(scripts/build-release.sh)}
cargo build --release --locked -p ferry-bench-loadgen

start_scratch
backend=$(free_port); nginx_proxy=$(free_port); haproxy_port=$(free_port)
eureka=$(free_port); admin=$(free_port); outbound_first=$(free_port)

cat > "$work/proxy.conf" <<EOF
worker_processes 1;
pid $work/proxy.pid;
error_log $work/proxy-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 10000000;
    upstream backend { server 127.0.0.1:$backend; keepalive 64; }
    server {
        listen 127.0.0.1:$nginx_proxy;
        location / {
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
cat > "$work/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4096
defaults
    mode http
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    http-reuse always
frontend front
    bind 127.0.0.1:$haproxy_port
    default_backend back
backend back
    server s1 127.0.0.1:$backend
EOF
start_backend $backend
taskset -c $server_core nginx -c "$work/proxy.conf" -p "$work"
taskset -c $server_core haproxy -f "$work/haproxy.cfg" -D -p "$work/haproxy.pid"
taskset -c $server_core "$ferry" --worker-threads 1 --log warn \
    --eureka-listen 127.0.0.1:$eureka --admin-listen 127.0.0.1:$admin --consul-listen off --config-listen off \
    --outbound-ports "$outbound_first-$outbound_first" --data-dir "$work/ferry-data" &
ferry_pid=$!
pids+=("$ferry_pid")
wait_ready $admin
register_backend $eureka $backend
"$ferry" ctl --admin "127.0.0.1:$admin" cutover backend mesh >&2
answers_ok $backend $nginx_proxy $haproxy_port $outbound_first

target_of() {
    case $1 in
        direct) echo $backend ;; nginx) echo $nginx_proxy ;; haproxy) echo $haproxy_port ;; ferry) echo $outbound_first ;;
    esac
}

# The fixed-rate runs come first, so ferry's high-water mark after them is its peak at
# 1,000 req/s (start-up included); the maximum-throughput runs follow.
declare -A max busy latency
for name in direct nginx haproxy ferry; do
    latency[$name]=$(fixed "$(target_of $name)")
    echo "$name: ${latency[$name]}" >&2
done
rate_rss_kb=$(status_kb $ferry_pid VmHWM)
rate_anon_kb=$(status_kb $ferry_pid RssAnon)
rate_file_kb=$(status_kb $ferry_pid RssFile)
for name in direct nginx haproxy ferry; do
    read -r max[$name] busy[$name] _ < <(max_rate "$(target_of $name)")
    echo "$name: max ${max[$name]} req/s, proxy core ${busy[$name]} busy" >&2
done
peak_rss_kb=$(status_kb $ferry_pid VmHWM)
peak_anon_kb=$(status_kb $ferry_pid RssAnon)

# Requests per second of the proxy core's busy time: what the proxy serves when its one
# core, rather than the load generator, is the limit.
per_core() { python3 -c "print(round(${max[$1]} / max(${busy[$1]}, 0.001)))"; }
row() {
    local line=${latency[$1]} core=—
    [ "$1" != direct ] && core="$(python3 -c "print(f'{${busy[$1]} * 100:.0f}')")% / $(per_core $1)"
    echo "| $1 | ${max[$1]} | $core | $(field "$line" p50_us) | $(field "$line" p99_us) | $(field "$line" p999_us) | $(field "$line" errors) |"
}
added_p99=$(( $(field "${latency[ferry]}" p99_us) - $(field "${latency[direct]}" p99_us) ))
report=$(cat <<EOF

## Proxy — $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -m))
Command: \`bench/proxy.sh --record\`. Backend: nginx \`return 200\`. Proxies: nginx 1 worker,
HAProxy 1 thread, ferry \`--worker-threads 1\`, each pinned to core 1 with keep-alive to the
backend; load on core 0. Max: wrk -t1 -c64 ${seconds} s. Latency: 1,000 req/s open loop for
${seconds} s over 8 connections (bench/loadgen \`rate\`, coordinated omission corrected).
The proxy core's busy share during the max run (/proc/stat: user, system, interrupts) turns
max req/s into requests per busy core-second: the rate on one core when, as on a slow machine,
the load generator and backend on core 0 are the limit.

| path | max req/s | proxy core busy / req per busy core-second | p50 µs | p99 µs | p99.9 µs | errors |
|---|---|---|---|---|---|---|
$(row direct)
$(row nginx)
$(row haproxy)
$(row ferry)

| target | measured | verdict |
|---|---|---|
| ferry throughput on one core ≥ HAProxy's (req per busy core-second) | $(python3 -c "print(f'{$(per_core ferry) / $(per_core haproxy):.2f}× HAProxy, {$(per_core ferry) / $(per_core nginx):.2f}× nginx')") | $(python3 -c "print('pass' if $(per_core ferry) >= $(per_core haproxy) else 'FAIL')") |
| ferry max req/s against HAProxy's, same load generator (core 0 shared with the backend) | $(python3 -c "print(f'{${max[ferry]} / ${max[haproxy]}:.2f}×')") | — |
| p99 added over direct at 1,000 req/s < 1 ms | ${added_p99} µs | $(python3 -c "print('pass' if $added_p99 < 1000 else 'FAIL')") |
| ferry peak RSS at 1,000 req/s < 10 MB | $(mb $rate_rss_kb) MB for the whole process (registry, KV store, admin API included): $(mb $rate_anon_kb) MB anonymous (heap, stacks) + $(mb $rate_file_kb) MB mapped code | $(python3 -c "print('pass' if $rate_rss_kb < 10240 else 'FAIL')") |
| ferry peak RSS after the maximum-throughput runs (64 connections) | $(mb $peak_rss_kb) MB ($(mb $peak_anon_kb) MB anonymous) | — |
EOF
)
echo "$report"
$record && echo "$report" >> "$root/bench/RESULTS.md"
exit 0
