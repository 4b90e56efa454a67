#!/usr/bin/env bash
# Builds the release `ferry` as it ships and prints its path. On Linux with glibc it is a
# static PIE (glibc linked in, addresses still randomized): the shared C libraries a
# dynamic build maps cost about 2 MB of resident memory, a fifth of the proxy's budget.
# Host names still resolve through /etc/hosts and DNS (glibc's built-in NSS modules).
# `--target` keeps the static flag off build scripts and proc macros, which must stay
# dynamic; the binary lands in target/<host>/release/.
#
# The build is profile-guided: an instrumented build (target/pgo/build) runs
# scripts/pgo_train.py (a node's everyday work on loopback, a single node and two sidecar
# nodes on etcd), llvm-profdata merges what it recorded, and the shipped build
# uses it. What matters most is layout, not speed: code the
# training never ran goes to `.text.unlikely`, which the linker groups, so the pages a
# running node touches sit together, and the kernel, which maps code in 64 KB windows around
# each page touched, no longer maps most of the binary (bench/RESULTS.md has the figures).
# llvm-profdata must match rustc's LLVM: llvm-N from Debian's packages (installed here as
# root) or rustup's llvm-tools. Without one, or with FERRY_PGO=0, the build is plain (and
# says so). The profile is made again only when the instrumented binary or the training changed.
#
# The training runs a single node and two sidecar nodes on a one-member etcd
# (FERRY_PGO_SIDECAR=0 trains the single node only), each role's profile apart, and
# scripts/code_order.py orders the functions by role for the linker: what both kinds of
# node run, then the single node's own, then the sidecar's own. Profile-guided layout alone
# put everything the training ran together, so each kind of node mapped the other's code
# lying among its own. That order needs lld (`--symbol-ordering-file`; Debian's lld-N,
# installed here as root like llvm-N); with GNU ld the build keeps the profile's layout.
# Relative relocations are packed (`-z pack-relative-relocs`, RELR; glibc 2.36 applies
# them in a static PIE): 0.5 MB of `.rela.dyn` a node read at start and kept mapped
# becomes 6 KB (bench/RESULTS.md).
#
# Then the layout is finished on the linked binary itself: the training runs again, a
# twentieth of it, under valgrind's callgrind (installed here as root like llvm-N), which
# lists every function each node executed by the name the linker knows, the precompiled
# standard library, glibc and ring's C and assembly included (the profile sees none of
# them, and LTO's local copies get new names); scripts/code_order.py adds them to their
# role's group and scripts/link-kept.sh, the build's linker, links the same objects again
# in that order (seconds; bench/RESULTS.md has what it saves). FERRY_PGO_TRACE=0 skips it.
#
# etcd-client's build script needs protoc (and the sidecar training etcd):
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

# A folder holding `ld.lld`, for gcc's -fuse-ld=lld -B: Debian's lld-N or rustup's rust-lld.
find_lld() {
    local candidate
    for candidate in "/usr/lib/llvm-$llvm_major/bin" "$(rustc --print sysroot)/lib/rustlib/$host/bin/gcc-ld"; do
        if [ -x "$candidate/ld.lld" ]; then
            echo "$candidate"
            return
        fi
    done
    return 1
}

profile=""
link=""
pgo=""
tracing=0
linker_dir=""
case $host in
    *-linux-gnu) link="-C link-arg=-Wl,-z,pack-relative-relocs" ;;
esac
if [ "${FERRY_PGO:-1}" != 0 ]; then
    tool=$(find_profdata) || tool=""
    linker_dir=$(find_lld) || linker_dir=""
    tracing=${FERRY_PGO_TRACE:-1}
    if { [ -z "$tool" ] || [ -z "$linker_dir" ] || { [ "$tracing" != 0 ] && ! command -v valgrind >/dev/null; }; } \
            && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
        packages=("llvm-$llvm_major" "lld-$llvm_major")
        [ "$tracing" != 0 ] && packages+=(valgrind)
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >&2 \
            || { apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
                --no-install-recommends "${packages[@]}" >&2; } || true
        tool=$(find_profdata) || tool=""
        linker_dir=$(find_lld) || linker_dir=""
    fi
    if [ "$tracing" != 0 ] && ! command -v valgrind >/dev/null; then
        echo "scripts/build-release.sh: no valgrind (apt: valgrind): the runtime's functions keep the linker's layout" >&2
        tracing=0
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
        sidecar=${FERRY_PGO_SIDECAR:-1}
        [ "$sidecar" = 0 ] && trained="single node" || trained="single node and sidecars"
        if [ ! -s "$pgo/ferry.profdata" ] || [ ! -s "$pgo/order.txt" ] || [ ! -e "$pgo/sidecar.covered" ] \
                || [ "$instrumented" -nt "$pgo/ferry.profdata" ] \
                || [ scripts/pgo_train.py -nt "$pgo/ferry.profdata" ] || [ scripts/code_order.py -nt "$pgo/order.txt" ] \
                || [ "$(cat "$pgo/trained" 2>/dev/null)" != "$trained" ]; then
            rm -rf "$pgo/raw" "$pgo/train"
            mkdir -p "$pgo/raw"
            FERRY_PGO_SIDECAR=$sidecar FERRY_PGO_ROLES="$pgo/raw" python3 scripts/pgo_train.py "$instrumented" "$pgo/train" >&2
            "$tool" merge -o "$pgo/ferry.profdata.new" "$pgo"/raw/*.profraw
            for role in single sidecar; do
                : >"$pgo/$role.covered"
                if compgen -G "$pgo/raw/$role-*.profraw" >/dev/null; then
                    "$tool" merge -o "$pgo/$role.profdata" "$pgo/raw/$role"-*.profraw
                    "$tool" show --covered "$pgo/$role.profdata" >"$pgo/$role.covered"
                fi
            done
            python3 scripts/code_order.py "$pgo/single.covered" "$pgo/sidecar.covered" >"$pgo/order.txt"
            mv "$pgo/ferry.profdata.new" "$pgo/ferry.profdata"
            echo "$trained" >"$pgo/trained"
            # The covered listings stay for the layout's last step.
            rm -rf "$pgo/raw" "$pgo/train" "$pgo/single.profdata" "$pgo/sidecar.profdata"
        fi
        profile="-Cprofile-use=$pgo/ferry.profdata"
        if [ -n "$linker_dir" ]; then
            # Named by its content: a new order changes the flags, so cargo links again.
            order="$pgo/order-$(sha256sum "$pgo/order.txt" | cut -c1-16).txt"
            if [ ! -e "$order" ]; then
                rm -f "$pgo"/order-*.txt
                cp "$pgo/order.txt" "$order"
            fi
            link="$link -C linker=$root/scripts/link-kept.sh -C link-arg=-fuse-ld=lld -C link-arg=-B$linker_dir"
            link="$link -C link-arg=-Wl,--symbol-ordering-file=$order -C link-arg=-Wl,--no-warn-symbol-ordering"
        else
            echo "scripts/build-release.sh: no lld for LLVM $llvm_major (apt: lld-$llvm_major):" \
                "functions keep the profile's layout, not the roles' order" >&2
        fi
    fi
fi

binary="target/$host/release/ferry"
FERRY_LINK_KEEP=${pgo:+$pgo/link} RUSTFLAGS="$flags $profile $link" \
    cargo build --release --locked --target "$host" -p ferry-bridge >&2

# The layout's last step (see the top), once per link: the kept link's binary is the one
# cargo just made or already had; `laid-out` names the binary this step last wrote.
if [ -n "$profile" ] && [ -n "$linker_dir" ] && [ "$tracing" != 0 ] && [ -s "$pgo/link/args" ] \
        && [ "$(sha256sum <"$binary")" != "$(cat "$pgo/laid-out" 2>/dev/null)" ]; then
    rm -rf "$pgo/trace" "$pgo/trace-work"
    mkdir -p "$pgo/trace"
    if FERRY_PGO_SIDECAR=$sidecar FERRY_PGO_TRACE_DIR="$pgo/trace" \
            python3 scripts/pgo_train.py "$binary" "$pgo/trace-work" >&2; then
        python3 scripts/code_order.py "$pgo/single.covered" "$pgo/sidecar.covered" "$pgo/trace" "$binary" \
            >"$pgo/link/order.txt"
        scripts/link-kept.sh --again "$pgo/link" "$pgo/link/order.txt" "$pgo/link/ferry" >&2
        # In place: cargo's copy under deps/ is the same file.
        cp "$pgo/link/ferry" "$binary"
        sha256sum <"$binary" >"$pgo/laid-out"
        echo "scripts/build-release.sh: laid out by the trace ($(wc -l <"$pgo/link/order.txt") functions ordered)" >&2
    else
        echo "scripts/build-release.sh: the traced run failed: the binary keeps the profile's order" >&2
    fi
    rm -rf "$pgo/trace-work"
fi
echo "$binary"
