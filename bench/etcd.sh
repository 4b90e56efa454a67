#!/usr/bin/env bash
# Many Ferry nodes on one etcd (issue 14), side by side with the embedded default in one
# run: a three-member etcd 3.4 on loopback (fsync on, data in a temporary folder), three
# Ferry nodes on it and one embedded-default Ferry, all release builds. Measures
# registration-to-visibility on another node, Consul health blocking queries on one node
# woken by a registration on another, Eureka renewals per second per node, each node's RSS
# with 10,000 instances and the time a fourth node takes to load them (bench/etcd.py says
# exactly how). About 2 minutes once built (QUICK=1: about 30 seconds).
#
# Usage: bench/etcd.sh [--record]   (--record appends the section to bench/RESULTS.md)
# Sizes (environment): REGISTRATIONS (300), WATCHERS (1000), ROUNDS (5), INSTANCES (10000),
# SECONDS_PER_RUN (10, each renewal run), CONNECTIONS (16, renewal concurrency), ETCD_PORT
# (42379: etcd's client ports are +1..3, its peer ports +11..13). QUICK=1: a smoke run with
# small sizes (the others still override them). FERRY=path measures that binary instead of
# building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."

# shellcheck source=bench/common.sh
source bench/common.sh
install_missing etcd:etcd-server etcdctl:etcd-client wrk:wrk
ferry=${FERRY:-$(scripts/build-release.sh)}
cargo build --release --locked -p ferry-bench-loadgen >&2
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/python -m pip install -q -r tests/requirements.txt; }

if [ "${QUICK:-0}" = 1 ]; then
    quick=(30 50 1 300 2)
else
    quick=(300 1000 5 10000 10)
fi
registrations=${REGISTRATIONS:-${quick[0]}}
watchers=${WATCHERS:-${quick[1]}}
rounds=${ROUNDS:-${quick[2]}}
instances=${INSTANCES:-${quick[3]}}
seconds=${SECONDS_PER_RUN:-${quick[4]}}
connections=${CONNECTIONS:-16}
etcd_port=${ETCD_PORT:-42379}

# The command line as recorded: the knobs that were set, then the arguments.
command="bench/etcd.sh"
for knob in QUICK REGISTRATIONS WATCHERS ROUNDS INSTANCES SECONDS_PER_RUN CONNECTIONS ETCD_PORT; do
    if [ -n "${!knob:-}" ]; then command="$knob=${!knob} $command"; fi
done
if [ $# -gt 0 ]; then command="$command $*"; fi

# 1,000 watchers hold 1,000 connections on each side.
ulimit -n "$(ulimit -Hn)"

# Every process bench/etcd.py starts writes its pid to $work/NAME.pid: stop_scratch (the
# EXIT trap) kills them all, and the helper itself, even if the helper could not.
start_scratch
.venv/bin/python bench/etcd.py --ferry "$(realpath "$ferry")" --loadgen "$(realpath target/release/ferry-bench-loadgen)" \
    --work "$work" --registrations "$registrations" --watchers "$watchers" --rounds "$rounds" \
    --instances "$instances" --seconds "$seconds" --connections "$connections" --etcd-port "$etcd_port" \
    --command "$command" "$@" &
pids+=("$!")
wait "$!"
