#!/usr/bin/env bash
# A real three-member etcd cluster on loopback, for the many-nodes tests and for trying
# `ferry --store etcd://...` by hand (no Docker: Debian's etcd-server and etcd-client).
#
#   scripts/etcd-cluster.sh start DIR [BASE_PORT]   start m1..m3, wait for a leader, print
#                                                    the endpoints (HOST:PORT,HOST:PORT,...)
#   scripts/etcd-cluster.sh stop DIR                 stop every member (TERM, then KILL)
#   scripts/etcd-cluster.sh kill DIR N               kill -9 member N (1..3): a crash
#   scripts/etcd-cluster.sh restart DIR N            start member N again on its data
#   scripts/etcd-cluster.sh endpoints DIR            print the endpoints again
#
# Member N listens for clients on 127.0.0.1:BASE+N and for peers on 127.0.0.1:BASE+10+N.
# The default base, 23900 (clients 23901-23903, peers 23911-23913), is below the kernel's
# ephemeral range, where the tests' free ports come from, clear of every port Ferry uses by
# default (8500, 8761, 8888, 15000-15999) and of etcd's own (2379, 2380) and the ports the
# research notes' cluster uses (23791-23793, 23801-23803). DIR holds each member's data (DIR/mN), its
# log (DIR/mN.log, zap), what it printed before its logger was up (DIR/mN.out), its pid
# (DIR/mN.pid) and the base port (DIR/base), so the other commands need only DIR.
#
# Auto-compaction is on (periodic, 10 min), as Ferry's README asks of a production etcd:
# 3.4 keeps every revision by default. FERRY_ETCD_BIN and FERRY_ETCDCTL choose the binaries
# (default: `etcd` and `etcdctl` on PATH).
set -euo pipefail

ETCD=${FERRY_ETCD_BIN:-etcd}
ETCDCTL=${FERRY_ETCDCTL:-etcdctl}
export ETCDCTL_API=3
MEMBERS=(1 2 3)
WAIT_SECONDS=20

die() { echo "etcd-cluster.sh: $*" >&2; exit 1; }
usage() { sed -n '5,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

need_binaries() {
    command -v "$ETCD" >/dev/null || die "$ETCD not found (apt: etcd-server, or set FERRY_ETCD_BIN)"
    command -v "$ETCDCTL" >/dev/null || die "$ETCDCTL not found (apt: etcd-client, or set FERRY_ETCDCTL)"
}

base_of() {
    [[ -f $1/base ]] || die "$1 holds no cluster started by this script (no $1/base)"
    cat "$1/base"
}

client_port() { echo $(($1 + $2)); }
peer_port() { echo $(($1 + 10 + $2)); }

endpoints_of() {
    local base=$1 list="" n
    for n in "${MEMBERS[@]}"; do
        list+="${list:+,}127.0.0.1:$(client_port "$base" "$n")"
    done
    echo "$list"
}

# The pid in DIR/mN.pid if that process is still this member (not a reused pid).
member_pid() {
    local dir=$1 n=$2 pid
    [[ -f $dir/m$n.pid ]] || return 1
    pid=$(cat "$dir/m$n.pid")
    [[ -r /proc/$pid/cmdline ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q -- "--data-dir $dir/m$n " || return 1
    echo "$pid"
}

start_member() {
    local dir=$1 base=$2 n=$3 cluster="" m
    for m in "${MEMBERS[@]}"; do
        cluster+="${cluster:+,}m$m=http://127.0.0.1:$(peer_port "$base" "$m")"
    done
    # Detached from the caller's terminal and pipes: a test that runs this script with
    # captured output must not wait for etcd to close them.
    setsid "$ETCD" --name "m$n" --data-dir "$dir/m$n" \
        --listen-client-urls "http://127.0.0.1:$(client_port "$base" "$n")" \
        --advertise-client-urls "http://127.0.0.1:$(client_port "$base" "$n")" \
        --listen-peer-urls "http://127.0.0.1:$(peer_port "$base" "$n")" \
        --initial-advertise-peer-urls "http://127.0.0.1:$(peer_port "$base" "$n")" \
        --initial-cluster "$cluster" --initial-cluster-token "ferry-$base" --initial-cluster-state new \
        --auto-compaction-mode=periodic --auto-compaction-retention=10m \
        --logger zap --log-outputs "$dir/m$n.log" \
        </dev/null >>"$dir/m$n.out" 2>&1 &
    local pid=$! deadline=$((SECONDS + 5))
    echo "$pid" >"$dir/m$n.pid"
    # Until the forked shell has exec'd etcd, the pid's command line is still bash's.
    until member_pid "$dir" "$n" >/dev/null || ! kill -0 "$pid" 2>/dev/null || ((SECONDS >= deadline)); do
        sleep 0.05
    done
}

# Waits (bounded) until every listed member answers `endpoint status` and reports a leader.
wait_for_leader() {
    local dir=$1 base=$2 deadline status n
    shift 2
    deadline=$((SECONDS + WAIT_SECONDS))
    while ((SECONDS < deadline)); do
        for n in "$@"; do
            member_pid "$dir" "$n" >/dev/null \
                || die "member m$n exited; its log: $(tail -n 5 "$dir/m$n.log" "$dir/m$n.out" 2>/dev/null)"
        done
        local list="" ok=1
        for n in "$@"; do list+="${list:+,}127.0.0.1:$(client_port "$base" "$n")"; done
        if status=$("$ETCDCTL" --endpoints="$list" --dial-timeout=1s --command-timeout=2s \
                endpoint status -w json 2>/dev/null); then
            for n in "$@"; do
                grep -q "\"Endpoint\":\"127.0.0.1:$(client_port "$base" "$n")\",\"Status\":{[^}]*}[^}]*\"leader\":[1-9]" \
                    <<<"$status" || ok=0
            done
            ((ok)) && return 0
        fi
        sleep 0.2
    done
    die "no leader seen by m$* within ${WAIT_SECONDS}s (logs in $dir)"
}

# Sends SIGNAL to the listed members at once (a member stopped alone first tries to hand
# its leadership to the others, which takes seconds when they are going too), then waits
# (bounded) until they are gone, with KILL after 10 s.
stop_members() {
    local dir=$1 signal=$2 n pid deadline pids=()
    shift 2
    for n in "$@"; do
        if pid=$(member_pid "$dir" "$n"); then
            kill "$signal" "$pid" 2>/dev/null || true
            pids+=("$pid")
        fi
    done
    deadline=$((SECONDS + 10))
    for pid in "${pids[@]}"; do
        while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
            while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
        fi
    done
    for n in "$@"; do rm -f "$dir/m$n.pid"; done
}

check_member() {
    [[ $1 =~ ^[123]$ ]] || die "member must be 1, 2 or 3, not '$1'"
}

command=${1:-}
[[ -n $command && -n ${2:-} ]] || usage
dir=$2
case $command in
start)
    need_binaries
    base=${3:-23900}
    if ! [[ $base =~ ^[0-9]+$ ]] || ((base < 1 || base + 13 > 65535)); then
        die "bad base port '$base'"
    fi
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    for n in "${MEMBERS[@]}"; do
        ! member_pid "$dir" "$n" >/dev/null || die "m$n is already running in $dir (stop it first)"
    done
    echo "$base" >"$dir/base"
    for n in "${MEMBERS[@]}"; do start_member "$dir" "$base" "$n"; done
    if ! (wait_for_leader "$dir" "$base" "${MEMBERS[@]}"); then
        stop_members "$dir" -KILL "${MEMBERS[@]}"
        exit 1
    fi
    endpoints_of "$base"
    ;;
stop)
    dir=$(cd "$dir" && pwd)
    stop_members "$dir" -TERM "${MEMBERS[@]}"
    ;;
kill)
    check_member "${3:-}"
    dir=$(cd "$dir" && pwd)
    stop_members "$dir" -KILL "$3"
    ;;
restart)
    need_binaries
    check_member "${3:-}"
    dir=$(cd "$dir" && pwd)
    base=$(base_of "$dir")
    stop_members "$dir" -KILL "$3"
    start_member "$dir" "$base" "$3"
    # Back when it answers; whether it sees a leader depends on the others, so that is
    # waited for only when a quorum is running.
    running=0
    for n in "${MEMBERS[@]}"; do member_pid "$dir" "$n" >/dev/null && running=$((running + 1)); done
    if ((running >= 2)); then
        wait_for_leader "$dir" "$base" "$3"
    else
        deadline=$((SECONDS + WAIT_SECONDS))
        until "$ETCDCTL" --endpoints="127.0.0.1:$(client_port "$base" "$3")" --dial-timeout=1s \
                --command-timeout=2s endpoint status >/dev/null 2>&1; do
            member_pid "$dir" "$3" >/dev/null || die "m$3 exited; its log: $(tail -n 5 "$dir/m$3.log")"
            ((SECONDS < deadline)) || die "m$3 did not answer within ${WAIT_SECONDS}s"
            sleep 0.2
        done
    fi
    ;;
endpoints)
    endpoints_of "$(base_of "$dir")"
    ;;
*)
    usage
    ;;
esac
