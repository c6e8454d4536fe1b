"""The Metal host code compiled: `make check-metal` (with check_metal.py).

attention_metal.mm is type-checked by clang-19 as Objective-C++ with the flags kernel-builder
compiles it with (C++20, no ARC), against PyTorch's real ATen/mps headers from the pinned torch
wheel and the Metal / Foundation / dispatch declarations in host/ (exactly the API the file and
ATen use, each with its Apple documentation reference). `-Werror`: a misspelled selector
(-Wobjc-method-access) or an argument of the wrong type fails. The GNU Objective-C runtime's
headers (Debian libobjc-12-dev) stand in for Apple's objc/objc.h.

Usage: python tests/msl_check/check_host.py [FILE.mm ...]   (default: every
metal-flash-sdpa/metal/*.mm). Needs torch importable by the running Python (the .venv).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
CLANG = os.environ.get("MSLC_CLANG", "clang++-19")
DEFAULT_SOURCES = sorted((REPO / "metal-flash-sdpa" / "metal").glob("*.mm"))


def objc_runtime_include() -> str:
    found = sorted(glob.glob("/usr/lib/gcc/*/*/include/objc/objc.h"))
    if not found:
        raise SystemExit("check-host: the GNU Objective-C headers are missing "
                         "(apt-get install libobjc-12-dev; `make check-metal` does)")
    return str(Path(found[-1]).parent.parent)


def torch_includes() -> list[str]:
    """The torch wheel's C++ headers (as torch.utils.cpp_extension.include_paths() lists them),
    found without importing torch."""
    import importlib.util

    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("check-host: torch is not importable (run from the .venv)")
    include = Path(list(spec.submodule_search_locations)[0]) / "include"
    return [str(include), str(include / "torch" / "csrc" / "api" / "include")]


# PyTorch's headers, parsed once into a precompiled header (ATen/ATen.h is most of the time).
PCH_HEADERS = ["ATen/mps/MPSStream.h", "ATen/ATen.h"]
PCH_DIR = REPO / "build-check"


def flags(language: str) -> list[str]:
    cmd = ["-Werror", "-Wall", "-x", language, "-std=c++20", "-fno-objc-arc", "-fblocks",
           "-fobjc-runtime=gcc", "-I", str(HERE / "host"), "-isystem", objc_runtime_include()]
    for inc in torch_includes():
        cmd += ["-isystem", inc]
    return cmd


def precompiled_torch_headers() -> Path:
    """build-check/torch_mps_<key>.pch, built when missing; the key covers the flags and the
    declarations in host/ (clang itself refuses a PCH whose headers changed)."""
    stubs = sorted(p for p in (HERE / "host").rglob("*.h"))
    key_text = " ".join(flags("objective-c++-header")) + "".join(p.read_text() for p in stubs)
    key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
    pch = PCH_DIR / f"torch_mps_{key}.pch"
    if not pch.exists():
        PCH_DIR.mkdir(exist_ok=True)
        header = PCH_DIR / f"torch_mps_{key}.h"
        header.write_text("".join(f"#include <{h}>\n" for h in PCH_HEADERS))
        tmp = pch.with_suffix(f".{os.getpid()}.tmp")
        r = subprocess.run([CLANG, *flags("objective-c++-header"), str(header), "-o", str(tmp)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"check-host: cannot precompile PyTorch's headers:\n{r.stderr}")
        tmp.replace(pch)
    return pch


def command(source: Path, includes: list[Path] = ()) -> list[str]:
    return [CLANG, "-fsyntax-only", *flags("objective-c++"), *[f"-I{i}" for i in includes],
            "-include-pch", str(precompiled_torch_headers()),
            # kernel-builder passes these two; the header is a declaration of what it generates.
            '-DEMBEDDED_METALLIB_HEADER="embedded_metallib.h"',
            "-DEMBEDDED_METALLIB_NAMESPACE=metal_flash_sdpa_metal", str(source)]


def check_file(source: Path, includes: list[Path] = ()) -> list[str]:
    """The compiler's diagnostics for one .mm file (empty: it passes)."""
    r = subprocess.run(command(source, includes), capture_output=True, text=True)
    if "precompiled header" in r.stderr:  # a header changed under the PCH: build it again
        for stale in PCH_DIR.glob("torch_mps_*"):
            stale.unlink()
        r = subprocess.run(command(source, includes), capture_output=True, text=True)
    if r.returncode != 0 or r.stderr.strip():
        return [r.stderr.strip() or f"clang exited with {r.returncode}"]
    return []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="*", type=Path, default=DEFAULT_SOURCES)
    args = parser.parse_args(argv)
    if not args.sources:
        print("check-host: no .mm sources found", file=sys.stderr)
        return 1
    if shutil.which(CLANG) is None and sys.platform == "darwin":
        print(f"check-host: {CLANG} not found; on a Mac kernel-builder compiles the .mm itself")
        return 0
    failed = 0
    for source in args.sources:
        problems = check_file(source.resolve())
        rel = os.path.relpath(source.resolve(), REPO)
        if problems:
            failed += 1
            print(f"FAIL {rel}")
            print("\n".join(problems))
        else:
            print(f"ok   {rel} (clang-19 Objective-C++ C++20, no ARC, ATen/mps headers of torch)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
