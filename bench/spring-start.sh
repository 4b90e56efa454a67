#!/usr/bin/env bash
# How long each Spring sample takes to start (Spring's own "Started ... in X seconds"),
# with the JVM's defaults, with the flags tests/spring uses (FAST below), and with those
# flags plus an AppCDS archive (Boot 3.3+: the jar extracted with jarmode=tools, one
# training run that exits after the context refresh). Each app runs alone, against a ferry
# on loopback, RUNS times per variant; prints a Markdown table of the medians.
# Usage: bench/spring-start.sh [RUNS] [APP...]   (after scripts/build-samples.sh; APPs
# such as boot3/orders limit the table to those)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
shift || true
only=" $* "
ferry=${FERRY_BIN:-target/debug/ferry}
work=$(mktemp -d)
trap 'kill "$ferry_pid" 2>/dev/null; rm -rf "$work"' EXIT

FAST="-XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xss512k -Xmx256m -XX:CICompilerCount=1 -Dspring.jmx.enabled=false"
# Free loopback ports, so that nothing here talks to another ferry on the machine.
read -r eureka consul config admin app_port outbound < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(6)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
"$ferry" --eureka-listen 127.0.0.1:$eureka --consul-listen 127.0.0.1:$consul --config-listen 127.0.0.1:$config \
    --admin-listen 127.0.0.1:$admin --outbound-ports $outbound --data-dir "$work/data" >"$work/ferry.log" 2>&1 &
ferry_pid=$!
sleep 1
kill -0 "$ferry_pid" || { cat "$work/ferry.log"; exit 1; }
common="-Dserver.address=127.0.0.1 -Deureka.instance.ip-address=127.0.0.1 -Dspring.cloud.consul.discovery.ip-address=127.0.0.1 -DPORT=$app_port -DEUREKA_URL=http://127.0.0.1:$eureka/eureka/ -DCONSUL_PORT=$consul -DCONFIG_URI=http://127.0.0.1:$config -DCONFIG_REPO_PATH=file:samples/config-repo"

# Starts one JVM, waits for "Started", kills it, prints the seconds Spring reported.
started_in() {
    local log=$work/run.log
    java "$@" >"$log" 2>&1 &
    local pid=$!
    for _ in $(seq 600); do
        if grep -q "Started .* in " "$log"; then break; fi
        if ! kill -0 "$pid" 2>/dev/null; then break; fi
        sleep 0.1
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true
    grep -o "Started .* in [0-9.]* seconds" "$log" | grep -o "[0-9.]* seconds" | cut -d' ' -f1 || echo "n/a"
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo "| app | defaults (s) | fast flags (s) | fast + AppCDS (s) | CDS training (s) |"
echo "|---|---|---|---|---|"
for jar in samples/boot3/{orders,checkout,inventory,pricing,eureka-server,config-server}/target/*.jar \
           samples/boot2/{orders,checkout}/target/*.jar; do
    name=$(basename "$(dirname "$(dirname "$jar")")")
    gen=$(basename "$(dirname "$(dirname "$(dirname "$jar")")")")
    if [ "$only" != "  " ] && [[ "$only" != *" $gen/$name "* ]]; then continue; fi
    plain=$(for _ in $(seq "$runs"); do started_in $common -jar "$jar"; done | median)
    fast=$(for _ in $(seq "$runs"); do started_in $FAST $common -jar "$jar"; done | median)
    cds="n/a"; training="n/a"
    if [ "$gen" = boot3 ]; then
        dir=$work/$gen-$name
        java -Djarmode=tools -jar "$jar" extract --destination "$dir" >/dev/null
        begin=$(date +%s.%N)
        java $FAST $common -XX:ArchiveClassesAtExit="$dir/app.jsa" -Dspring.context.exit=onRefresh \
            -jar "$dir/$(basename "$jar")" >"$work/train.log" 2>&1 || true
        training=$(echo "$(date +%s.%N) - $begin" | bc | xargs printf '%.1f')
        cds=$(for _ in $(seq "$runs"); do started_in $FAST $common -XX:SharedArchiveFile="$dir/app.jsa" -jar "$dir/$(basename "$jar")"; done | median)
    fi
    echo "| $gen/$name | $plain | $fast | $cds | $training |"
done
