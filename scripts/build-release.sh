#!/usr/bin/env bash
# Builds the release `ferry` as it ships and prints its path. On Linux with glibc it is a
# static PIE (glibc linked in, addresses still randomized): the shared C libraries a
# dynamic build maps cost about 2 MB of resident memory, a fifth of the proxy's budget.
# Host names still resolve through /etc/hosts and DNS (glibc's built-in NSS modules).
# `--target` keeps the static flag off build scripts and proc macros, which must stay
# dynamic; the binary lands in target/<host>/release/.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
flags=${RUSTFLAGS:-}
case $host in
    *-linux-gnu) flags="-C target-feature=+crt-static $flags" ;;
esac
RUSTFLAGS=$flags cargo build --release --locked --target "$host" -p ferry-bridge >&2
echo "target/$host/release/ferry"
