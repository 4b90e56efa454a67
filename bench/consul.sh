#!/usr/bin/env bash
# The Consul benchmark, against a release build of ferry (one worker thread, core 1):
# 1. 1,000 blocking watchers on one KV prefix, answered after a write (5 rounds): p50/p99
#    from the write being sent to each answer arriving (target p99 < 100 ms).
# 2. Durable KV writes per second (each acknowledged only after its disk sync), with one
#    client and with 16.
# 3. /v1/health/service for a service with 1,000 instances (wrk, 10 s).
# Prints a Markdown section; with --record it is appended to bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
record=false
[ "${1:-}" = "--record" ] && record=true

source bench/common.sh
install_missing wrk:wrk
ferry=$(scripts/build-release.sh)
cargo build --release --locked -p ferry-bench-loadgen

work=$(mktemp -d)
cleanup() { [ -n "${ferry_pid:-}" ] && kill "$ferry_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(free_port)

taskset -c $server_core "$ferry" --worker-threads 1 --eureka-listen off --admin-listen off \
    --consul-listen 127.0.0.1:$port --data-dir "$work/data" --log warn &
ferry_pid=$!
for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$port/v1/status/leader" && break; sleep 0.1; done

loadgen() { taskset -c $load_core target/release/ferry-bench-loadgen "$@"; }
watch_line=$(loadgen watchers 127.0.0.1:$port bench/watch/ 1000 5)
single_line=$(loadgen kv-writes 127.0.0.1:$port 3000 1)
parallel_line=$(loadgen kv-writes 127.0.0.1:$port 3000 16)

python3 - "$port" <<'EOF'
import http.client, json, sys
connection = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for n in range(1000):
    body = {"Name": "catalog-bench", "ID": f"catalog-bench-{n}", "Address": f"10.1.{n // 256}.{n % 256}",
            "Port": 8080, "Tags": ["v1"], "Meta": {"secure": "false"},
            "Check": {"TTL": "600s", "Status": "passing"}}
    connection.request("PUT", "/v1/agent/service/register", json.dumps(body))
    response = connection.getresponse(); response.read()
    assert response.status == 200, response.status
EOF
count=$(curl -sf "http://127.0.0.1:$port/v1/health/service/catalog-bench?passing=true" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$count" = 1000 ] || { echo "expected 1000 passing instances, got $count" >&2; exit 1; }
health_bytes=$(curl -sf "http://127.0.0.1:$port/v1/health/service/catalog-bench" | wc -c)
wrk_out=$(taskset -c $load_core wrk -t1 -c8 -d10s --latency "http://127.0.0.1:$port/v1/health/service/catalog-bench?passing=true")
echo "$wrk_out" >&2
health_rps=$(echo "$wrk_out" | awk '/^Requests\/sec:/ {print $2}')
health_p99=$(echo "$wrk_out" | awk '$1 == "99%" {print $2}')
rss_mb=$(awk '/VmHWM/ {printf "%.1f", $2/1024}' /proc/$ferry_pid/status)

p99=$(field "$watch_line" p99_ms)
report=$(cat <<EOF

## Consul — $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -m))
Command: \`bench/consul.sh --record\` (ferry: 1 worker thread on one core; clients on the other).

| measure | result | target |
|---|---|---|
| 1,000 blocking watchers on one prefix, answer after a write (5 rounds, 5,000 answers) | p50 $(field "$watch_line" p50_ms) ms, p99 $p99 ms, max $(field "$watch_line" max_ms) ms | p99 < 100 ms: $(python3 -c "print('pass' if $p99 < 100 else 'FAIL')") |
| durable KV writes, 1 client (each synced before its answer) | $(field "$single_line" writes_per_second)/s | — |
| durable KV writes, 16 clients | $(field "$parallel_line" writes_per_second)/s | — |
| /v1/health/service, 1,000 instances, ?passing=true ($health_bytes bytes) | $health_rps req/s, p99 $health_p99 | — |
| peak RSS of ferry after all of the above | $rss_mb MB | — |

The watcher latency runs from the write being sent (its disk sync included) to each
answer arriving at the client.
EOF
)
echo "$report"
$record && echo "$report" >> "$root/bench/RESULTS.md"
exit 0
