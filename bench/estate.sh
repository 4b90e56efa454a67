#!/usr/bin/env bash
# Ferry's RSS and CPU with the Spring sample estate registered, beside the real Eureka
# Server's and Config Server's with the same apps (bench/estate.py says how). --record
# appends the figures to bench/RESULTS.md. FERRY=path measures that binary instead of
# building the release one.
set -euo pipefail
cd "$(dirname "$0")/.."
ferry=${FERRY:-$(scripts/build-release.sh)}
scripts/build-samples.sh >/dev/null
[ -x .venv/bin/python ] || { python3 -m venv .venv && .venv/bin/python -m pip install -q -r tests/requirements.txt; }
exec .venv/bin/python bench/estate.py --ferry "$(realpath "$ferry")" "$@"
