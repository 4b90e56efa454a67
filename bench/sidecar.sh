#!/usr/bin/env bash
# Sidecar mode's cost (issue 15): one fast backend (nginx answering `200 ok`) reached, in
# one run on loopback, (1) directly, (2) through one Ferry hop (node B's outbound listener;
# B keeps the backend's instance, so it calls it itself, as a single node does) and (3)
# through two hops with mutual TLS (node A's outbound listener → pooled HTTP/2 over TLS →
# node B's inbound listener → backend; A sees the instance kept by B). Both nodes are
# release builds on a three-member etcd (scripts/etcd-cluster.sh), B signing with
# `--ca-issuer`, A joined with `ferry ca token`; each ferry runs `--worker-threads 1` on
# core 1, the backend, etcd and the load generators on core 0.
# For each path: latency at a fixed 1,000 req/s (bench/loadgen `rate`, open loop,
# coordinated omission corrected, 10 s, 8 connections), then maximum throughput (wrk -t1
# -c64, 10 s), with each node's CPU time (/proc/PID/stat utime + stime) over the max run
# divided by its requests. Each node's peak RSS (VmHWM) through the 1,000 req/s runs, the
# target's measure as for a single node (DESIGN.md), and its RSS after the maximum-rate
# runs, split into anonymous memory and mapped code. Prints a Markdown section;
# --record appends it to bench/RESULTS.md. FERRY=path benchmarks that binary instead of
# building the release one; SECONDS_PER_RUN (10) and ETCD_PORT (23950: etcd's client ports
# are +1..3, its peer ports +11..13; below the kernel's ephemeral range, clear of the
# tests' 23900) change the run.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
record=false
[ "${1:-}" = "--record" ] && record=true
seconds=${SECONDS_PER_RUN:-10}
etcd_port=${ETCD_PORT:-23950}
command="bench/sidecar.sh"
for knob in SECONDS_PER_RUN ETCD_PORT; do
    if [ -n "${!knob:-}" ]; then command="$knob=${!knob} $command"; fi
done
if [ $# -gt 0 ]; then command="$command $*"; fi

source bench/common.sh
install_missing nginx:nginx-light wrk:wrk etcd:etcd-server etcdctl:etcd-client
ferry=${FERRY:-$(scripts/build-release.sh)}
cargo build --release --locked -p ferry-bench-loadgen >&2

start_scratch
backend=$(free_port)
declare -A eureka admin outbound inbound pid
for node in a b; do
    eureka[$node]=$(free_port); admin[$node]=$(free_port); outbound[$node]=$(free_port); inbound[$node]=$(free_port)
done

# The nodes stop (up to 5 s) before their store does, so that they exit without
# reporting a lost etcd.
stop_nodes() {
    kill "${pid[@]}" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "${pid[@]}" 2>/dev/null || break; sleep 0.1; done
    [ -d "$work/etcd" ] && { scripts/etcd-cluster.sh stop "$work/etcd" >/dev/null 2>&1 || true; }
    stop_scratch
}
trap stop_nodes EXIT

start_backend $backend
# etcd on the load core, so that core 1 runs nothing but the two nodes.
endpoints=$(taskset -c $load_core scripts/etcd-cluster.sh start "$work/etcd" "$etcd_port")
store="etcd://$endpoints"

fingerprint=$("$ferry" ca init --trust-domain bench.local --dir "$work/ca" | sed -n 's/^root SHA-256: //p')
# `start_node NAME IDENTITY-FLAGS...`: a node on etcd with one worker thread on core 1.
start_node() {
    local node=$1
    shift
    taskset -c $server_core "$ferry" --worker-threads 1 --log warn --store "$store" --node-name "node-$node" \
        --eureka-listen "127.0.0.1:${eureka[$node]}" --admin-listen "127.0.0.1:${admin[$node]}" \
        --consul-listen off --config-listen off --outbound-ports "${outbound[$node]}-${outbound[$node]}" \
        --inbound-listen "127.0.0.1:${inbound[$node]}" --data-dir "$work/node-$node" "$@" &
    pid[$node]=$!
    pids+=("$!")
    wait_ready "${admin[$node]}"
}
start_node b --ca-issuer "$work/ca"
token=$("$ferry" ca token --node node-a --ttl 10m --store "$store")
start_node a --join-token "$token" --ca-root-sha256 "$fingerprint"

# B keeps the backend; the cutover, in etcd, opens BACKEND's outbound listener on both.
register_backend "${eureka[b]}" $backend
"$ferry" ctl --admin "127.0.0.1:${admin[a]}" cutover backend mesh >&2
outbound_of() { curl -sf "http://127.0.0.1:${admin[$1]}/api/services/BACKEND" | python3 -c '
import json, sys
print(json.load(sys.stdin)["port"] or "")'; }
for _ in $(seq 100); do
    one_hop=$(outbound_of b || true); two_hops=$(outbound_of a || true)
    [ -n "$one_hop" ] && [ -n "$two_hops" ] && curl -sf -o /dev/null "http://127.0.0.1:$two_hops/" && break
    sleep 0.1
done
answers_ok $backend "$one_hop" "$two_hops"
inbound_requests() { curl -sf "http://127.0.0.1:${admin[b]}/metrics" | awk '/^ferry_inbound_requests(_total)? / {print $2}'; }
# The two-hop path must go through B's inbound listener, not straight to the backend.
before=$(inbound_requests)
answers_ok "$two_hops"
[ "$(inbound_requests)" -gt "${before:-0}" ] || { echo "node A's call did not go through node B's inbound listener" >&2; exit 1; }

target_of() {
    case $1 in direct) echo $backend ;; one-hop) echo "$one_hop" ;; two-hops) echo "$two_hops" ;; esac
}
paths=(direct one-hop two-hops)
declare -A latency others max busy requests cpu_a cpu_b rate_rss
# Core 1 is shared with whatever else runs on the machine: the share of its time other
# processes took during each fixed-rate run (core busy time less both nodes' CPU time) is
# what to read the tails against.
node_ticks() { echo $(( $(cpu_ticks "${pid[a]}") + $(cpu_ticks "${pid[b]}") )); }
for name in "${paths[@]}"; do
    read -r busy0 all0 < <(core_jiffies); ours0=$(node_ticks)
    latency[$name]=$(fixed "$(target_of "$name")")
    read -r busy1 all1 < <(core_jiffies); ours1=$(node_ticks)
    others[$name]=$(python3 -c "print(f'{max(0, $busy1 - $busy0 - ($ours1 - $ours0)) * 100 / ($all1 - $all0):.0f}')")
    echo "$name: ${latency[$name]}, core $server_core ${others[$name]}% busy with other processes" >&2
done
for node in a b; do
    rate_rss[$node]=$(status_kb "${pid[$node]}" VmHWM)
done
ticks_per_second=$(getconf CLK_TCK)
for name in "${paths[@]}"; do
    a0=$(cpu_ticks "${pid[a]}"); b0=$(cpu_ticks "${pid[b]}")
    # PERF_DIR=DIR: each node's system calls over each max run (DIR/PATH-NODE.stat) and a
    # profile of both over the two-hop one (DIR/two-hops.data), for finding where time goes.
    if [ -n "${PERF_DIR:-}" ] && [ "$name" != direct ]; then
        for node in a b; do
            perf stat -e raw_syscalls:sys_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_epoll_wait \
                -p "${pid[$node]}" -o "$PERF_DIR/$name-$node.stat" -- sleep "$seconds" 2>/dev/null &
        done
        [ "$name" = two-hops ] && perf record -F 999 -g -p "${pid[a]},${pid[b]}" -o "$PERF_DIR/two-hops.data" -- sleep "$seconds" 2>/dev/null &
    fi
    read -r max[$name] busy[$name] requests[$name] < <(max_rate "$(target_of "$name")")
    cpu_a[$name]=$(( $(cpu_ticks "${pid[a]}") - a0 ))
    cpu_b[$name]=$(( $(cpu_ticks "${pid[b]}") - b0 ))
    echo "$name: max ${max[$name]} req/s (${requests[$name]} requests), core $server_core ${busy[$name]} busy, CPU ticks A ${cpu_a[$name]} B ${cpu_b[$name]}" >&2
done
declare -A rss peak anon file
for node in a b; do
    rss[$node]=$(status_kb "${pid[$node]}" VmRSS); peak[$node]=$(status_kb "${pid[$node]}" VmHWM)
    anon[$node]=$(status_kb "${pid[$node]}" RssAnon); file[$node]=$(status_kb "${pid[$node]}" RssFile)
    # SMAPS_DIR=DIR: each node's memory map after the runs (DIR/NODE.smaps), for finding
    # where its resident memory is: threads, the code's share per section and crate, and
    # which of the binary's pages are resident (bench/resident_code.py).
    if [ -n "${SMAPS_DIR:-}" ]; then
        cat "/proc/${pid[$node]}/smaps" >"$SMAPS_DIR/$node.smaps"
        ls "/proc/${pid[$node]}/task" | while read -r task; do
            echo "$task $(cat "/proc/${pid[$node]}/task/$task/comm")"
        done >"$SMAPS_DIR/$node.threads"
        python3 bench/resident_code.py "${pid[$node]}" "$ferry" >"$SMAPS_DIR/$node.code" 2>&1 || true
        python3 bench/resident_code.py "${pid[$node]}" "$ferry" --pages >"$SMAPS_DIR/$node.pages" 2>&1 || true
    fi
done

# Microseconds of a node's CPU per request over a path's max run ("—" for a node off it).
per_request() { python3 -c "print(f'{$1 * 1e6 / $ticks_per_second / ${requests[$2]}:.1f}')"; }
row() {
    local line=${latency[$1]} a=— b=— total=—
    case $1 in
        one-hop) b=$(per_request "${cpu_b[$1]}" "$1"); total=$b ;;
        two-hops) a=$(per_request "${cpu_a[$1]}" "$1"); b=$(per_request "${cpu_b[$1]}" "$1")
            total=$(per_request "$(( ${cpu_a[$1]} + ${cpu_b[$1]} ))" "$1") ;;
    esac
    echo "| $1 | $(field "$line" p50_us) | $(field "$line" p99_us) | $(field "$line" p999_us) | $(field "$line" errors) | ${others[$1]}% | ${max[$1]} | $(python3 -c "print(f'{${busy[$1]} * 100:.0f}')")% | $a | $b | $total |"
}
added() { echo $(( $(field "${latency[$1]}" "$2") - $(field "${latency[direct]}" "$2") )); }
rss_cell() { echo "$(mb "${rate_rss[$1]}") MB (after the maximum-rate runs, 64 connections: $(mb "${rss[$1]}") MB, $(mb "${anon[$1]}") MB anonymous + $(mb "${file[$1]}") MB mapped code)"; }
verdict() { python3 -c "print('met' if $1 else 'missed')"; }
tls_extra=$(python3 -c "print(f'{((${cpu_a[two-hops]} + ${cpu_b[two-hops]}) / ${requests[two-hops]} - ${cpu_b[one-hop]} / ${requests[one-hop]}) * 1e6 / $ticks_per_second:.1f}')")
load=$(cut -d' ' -f1-3 /proc/loadavg)
report=$(cat <<EOF

## Sidecar mode: two hops with mutual TLS (issue 15) — $(date -u +%Y-%m-%d) ($(nproc) cores, $(uname -m))
Command: \`$command\`. Backend: nginx \`return 200\`. Two ferry nodes (release build,
\`--worker-threads 1\` each, both pinned to core $server_core) on a three-member etcd 3.4
on loopback; node B signs (\`--ca-issuer\`) and keeps the backend's instance (registered
through its Eureka API), node A joined with a \`ferry ca token\`. one-hop: B's outbound
listener, which calls the instance B keeps itself (today's single-node path, etcd store).
two-hops: A's outbound listener → one pooled HTTP/2 connection with mutual TLS (TLS 1.3) →
B's inbound listener → backend. Backend, etcd and load generators on core $load_core.
Latency: 1,000 req/s open loop for ${seconds} s over 8 connections (bench/loadgen \`rate\`,
coordinated omission corrected), with the share of core $server_core other processes took
meanwhile (its busy time in /proc/stat less both nodes' CPU time). Max: wrk -t1 -c64
${seconds} s. CPU per request: each node's utime + stime (/proc/PID/stat, ${ticks_per_second}
ticks/s) over the max run ÷ the requests wrk completed. Load average at the end: $load (other sessions share the machine).

| path | p50 µs | p99 µs | p99.9 µs | errors | core $server_core taken by other processes | max req/s | core $server_core busy | CPU µs/req node A | CPU µs/req node B | CPU µs/req total |
|---|---|---|---|---|---|---|---|---|---|---|
$(row direct)
$(row one-hop)
$(row two-hops)

| target | measured | verdict |
|---|---|---|
| two hops add < 1 ms at p99 over direct at 1,000 req/s | $(added two-hops p99_us) µs (p50: $(added two-hops p50_us) µs; one hop adds $(added one-hop p99_us) µs at p99, $(added one-hop p50_us) µs at p50) | $(verdict "$(added two-hops p99_us) < 1000") |
| peak RSS of node A (caller side, TLS client) at 1,000 req/s < 12 MB | $(rss_cell a) | $(verdict "${rate_rss[a]} < 12288") |
| peak RSS of node B (keeper side, TLS server and the signer) at 1,000 req/s < 12 MB | $(rss_cell b) | $(verdict "${rate_rss[b]} < 12288") |
| CPU the TLS hop adds per request (A + B on two hops − B on one hop) | ${tls_extra} µs | — |
EOF
)
echo "$report"
$record && echo "$report" >> "$root/bench/RESULTS.md"
exit 0
