"""Which of a running ferry's code is resident, and why: for each output section of the
binary (`.text`, `.text.hot`, `.text.unlikely`, `.rodata`...) its size and the bytes the
process has mapped (/proc/PID/pagemap's present bits, read as root), then the same per crate
of the symbols in the executable mapping. The kernel maps code in 64 KB windows around each
page touched (fault-around), so what counts is where touched functions lie, which is what the
profile-guided layout of scripts/build-release.sh changes.

Usage (root): bench/resident_code.py PID BINARY [CRATES]  (CRATES: how many crates to list, 25)
       bench/resident_code.py PID BINARY --pages  (each mapping of the binary: its addresses,
       file offset and one 0/1 a page, resident or not, to see which 64 KB windows are in)"""

import collections
import re
import struct
import subprocess
import sys


def main():
    pid, binary = int(sys.argv[1]), sys.argv[2]
    pages = sys.argv[3:] == ["--pages"]
    crates_shown = int(sys.argv[3]) if len(sys.argv) > 3 and not pages else 25
    mappings = []
    for line in open(f"/proc/{pid}/maps").read().splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[5].endswith("/" + binary.rsplit("/", 1)[-1]):
            low, high = (int(x, 16) for x in fields[0].split("-"))
            mappings.append((low, high, int(fields[2], 16)))
    pagemap = open(f"/proc/{pid}/pagemap", "rb")

    def resident(address: int) -> bool:
        pagemap.seek((address // 4096) * 8)
        return bool(struct.unpack("Q", pagemap.read(8))[0] >> 63)

    if pages:
        for low, high, offset in mappings:
            bits = "".join("1" if resident(page) else "0" for page in range(low, high, 4096))
            print(f"{low:x}-{high:x} {offset:08x} {bits}")
        return

    def process_address(file_offset: int):
        for low, high, offset in mappings:
            if offset <= file_offset < offset + (high - low):
                return low + (file_offset - offset)
        return None

    sections = []
    for line in subprocess.run(["readelf", "-SW", binary], capture_output=True, text=True).stdout.splitlines():
        match = re.search(r"\]\s+(\.\S+)\s+(PROGBITS|RELA)\s+([0-9a-f]+)\s+([0-9a-f]+)\s+([0-9a-f]+)", line)
        if match and match.group(1).startswith((".text", ".rodata", ".eh_frame", ".gcc_except", ".rela", ".data.rel.ro")):
            sections.append((match.group(1), int(match.group(3), 16), int(match.group(4), 16), int(match.group(5), 16)))
    bias = None
    print(f"{'section':22} {'size MB':>8} {'resident MB':>12}")
    for name, vaddr, offset, size in sections:
        start = process_address(offset)
        if start is None:
            continue
        if name == ".text" or bias is None:
            bias = start - vaddr
        present = sum(4096 for page in range(start & ~4095, start + size, 4096) if resident(page))
        print(f"{name:22} {size / 1e6:8.2f} {present / 1e6:12.2f}")

    totals, present = collections.Counter(), collections.Counter()
    symbols = subprocess.run(["nm", "-S", "-C", "--defined-only", binary], capture_output=True, text=True).stdout
    for line in symbols.splitlines():
        fields = line.split(None, 3)
        if len(fields) != 4 or fields[2] not in "tTwW":
            continue
        address, size, name = int(fields[0], 16) + bias, int(fields[1], 16), fields[3]
        match = re.match(r"[<]*(?:&?(?:dyn |mut )?)?([a-zA-Z_][a-zA-Z0-9_]*)::", name)
        crate = match.group(1) if match else "(other)"
        totals[crate] += size
        page = address & ~4095
        while page < address + size:
            if resident(page):
                present[crate] += min(page + 4096, address + size) - max(page, address)
            page += 4096
    print(f"\n{'crate':28} {'code kB':>8} {'resident kB':>12}")
    for crate in sorted(totals, key=lambda c: -present[c])[:crates_shown]:
        print(f"{crate:28} {totals[crate] / 1e3:8.0f} {present[crate] / 1e3:12.0f}")


if __name__ == "__main__":
    main()
