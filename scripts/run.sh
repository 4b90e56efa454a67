#!/usr/bin/env bash
# Builds and runs ferry with its embedded defaults (single node, in-memory registry):
# Eureka on 127.0.0.1:8761, admin on 127.0.0.1:15000. Extra arguments go to ferry,
# e.g. `scripts/run.sh --eureka-listen 0.0.0.0:8761`; `scripts/run.sh --help` lists them all.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null; then
    echo "scripts/run.sh: cargo (Rust 1.90 or newer) is required" >&2
    exit 1
fi
ferry=$(scripts/build-release.sh)
exec "$ferry" "$@"
