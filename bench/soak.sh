#!/usr/bin/env bash
# The soak benchmark: 1,000 req/s through ferry's outbound listener for MINUTES minutes
# (default 10) while the registry churns and the service is cut over every minute.
# - Backends: four nginx listeners answering `200 ok`; two to three of them registered at
#   any time through the Eureka API (leases renewed every 30 s like a Eureka client).
# - Churn: every 15 s one registered instance is cancelled and one that was not is
#   registered (the backends keep running, as an instance being redeployed does).
# - Cutover: every minute the service moves between `mesh` and `legacy`; the outbound
#   listener stays open in `legacy` (a caller with a stale address still gets through), so
#   the load keeps flowing through the proxy either way.
# - Each minute: bench/loadgen `rate` at 1,000 req/s (open loop, 8 connections) reports
#   requests, errors and latency; ferry's RSS is read at the end of the minute.
# Passes when no request failed and RSS at the end is within 1 MB of the end of minute 1.
# Prints a Markdown section; --record appends it to bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
record=false
minutes=10
for arg in "$@"; do
    case $arg in
        --record) record=true ;;
        *) minutes=$arg ;;
    esac
done

source bench/common.sh
install_missing nginx:nginx-light curl:curl
ferry=$(scripts/build-release.sh)
cargo build --release --locked -p ferry-bench-loadgen

start_scratch

ports=($(free_port) $(free_port) $(free_port) $(free_port))
eureka=$(free_port); admin=$(free_port); outbound=$(free_port)
{
    echo "worker_processes 1; pid $work/backend.pid; error_log $work/backend-error.log warn;"
    echo "events { worker_connections 4096; }"
    echo "http { access_log off; keepalive_requests 10000000;"
    for port in "${ports[@]}"; do echo "  server { listen 127.0.0.1:$port; location / { return 200 \"ok\n\"; } }"; done
    echo "}"
} > "$work/backend.conf"
taskset -c $load_core nginx -c "$work/backend.conf" -p "$work"

taskset -c $server_core "$ferry" --worker-threads 1 --log warn \
    --eureka-listen 127.0.0.1:$eureka --admin-listen 127.0.0.1:$admin \
    --consul-listen off --config-listen off \
    --outbound-ports "$outbound-$outbound" --data-dir "$work/ferry-data" &
ferry_pid=$!
pids+=("$ferry_pid")
wait_ready $admin

apps="http://127.0.0.1:$eureka/eureka/apps/BACKEND"
register() { register_backend "$eureka" "${ports[$1]}" "backend-$1"; }
cancel() { curl -sf -o /dev/null -X DELETE "$apps/backend-$1"; }
renew() { curl -sf -o /dev/null -X PUT "$apps/backend-$1" || register "$1"; }
cutover() { "$ferry" ctl --admin "127.0.0.1:$admin" cutover backend "$1" >/dev/null; }

registered=(0 1 2)
for n in "${registered[@]}"; do register "$n"; done
cutover mesh
[ "$(curl -sf "http://127.0.0.1:$outbound/")" = "ok" ] || { echo "the outbound listener does not answer" >&2; exit 1; }

# Churn and renewals in the background, bounded by the run's length.
churn() {
    local tick=0 live=(0 1 2) out=3 leaving
    while [ $tick -lt $((minutes * 4)) ]; do
        sleep 15
        tick=$((tick + 1))
        leaving=${live[$((tick % 3))]}
        register "$out"
        cancel "$leaving"
        live[$((tick % 3))]=$out
        out=$leaving
        if [ $((tick % 2)) = 0 ]; then for n in "${live[@]}"; do renew "$n"; done; fi
    done
}
churn > "$work/churn.log" 2>&1 &
pids+=("$!")

status_kb() { awk -v key="$1:" '$1 == key {print $2}' /proc/$ferry_pid/status; }
mb() { python3 -c "print(f'{$1 / 1024:.1f}')"; }
rows=""
total_ok=0; total_errors=0; first_rss=0; last_rss=0; worst_p99=0
for minute in $(seq 1 "$minutes"); do
    if [ "$minute" -gt 1 ]; then
        if [ $((minute % 2)) = 0 ]; then cutover legacy; mode=legacy; else cutover mesh; mode=mesh; fi
    else
        mode=mesh
    fi
    line=$(taskset -c $load_core target/release/ferry-bench-loadgen rate "127.0.0.1:$outbound" / 1000 60 8)
    rss=$(status_kb VmRSS); anon=$(status_kb RssAnon)
    ok=$(field "$line" ok); errors=$(field "$line" errors); p99=$(field "$line" p99_us)
    total_ok=$((total_ok + ok)); total_errors=$((total_errors + errors))
    [ "$p99" -gt "$worst_p99" ] && worst_p99=$p99
    [ "$minute" = 1 ] && first_rss=$rss
    last_rss=$rss
    rows+="| $minute | $mode | $ok | $errors | $(field "$line" p50_us) | $p99 | $(mb "$rss") | $(mb "$anon") |"$'\n'
    echo "minute $minute ($mode): $line rss_kb=$rss anon_kb=$anon" >&2
done

growth_kb=$((last_rss - first_rss))
verdict=pass
[ "$total_errors" -eq 0 ] || verdict=fail
[ "$growth_kb" -le 1024 ] || verdict=fail
report=$(cat <<EOF

## Soak — $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -m))
Command: \`bench/soak.sh $minutes --record\`. 1,000 req/s through ferry's outbound listener
(\`--worker-threads 1\`, core 1; load and four nginx backends on core 0) for $minutes
minutes, bench/loadgen \`rate\` over 8 connections, one run per minute. Every 15 s one of
the three registered instances is cancelled and another registered; every minute the
service is cut over (\`mesh\` ↔ \`legacy\`; the listener stays open). RSS at each minute's end.

| minute | mode | requests ok | errors | p50 µs | p99 µs | RSS MB | anonymous MB |
|---|---|---|---|---|---|---|---|
${rows%$'\n'}

Requests: $total_ok, errors: $total_errors, worst minute's p99: $worst_p99 µs; RSS from the end
of minute 1 to the end: $(mb "$first_rss") → $(mb "$last_rss") MB ($growth_kb KB). Verdict
(zero errors, RSS within 1 MB): **$verdict**.
EOF
)
echo "$report"
if $record; then echo "$report" >> bench/RESULTS.md; fi
[ "$verdict" = pass ]
