#!/usr/bin/env bash
# What an idle keep-alive connection costs ferry, and what ferry keeps once a connection
# storm is over. The release ferry in its default mode (embedded registry, one worker thread
# per core), a trivial HTTP/1.1 backend registered through Eureka and cut over to the mesh;
# then for the Consul listener and for the backend's outbound listener in turn:
# RSS (VmRSS, RssAnon) before, with N connections that each sent one GET and stay idle,
# and after all of them closed (bench/loadgen `idle`: the kernel lists none left at the
# port, then 2 s). Prints the cost per connection and what stays above the baseline.
# Usage: bench/connections.sh [--record] [N] (N defaults to 2000). With --record the
# Markdown section is appended to bench/RESULTS.md. FERRY=path measures that binary
# instead of building the release one (to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
record=false
[ "${1:-}" = "--record" ] && { record=true; shift; }
count=${1:-2000}

source bench/common.sh
install_missing curl:curl
ferry=${FERRY:-$(scripts/build-release.sh)}
cargo build --release --locked -p ferry-bench-loadgen
# N callers, N connections in ferry and, on the outbound listener, its pooled ones.
ulimit -n "$(ulimit -Hn)"

start_scratch
backend=$(free_port); eureka=$(free_port); consul=$(free_port); admin=$(free_port)
outbound=$(free_port)

python3 - "$backend" <<'EOF' &
import http.server, sys
class Ok(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\n")
    def log_message(self, *args):
        pass
class Server(http.server.ThreadingHTTPServer):
    request_queue_size = 1024
Server(("127.0.0.1", int(sys.argv[1])), Ok).serve_forever()
EOF
pids+=($!)
# A fresh ferry for each listener, so neither measure starts from what the other left.
start_ferry() {
    rm -rf "$work/ferry-data"
    taskset -c $server_core "$ferry" --log warn --eureka-listen 127.0.0.1:$eureka \
        --consul-listen 127.0.0.1:$consul --admin-listen 127.0.0.1:$admin --config-listen off \
        --outbound-ports "$outbound-$outbound" --data-dir "$work/ferry-data" &
    ferry_pid=$!
    pids+=("$ferry_pid")
    wait_ready $admin
    register_backend $eureka $backend
    port=$(curl -sf -X PUT -H 'Content-Type: application/json' -d '{"mode":"mesh"}' \
        "http://127.0.0.1:$admin/api/services/BACKEND" | python3 -c 'import json,sys; print(json.load(sys.stdin)["port"])')
    [ "$port" = "$outbound" ] || { echo "BACKEND was given port $port, not $outbound" >&2; exit 1; }
    # Each path answers once before its baseline, so the baseline holds what any first
    # request sets up (the proxy's endpoint pool, the Consul routes' state).
    [ "$(curl -sf "http://127.0.0.1:$outbound/")" = "ok" ] || { echo "the outbound listener does not answer ok" >&2; exit 1; }
    curl -sf -o /dev/null "http://127.0.0.1:$consul/v1/status/leader"
    sleep 1
}
stop_ferry() { kill "$ferry_pid"; wait "$ferry_pid" 2>/dev/null || true; }

measure() {
    start_ferry
    taskset -c $load_core target/release/ferry-bench-loadgen idle "127.0.0.1:$1" "$2" "$count" "$ferry_pid"
    stop_ferry
}
consul_line=$(measure $consul /v1/status/leader)
echo "consul: $consul_line" >&2
proxy_line=$(measure $outbound /)
echo "outbound: $proxy_line" >&2

mb() { python3 -c "print(f'{$1 / 1024:.1f}')"; }
row() {
    local line=$2
    echo "| $1 | $(mb "$(field "$line" baseline_kb)") ($(mb "$(field "$line" baseline_anon_kb)")) | $(mb "$(field "$line" open_kb)") ($(mb "$(field "$line" open_anon_kb)")) | $(field "$line" per_connection_kb) | $(mb "$(field "$line" closed_kb)") ($(mb "$(field "$line" closed_anon_kb)")) | $(mb "$(field "$line" retained_kb)") |"
}
report=$(cat <<EOF

## Idle connections — $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -m))
Command: \`bench/connections.sh --record $count\`. Release ferry, default mode (one worker
thread per core). $count keep-alive connections, 32 opening at a time, each sends one GET
and stays idle; then all close. RSS from /proc/PID/status (MB, anonymous in brackets), 2 s after
the last connection is gone; each listener is measured in a fresh ferry process.

| listener | before | $count idle | per connection (KB) | after close | retained (MB) |
|---|---|---|---|---|---|
$(row "Consul (hyper)" "$consul_line")
$(row "outbound (HTTP/1.1 path)" "$proxy_line")
EOF
)
echo "$report"
$record && echo "$report" >> "$root/bench/RESULTS.md"
exit 0
