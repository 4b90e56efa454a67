"""The order of the release binary's functions, for the linker (scripts/build-release.sh,
lld's --symbol-ordering-file): code both kinds of node run first, then what only a single
node runs, then what only a sidecar runs; everything else after, in the compiler's order.

Why: the kernel maps a binary's code in 64 KB windows around each page a process touches,
so a process's resident code is the windows its functions fall in, not the functions'
size. Profile-guided layout alone puts every function the training ran together, so a
sidecar also maps the single node's API code lying between its own, and the reverse; in
role order each kind of node maps little beyond what it runs.

Inputs: the covered-function listings (`llvm-profdata show --covered`) of the training's
single node and of its sidecar nodes (scripts/pgo_train.py with FERRY_PGO_ROLES). Names
are the symbols' mangled names; a local function's is prefixed by its module and `;`.

The profile sees only code compiled with its instrumentation. Rust's precompiled standard
library, glibc and ring's C and assembly are not, and left where the linker puts them they
lay scattered through the binary's cold code: a sidecar mapped 2.8 MB of windows around a
few hundred of them (bench/RESULTS.md). With a trace folder (scripts/pgo_train.py with
FERRY_PGO_TRACE_DIR: callgrind's list of every function each traced node executed) those
join their role's group too. Two kinds of code choose their variant by the CPU at run time,
and valgrind's emulated CPU lacks some of a real one's features (VAES, ADX, AVX-512), so a
traced variant stands for its whole family, read from the traced binary's symbols:
all of ring's functions once any ran (126 KB), and every CPU variant of a glibc string
function (`__memcpy_avx_unaligned_erms` brings `__memcpy_evex_unaligned_erms`...).

Usage: code_order.py SINGLE_COVERED SIDECAR_COVERED [TRACE_DIR BINARY] > ORDER
(Python's standard library, and binutils' nm with a trace)"""

import re
import subprocess
import sys
from pathlib import Path

# glibc's CPU variants of a string function: `__NAME_VARIANT...`.
IFUNC_VARIANT = re.compile(r"^__(\w+?)_(?:sse2|ssse3|sse4_1|sse42|avx2|avx512|avx|evex)")


def covered(path: str) -> list[str]:
    names = []
    for line in open(path, encoding="utf-8"):
        line = line.strip()
        if not line or line.startswith(("Functions shown", "Total functions", "Maximum", "Instrumentation")):
            continue
        names.append(line.rsplit(";", 1)[-1])
    return names


def traced(folder: Path, role: str) -> list[str]:
    """Every function a traced node of `role` executed, in first-seen order: callgrind's
    `fn=` lines (uncompressed names; `'N` marks a recursion depth; unnamed code is skipped)."""
    names = {}
    for path in sorted(folder.glob(f"{role}-*.callgrind")):
        for line in open(path, encoding="utf-8", errors="replace"):
            if line.startswith("fn="):
                name = re.sub(r"'\d+$", "", line[3:].strip())
                if name and not name.startswith(("0x", "(")):
                    names.setdefault(name, None)
    return list(names)


def families(binary: str) -> tuple[list[str], dict[str, list[str]]]:
    """ring's functions, and glibc's string functions' CPU variants by function, in the
    binary's address order."""
    listing = subprocess.run(["nm", "-n", "--defined-only", binary], capture_output=True, text=True,
                             check=True).stdout
    ring, variants = [], {}
    for line in listing.splitlines():
        fields = line.split()
        if len(fields) != 3 or fields[1] not in "tTwWi":
            continue
        name = fields[2]
        if "ring_core_" in name:
            ring.append(name)
        match = IFUNC_VARIANT.match(name)
        if match:
            variants.setdefault(match.group(1), []).append(name)
    return ring, variants


def with_runtime(names: list[str], trace: list[str], ring: list[str], variants: dict[str, list[str]]) -> list[str]:
    """A role's covered functions, then the traced ones the profile did not see, each
    standing for its family."""
    known = set(names)
    result = list(names)

    def add(name: str):
        if name not in known:
            known.add(name)
            result.append(name)

    for name in trace:
        add(name)
        if "ring_core_" in name:
            for sibling in ring:
                add(sibling)
        match = IFUNC_VARIANT.match(name)
        if match:
            for sibling in variants.get(match.group(1), []):
                add(sibling)
    return result


def main():
    single, sidecar = covered(sys.argv[1]), covered(sys.argv[2])
    if len(sys.argv) > 4:
        folder, binary = Path(sys.argv[3]), sys.argv[4]
        ring, variants = families(binary)
        single = with_runtime(single, traced(folder, "single"), ring, variants)
        sidecar = with_runtime(sidecar, traced(folder, "sidecar"), ring, variants)
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
