#!/usr/bin/env python3
"""Cross-build the `cpu` variant for aarch64-linux, laid out as kernel-builder lays it out:

    python scripts/aarch64/build.py   # (make build-aarch64) -> build-aarch64/torch213-cxx11-cpu-aarch64-linux/

The sources, flags and layout are scripts/build_local.py's; only the compiler (Debian's
aarch64-linux-gnu-g++) and the torch and Python it builds against (the aarch64 wheel and the
arm64 Python headers of `.aarch64/`, made by scripts/aarch64/setup.py) differ. The x86 tile
kernels compile to empty units there; the portable kernel is the one that runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import build_local  # noqa: E402

ROOT = REPO / ".aarch64"
SYSROOT = ROOT / "sysroot"
SITE = ROOT / "venv" / "lib" / "python3.11" / "site-packages"
OUT_ROOT = REPO / "build-aarch64"


def aarch64_target() -> build_local.CrossTarget:
    import torch  # the host's: the variant name's torch version and C++ ABI are the same

    if not (SITE / "torch" / "include").is_dir():
        raise SystemExit("no aarch64 torch: run `make aarch64-setup` first")
    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    abi = "cxx11" if torch._C._GLIBCXX_USE_CXX11_ABI else "cxx98"
    return build_local.CrossTarget(
        cxx="aarch64-linux-gnu-g++",
        torch_dir=SITE / "torch",
        python_include=SYSROOT / "usr" / "include" / "python3.11",
        variant_name=f"torch{major}{minor}-{abi}-cpu-aarch64-linux",
        # Debian's pyconfig.h includes <aarch64-linux-gnu/python3.11/pyconfig.h>; searched after
        # the cross compiler's own C library headers.
        cxx_flags=["-idirafter", str(SYSROOT / "usr" / "include")],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    variant = dataclasses.replace(build_local.cpu_variant(build_local.read_build_toml()),
                                  out_root=OUT_ROOT)
    out_dir = build_local.build(variant, args.jobs, target=aarch64_target())
    print(f"built {out_dir.relative_to(REPO)}")


if __name__ == "__main__":
    main()
