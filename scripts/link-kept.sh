#!/usr/bin/env bash
# The release build's linker (scripts/build-release.sh passes it as `-C linker`): links
# with cc exactly as rustc asks, and when FERRY_LINK_KEEP=DIR is set keeps what it takes
# to link the same binary again, its arguments and the inputs rustc deletes once it has
# linked (its temporary folder's files and the fat LTO's one object), under DIR.
#
# Why: the build lays the binary's functions out by what a node executes, and only the
# linked binary can say that exactly (callgrind on it: every function with the very name
# the linker knows, LTO's local copies included). Linking it again with that order takes
# seconds; asking rustc would compile the whole program again (fat LTO, minutes).
#
#   link-kept.sh ARGS...                      as rustc's linker
#   link-kept.sh --again DIR ORDER OUTPUT     the kept link, with lld's symbol order ORDER,
#                                             written to OUTPUT
set -euo pipefail

if [ "${1:-}" = --again ]; then
    dir=$2 order=$3 output=$4
    args=()
    while IFS= read -r -d '' arg; do
        case $arg in
            -Wl,--symbol-ordering-file=*) arg="-Wl,--symbol-ordering-file=$order" ;;
        esac
        args+=("$arg")
    done <"$dir/args"
    # The output follows `-o`.
    for i in "${!args[@]}"; do
        if [ "${args[$i]}" = -o ]; then args[$((i + 1))]=$output; fi
    done
    grep -qz -- '^-Wl,--symbol-ordering-file=' "$dir/args" \
        || { echo "link-kept.sh: the kept link has no symbol order to replace" >&2; exit 1; }
    exec cc "${args[@]}"
fi

if [ -n "${FERRY_LINK_KEEP:-}" ]; then
    keep=$FERRY_LINK_KEEP
    rm -rf "$keep"
    mkdir -p "$keep/inputs"
    kept=()
    number=0
    for arg in "$@"; do
        case $arg in
            @*) echo "link-kept.sh: rustc passed an argument file; this link is not kept" >&2
                rm -rf "$keep"
                exec cc "$@" ;;
        esac
        if [ -f "$arg" ] && { [[ $arg == */rustc* ]] || [[ $arg == *.rcgu.o ]]; }; then
            number=$((number + 1))
            copy="$keep/inputs/$number-$(basename "$arg")"
            cp "$arg" "$copy"
            arg=$copy
        fi
        kept+=("$arg")
    done
    printf '%s\0' "${kept[@]}" >"$keep/args"
fi
exec cc "$@"
