#!/usr/bin/env bash
# The long fuzz run: every target for SECONDS (default 180, three minutes; the machine is
# shared, so not more), through scripts/fuzz.sh. The corpus a run grows is kept in
# fuzz/work/ (ignored by git), so the next long run starts where this one stopped; the
# summary table (executions, cov/ft, crashes) goes to bench/out/fuzz-long.txt too, for
# bench/RESULTS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-180}
shift || true
mkdir -p bench/out fuzz/work
FUZZ_WORK="$(pwd)/fuzz/work" scripts/fuzz.sh "$seconds" "$@" 2>&1 | tee bench/out/fuzz-long.txt
