#!/usr/bin/env bash
# Builds the release `ferry` as it ships and prints its path. On Linux with glibc it is a
# static PIE (glibc linked in, addresses still randomized): the shared C libraries a
# dynamic build maps cost about 2 MB of resident memory, a fifth of the proxy's budget.
# Host names still resolve through /etc/hosts and DNS (glibc's built-in NSS modules).
# `--target` keeps the static flag off build scripts and proc macros, which must stay
# dynamic; the binary lands in target/<host>/release/.
#
# The build is profile-guided: an instrumented build (target/pgo/build) runs
# scripts/pgo_train.py (a node's everyday work on loopback; with FERRY_PGO_SIDECAR=1 also
# two sidecar nodes on etcd), llvm-profdata merges what it recorded, and the shipped build
# uses it. What matters most is layout, not speed: code the
# training never ran goes to `.text.unlikely`, which the linker groups, so the pages a
# running node touches sit together, and the kernel, which maps code in 64 KB windows around
# each page touched, no longer maps most of the binary (bench/RESULTS.md has the figures).
# llvm-profdata must match rustc's LLVM: llvm-N from Debian's packages (installed here as
# root) or rustup's llvm-tools. Without one, or with FERRY_PGO=0, the build is plain (and
# says so). The profile is made again only when the instrumented binary or the training changed.
#
# etcd-client's build script needs protoc (and FERRY_PGO_SIDECAR's training etcd):
# scripts/install-etcd.sh installs both from Debian's packages when missing (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
scripts/install-etcd.sh >&2
host=$(rustc -vV | sed -n 's/^host: //p')
flags=${RUSTFLAGS:-}
case $host in
    *-linux-gnu) flags="-C target-feature=+crt-static $flags" ;;
esac
llvm_major=$(rustc -vV | sed -n 's/^LLVM version: \([0-9]*\).*/\1/p')
find_profdata() {
    local candidate
    for candidate in "llvm-profdata-$llvm_major" "/usr/lib/llvm-$llvm_major/bin/llvm-profdata" \
            "$(rustc --print sysroot)/lib/rustlib/$host/lib/rustlib/$host/bin/llvm-profdata" \
            "$(rustc --print sysroot)/lib/rustlib/$host/bin/llvm-profdata"; do
        if command -v "$candidate" >/dev/null 2>&1; then
            command -v "$candidate"
            return
        fi
    done
    return 1
}

profile=""
if [ "${FERRY_PGO:-1}" != 0 ]; then
    tool=$(find_profdata) || tool=""
    if [ -z "$tool" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "llvm-$llvm_major" >&2 \
            || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "llvm-$llvm_major" >&2; } || true
        tool=$(find_profdata) || tool=""
    fi
    if [ -z "$tool" ]; then
        echo "scripts/build-release.sh: no llvm-profdata for LLVM $llvm_major (apt: llvm-$llvm_major):" \
            "building without a profile" >&2
    elif ! command -v python3 >/dev/null; then
        echo "scripts/build-release.sh: no python3 to run the training: building without a profile" >&2
    else
        pgo="$root/target/pgo"
        # Its own target directory: other flags would make cargo rebuild the shipped one.
        CARGO_TARGET_DIR="$pgo/build" RUSTFLAGS="$flags -Cprofile-generate=$pgo/raw" \
            cargo build --release --locked --target "$host" -p ferry-bridge >&2
        instrumented="$pgo/build/$host/release/ferry"
        trained="single node${FERRY_PGO_SIDECAR:+ and sidecars}"
        if [ ! -s "$pgo/ferry.profdata" ] || [ "$instrumented" -nt "$pgo/ferry.profdata" ] \
                || [ scripts/pgo_train.py -nt "$pgo/ferry.profdata" ] \
                || [ "$(cat "$pgo/trained" 2>/dev/null)" != "$trained" ]; then
            rm -rf "$pgo/raw" "$pgo/train"
            python3 scripts/pgo_train.py "$instrumented" "$pgo/train" >&2
            "$tool" merge -o "$pgo/ferry.profdata.new" "$pgo"/raw/*.profraw
            mv "$pgo/ferry.profdata.new" "$pgo/ferry.profdata"
            echo "$trained" >"$pgo/trained"
            rm -rf "$pgo/raw" "$pgo/train"
        fi
        profile="-Cprofile-use=$pgo/ferry.profdata"
    fi
fi

RUSTFLAGS="$flags $profile" cargo build --release --locked --target "$host" -p ferry-bridge >&2
echo "target/$host/release/ferry"
