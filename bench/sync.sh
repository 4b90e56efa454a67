#!/usr/bin/env bash
# Ferry syncing with a legacy Eureka cluster (--sync-eureka), beside the real Spring Cloud
# Netflix Eureka Server as that cluster: the delay from a registration on one side to its
# visibility on the other (p50/p99/max over 100 changes each way, at Ferry's default 30 s
# sync interval and at 5 s, beside the legacy server's own response-cache delay), and
# Ferry's CPU and RSS while it syncs a legacy registry of 10,000 instances kept alive by
# heartbeats (bench/sync.py says how). About 8 minutes. --record appends the figures to
# bench/RESULTS.md; other options are bench/sync.py's (--intervals 30,5 --changes 100
# --instances 10000 --seconds 90). FERRY=path measures that binary instead of building
# the release one.
set -euo pipefail
cd "$(dirname "$0")/.."
ferry=${FERRY:-$(scripts/build-release.sh)}
cargo build --release --locked -p ferry-bench-loadgen >&2
scripts/build-samples.sh >/dev/null
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/python -m pip install -q -r tests/requirements.txt; }
exec .venv/bin/python bench/sync.py --ferry "$(realpath "$ferry")" \
    --loadgen "$(realpath target/release/ferry-bench-loadgen)" "$@"
