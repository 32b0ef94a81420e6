#!/usr/bin/env python3
"""Lists the GPU code a binary carries, without cuobjdump: scripts/fatbin.py BINARY

Reads the ELF section .nv_fatbin that nvcc links into the program and prints one line per kind
of code: `sm_90 (machine code)` for code that runs as it is on that architecture, and
`compute_90 (PTX)` for code the driver compiles for newer ones. A GPU can run the program if it
finds its own sm_XY, or PTX for an architecture at or below its own. Exit codes: 0 listed; 1 the
binary has no GPU code (a CPU-only build); 2 not a readable ELF file."""
import struct
import sys

FATBIN_MAGIC = 0xBA55ED50  # each fat binary in the section starts with it
KINDS = {1: "ptx", 2: "elf"}


def sections(data):
    """ELF64 section name -> (file offset, size)."""
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("not a 64-bit ELF file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
    headers = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    names = headers[shstrndx][4]

    def name(off):
        return data[names + off:data.index(b"\0", names + off)].decode()

    return {name(h[0]): (h[4], h[5]) for h in headers}


def gpu_code(path):
    """Sorted (kind, arch) pairs: ("elf", 90) is sm_90 machine code, ("ptx", 90) compute_90."""
    with open(path, "rb") as f:
        data = f.read()
    found = sections(data).get(".nv_fatbin")
    if not found:
        return []
    pos, end = found[0], found[0] + found[1]
    code = set()
    while pos + 16 <= end:
        magic, _, header, size = struct.unpack_from("<IHHQ", data, pos)
        if magic != FATBIN_MAGIC:  # padding between fat binaries
            pos += 8
            continue
        entry, last = pos + header, pos + header + size
        while entry < last:  # entries: kind, header size, payload size, ..., arch at +28
            kind, _, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            arch, = struct.unpack_from("<I", data, entry + 28)
            code.add((KINDS.get(kind, str(kind)), arch))
            entry += entry_header + payload
        pos = last
    return sorted(code)


def main(argv):
    if len(argv) != 2:
        print("usage: fatbin.py BINARY", file=sys.stderr)
        return 2
    try:
        code = gpu_code(argv[1])
    except (OSError, ValueError, struct.error) as e:
        print(f"fatbin.py: error: {argv[1]}: {e}", file=sys.stderr)
        return 2
    if not code:
        print(f"fatbin.py: {argv[1]} carries no GPU code (a CPU-only build)", file=sys.stderr)
        return 1
    for kind, arch in code:
        print(f"sm_{arch} (machine code)" if kind == "elf" else f"compute_{arch} (PTX)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
