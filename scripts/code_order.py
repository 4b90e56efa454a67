"""The order of the release binary's functions, for the linker (scripts/build-release.sh,
lld's --symbol-ordering-file): code both kinds of node run first, then what only a single
node runs, then what only a sidecar runs; everything else after, in the compiler's order.

Why: the kernel maps a binary's code in 64 KB windows around each page a process touches,
so a process's resident code is the windows its functions fall in, not the functions'
size. Profile-guided layout alone puts every function the training ran together, so a
sidecar also maps the single node's API code lying between its own, and the reverse; in
role order each kind of node maps little beyond what it runs.

Input: the covered-function listings (`llvm-profdata show --covered`) of the training's
single node and of its sidecar nodes (scripts/pgo_train.py with FERRY_PGO_ROLES). Names
are the symbols' mangled names; a local function's is prefixed by its module and `;`.
Rust's std, glibc and ring's assembly are not instrumented, so the profile does not see
them; the linker leaves them where they were.

Usage: code_order.py SINGLE_COVERED SIDECAR_COVERED > ORDER  (Python's standard library only)"""

import sys


def covered(path: str) -> list[str]:
    names = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith(("Functions shown", "Total functions", "Maximum", "Instrumentation")):
            continue
        names.append(line.rsplit(";", 1)[-1])
    return names


def main():
    single, sidecar = covered(sys.argv[1]), covered(sys.argv[2])
    in_single, in_sidecar = set(single), set(sidecar)
    both = [name for name in single if name in in_sidecar]
    single_only = [name for name in single if name not in in_sidecar]
    sidecar_only = [name for name in sidecar if name not in in_single]
    seen = set()
    for name in both + single_only + sidecar_only:
        if name not in seen:
            seen.add(name)
            print(name)


if __name__ == "__main__":
    main()
