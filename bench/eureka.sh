#!/usr/bin/env bash
# The Eureka benchmark: ferry against nginx, side by side in one run on this machine.
#
# 1. Registers N instances (default 10,000) with a release build of ferry.
# 2. Full registry fetch (JSON, plain and gzip): ferry from its response cache vs nginx
#    serving the very same bytes as a static file (gzip_static for the gzip case).
# 3. Renewals (PUT heartbeats to registered instances) vs nginx answering an empty 200.
# 4. Peak RSS of ferry (VmHWM) with the instances registered, after all of the above.
# Each server gets one worker on core 1 (ferry --worker-threads 1, nginx worker_processes 1);
# wrk runs on core 0. Prints a Markdown section; with --record it is appended to
# bench/RESULTS.md. Usage: bench/eureka.sh [--record] [--instances N] [--seconds S]
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

instances=10000
seconds=10
record=false
while [ $# -gt 0 ]; do
    case "$1" in
        --record) record=true ;;
        --instances) instances=$2; shift ;;
        --seconds) seconds=$2; shift ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

source bench/common.sh
install_missing nginx:nginx-light wrk:wrk
ferry=$(scripts/build-release.sh)

start_scratch

eureka_port=$(free_port)
nginx_port=$(free_port)

taskset -c $server_core "$ferry" --worker-threads 1 \
    --eureka-listen 127.0.0.1:$eureka_port --admin-listen off \
    --data-dir "$work/ferry-data" --log warn &
ferry_pid=$!
pids+=("$ferry_pid")
for _ in $(seq 100); do
    curl -sf -o /dev/null "http://127.0.0.1:$eureka_port/eureka/apps" && break
    sleep 0.1
done

echo "registering $instances instances..." >&2
started=$(date +%s.%N)
python3 bench/register.py 127.0.0.1 "$eureka_port" "$instances" "$work/ids.txt"
register_seconds=$(python3 -c "import time; print(round(time.time() - $started, 1))")
rss_registered_kb=$(awk '/VmRSS/ {print $2}' /proc/$ferry_pid/status)

mkdir -p "$work/www"
curl -sf -H 'Accept: application/json' "http://127.0.0.1:$eureka_port/eureka/apps/" -o "$work/www/apps.json"
curl -sf -H 'Accept: application/json' -H 'Accept-Encoding: gzip' \
    "http://127.0.0.1:$eureka_port/eureka/apps/" -o "$work/www/apps.json.gz"
json_bytes=$(stat -c %s "$work/www/apps.json")
gzip_bytes=$(stat -c %s "$work/www/apps.json.gz")
python3 - "$work/www/apps.json" "$instances" <<'EOF'
import json, sys
document = json.load(open(sys.argv[1]))["applications"]
count = sum(len(app["instance"]) for app in document["application"])
assert count == int(sys.argv[2]), f"the registry holds {count} instances"
EOF

cat > "$work/nginx.conf" <<EOF
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx-error.log warn;
events { worker_connections 1024; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 10000000;
    types { application/json json; }
    server {
        listen 127.0.0.1:$nginx_port;
        root $work/www;
        gzip_static on;
        location = /renew { return 200; }
    }
}
EOF
taskset -c $server_core nginx -c "$work/nginx.conf" -p "$work"
for _ in $(seq 50); do [ -f "$work/nginx.pid" ] && break; sleep 0.1; done
# Both servers must answer 200 with the same bytes, or the comparison means nothing.
cmp <(curl -sf -H 'Accept: application/json' "http://127.0.0.1:$nginx_port/apps.json") "$work/www/apps.json"
cmp <(curl -sf -H 'Accept-Encoding: gzip' "http://127.0.0.1:$nginx_port/apps.json") "$work/www/apps.json.gz"
curl -sf -o /dev/null -X PUT "http://127.0.0.1:$nginx_port/renew"

# wrk_rate LABEL ARGS... -> requests per second
wrk_rate() {
    local output
    output=$(taskset -c $load_core wrk -t1 -c16 -d"${seconds}s" --latency "$@")
    echo "$output" >&2
    if echo "$output" | grep -q "Non-2xx"; then
        echo "a server answered errors during: $*" >&2
        exit 1
    fi
    echo "$output" | awk '/^Requests\/sec:/ {print $2}'
}

json=(-H 'Accept: application/json')
gzip=(-H 'Accept: application/json' -H 'Accept-Encoding: gzip')
echo "== full fetch, JSON" >&2
nginx_full=$(wrk_rate "${json[@]}" "http://127.0.0.1:$nginx_port/apps.json")
ferry_full=$(wrk_rate "${json[@]}" "http://127.0.0.1:$eureka_port/eureka/apps/")
echo "== full fetch, JSON + gzip" >&2
nginx_gzip=$(wrk_rate "${gzip[@]}" "http://127.0.0.1:$nginx_port/apps.json")
ferry_gzip=$(wrk_rate "${gzip[@]}" "http://127.0.0.1:$eureka_port/eureka/apps/")
echo "== renewals vs an empty 200" >&2
nginx_empty=$(FERRY_BENCH_PATH=/renew wrk_rate -s bench/renew.lua "http://127.0.0.1:$nginx_port")
ferry_renew=$(FERRY_BENCH_IDS="$work/ids.txt" wrk_rate -s bench/renew.lua "http://127.0.0.1:$eureka_port")
peak_rss_kb=$(awk '/VmHWM/ {print $2}' /proc/$ferry_pid/status)
# Every heartbeat above must have been a 200: a 404 would mean the instances were lost.
curl -sf -o /dev/null -X PUT "http://127.0.0.1:$eureka_port$(head -1 "$work/ids.txt")"

ratio() { python3 -c "print(f'{$1 / $2:.2f}')"; }
verdict() { python3 -c "print('pass' if $1 >= $2 else 'FAIL')"; }
rss_mb=$(python3 -c "print(f'{$peak_rss_kb / 1024:.1f}')")
rss_registered_mb=$(python3 -c "print(f'{$rss_registered_kb / 1024:.1f}')")
report=$(cat <<EOF

## Eureka, $instances instances — $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -m))
Command: \`bench/eureka.sh --record\` (wrk -t1 -c16 -d${seconds}s; servers on one core each).
Document sizes: JSON $json_bytes bytes, gzip $gzip_bytes bytes. Registering took ${register_seconds}s.

| measure | ferry | nginx | ratio | target | verdict |
|---|---|---|---|---|---|
| full fetch, JSON (req/s) | $ferry_full | $nginx_full | $(ratio "$ferry_full" "$nginx_full") | ≥ 0.50 | $(verdict "$(ratio "$ferry_full" "$nginx_full")" 0.5) |
| full fetch, JSON + gzip (req/s) | $ferry_gzip | $nginx_gzip | $(ratio "$ferry_gzip" "$nginx_gzip") | ≥ 0.50 | $(verdict "$(ratio "$ferry_gzip" "$nginx_gzip")" 0.5) |
| renewals vs empty 200 (req/s) | $ferry_renew | $nginx_empty | $(ratio "$ferry_renew" "$nginx_empty") | ≥ 0.40 | $(verdict "$(ratio "$ferry_renew" "$nginx_empty")" 0.4) |
| peak RSS (MB) | $rss_mb | — | — | < 64 | $(python3 -c "print('pass' if $rss_mb < 64 else 'FAIL')") |

RSS right after registering: ${rss_registered_mb} MB.
EOF
)
echo "$report"
if $record; then
    echo "$report" >> "$root/bench/RESULTS.md"
fi
