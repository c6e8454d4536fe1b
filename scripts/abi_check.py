#!/usr/bin/env python3
"""The Hub's ABI check (kernel-abi-check, as `kernel-builder check-abi` runs it) on built binaries.

    python scripts/abi_check.py build/*/*.abi3.so build-sim/*/*.abi3.so [more binaries]

Fails when a binary uses a Python symbol outside the limited API of Python 3.9 (the abi3 the
Hub's kernels are built for). Also reports the symbols that manylinux_2_28 does not allow (a
binary built here links against this machine's newer glibc/libstdc++; kernel-builder builds
against the manylinux_2_28 sysroot): those are listed, with the library and version asked for,
and fail the check only with --strict-manylinux.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import kernel_abi_check as abi

PYTHON_ABI = "3.9"
MANYLINUX = "manylinux_2_28"


def check(binary: str, strict_manylinux: bool) -> bool:
    obj = abi.ObjectFile(binary)
    python = obj.check_python_abi(PYTHON_ABI)
    ok = not python
    print(f"{binary}: {obj.format()}")
    print(f"  python abi3 {PYTHON_ABI}: {'ok' if not python else f'{len(python)} violations'}")
    for v in python:
        print(f"    {v!r}")
    if obj.format() == abi.BinaryFormat.ELF:
        linux = obj.check_manylinux(MANYLINUX)
        by_version = defaultdict(list)
        for v in linux:
            by_version[(v.dep, v.version)].append(v.name)
        print(f"  {MANYLINUX}: {'ok' if not linux else f'{len(linux)} symbols newer than allowed'}")
        for (dep, version), names in sorted(by_version.items()):
            print(f"    {dep} {version}: {', '.join(sorted(names))}")
        ok = ok and (not linux or not strict_manylinux)
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--strict-manylinux", action="store_true",
                        help=f"also fail on symbols {MANYLINUX} does not allow")
    args = parser.parse_args()
    results = [check(b, args.strict_manylinux) for b in args.binaries]
    if not all(results):
        raise SystemExit("ABI check failed")
    print(f"ABI check passed for {len(results)} binaries")


if __name__ == "__main__":
    main()
