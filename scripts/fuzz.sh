#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ (cargo-fuzz, libFuzzer) for SECONDS each (default 10),
# one after the other, and fails on the first crash, leak, timeout or out-of-memory. Prints
# each target's executions and coverage (libFuzzer's final `cov`/`ft`) as a table.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# The committed corpus (fuzz/corpus/<target>, seeded from the tests' documents) is only
# read: what a run adds goes to $FUZZ_WORK/corpus/<target> (a temporary folder unless
# FUZZ_WORK is set, as bench/fuzz-long.sh does), so runs never dirty the tree. A crashing
# input is kept in fuzz/artifacts/<target>/ (ignored by git); replay it with
# `cd fuzz && cargo +nightly fuzz run <target> artifacts/<target>/<file>`.
#
# Toolchain: cargo-fuzz builds with `-Zsanitizer=address` and sanitizer-coverage flags, so
# it needs nightly. With a nightly toolchain under rustup the targets are built with
# AddressSanitizer (memory errors in C code linked in, and leaks, are caught too). Without
# one (a machine with only stable Rust) they are built on stable with RUSTC_BOOTSTRAP=1,
# which lets stable rustc accept the `-Z` flags, and `-s none`: stable's standard library
# has no ASan runtime to link, but the coverage instrumentation libFuzzer needs is plain
# LLVM and works, and the targets are safe Rust, where ASan adds little. Either way the
# build is release with debug assertions and overflow checks, and 16 codegen units (not
# cargo-fuzz's default of 1): the build is most of a short run's time on two cores.
#
# The build goes to FERRY_FUZZ_TARGET_DIR (default: ~/.cache/ferry-fuzz-target), outside
# the tree, so a fresh clone on the same machine (CI's) reuses the instrumented
# dependencies and rebuilds only Ferry's crates; from nothing, the build takes about five
# minutes of two cores. The targets are copied out of it before they run, as another
# checkout may build into the same folder.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

seconds=${1:-10}
shift || true
case "$seconds" in
'' | *[!0-9]*)
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]" >&2
    exit 2
    ;;
esac

# cargo-fuzz itself: from crates.io, into cargo's own bin folder, only when missing.
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

# FERRY_FUZZ_STABLE=1 takes the stable path even where nightly is installed (to test it).
if [ -z "${FERRY_FUZZ_STABLE:-}" ] && cargo +nightly --version >/dev/null 2>&1; then
    toolchain=(+nightly)
    sanitizer=address
else
    toolchain=()
    sanitizer=none
    export RUSTC_BOOTSTRAP=1
fi
triple=x86_64-unknown-linux-gnu

cd fuzz
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo "${toolchain[@]}" fuzz list)
fi

echo "== building the fuzz targets (sanitizer: $sanitizer, toolchain: ${toolchain[*]:-stable})"
# One build for all targets: `cargo fuzz build` without a name builds every one.
target_dir=${FERRY_FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ferry-fuzz-target}
cargo "${toolchain[@]}" fuzz build -O --debug-assertions --sanitizer "$sanitizer" \
    --codegen-units 16 --target "$triple" --target-dir "$target_dir"

work=${FUZZ_WORK:-}
if [ -z "$work" ]; then
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
fi
mkdir -p "$work/logs" "$work/bin"
for target in "${targets[@]}"; do
    cp "$target_dir/$triple/release/$target" "$work/bin/"
done
bin_dir="$work/bin"

summary=()
failed=()
for target in "${targets[@]}"; do
    echo "== fuzzing $target for ${seconds}s"
    mkdir -p "$work/corpus/$target" "$root/fuzz/artifacts/$target"
    log="$work/logs/$target.log"
    status=0
    started=$SECONDS
    # The first corpus folder receives new inputs; the committed seeds are only read.
    "$bin_dir/$target" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$root/fuzz/artifacts/$target/" \
        "$work/corpus/$target" "$root/fuzz/corpus/$target" >"$log" 2>&1 || status=$?
    executions=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    coverage=$(grep -Eo 'cov: [0-9]+ ft: [0-9]+' "$log" | tail -n 1 || true)
    corpus=$(find "$work/corpus/$target" "$root/fuzz/corpus/$target" -type f | wc -l)
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        echo "FAILED: $target (exit $status); what it said:" >&2
        grep -E -A4 "panicked at|ERROR: (AddressSanitizer|libFuzzer)" "$log" | head -n 30 >&2 || true
        grep -E "^(MS:|artifact_prefix)" "$log" >&2 || true
        result=crash
    else
        result=ok
    fi
    summary+=("$(printf '%-18s %-6s %6s %12s  %-20s %6s' "$target" "$result" "$((SECONDS - started))" \
        "${executions:-?}" "${coverage:-?}" "$corpus")")
done

echo "== fuzzing summary (${seconds}s per target)"
printf '%-18s %-6s %6s %12s  %-20s %6s\n' target result secs executions coverage inputs
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzzing found crashes in: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
    exit 1
fi
