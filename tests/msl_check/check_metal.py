"""The Metal sources through a real compiler front-end: `make check-metal`.

Each .metal translation unit is preprocessed (clang, C++), rewritten line-preserving
(source_step.py) and type-checked by clang-19 as C++ for OpenCL 2021 against the MSL library
declarations (prelude/metal_prelude.h). On top of what clang enforces there (distinct address
spaces with no implicit conversion, no double, const through `constant`, every library name and
signature, every attribute name, constant apart from device), this script rejects what clang's
AST and IR show (kernel_rules.py, ast_rules.py, ir_rules.py; README.md lists every rule and its
section): a kernel's interface (return type, argument tables and indices, argument address spaces, built-in
attributes and their types, max threads), function constants, program-scope and static
variables, goto, pointers without an address space, implicit conversions to bfloat, member
functions and operators called on objects of a space they are not declared for, memory orders
other than relaxed, functions called but never defined, recursion,
static threadgroup memory over 32 KiB per kernel, and kernel names repeated across the library.
Where Apple's toolchain exists (`xcrun -f metal` succeeds), each file is also compiled by
Apple's compiler as kernel-builder does (`metal -std=metal4.0 -O2 -c`).

Usage: python tests/msl_check/check_metal.py [FILE.metal ...]   (default: every
metal-flash-sdpa/metal/*.metal). Exit status 1 on the first file with errors (all are checked).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))

import ast_rules  # noqa: E402
import ir_rules  # noqa: E402
import kernel_rules  # noqa: E402
from ast_tree import parse  # noqa: E402
from source_step import SourceError, rewrite  # noqa: E402

CLANG = os.environ.get("MSLC_CLANG", "clang++-19")
OPT = os.environ.get("MSLC_OPT", "opt-19")
PRELUDE = HERE / "prelude" / "metal_prelude.h"
STUB = HERE / "stub"
DEFAULT_SOURCES = sorted((REPO / "metal-flash-sdpa" / "metal").glob("*.metal"))

# C++ for OpenCL 2021 without double (cl_khr_fp64 off) and with half; no OpenCL library.
CLCPP_FLAGS = [
    "-x", "clcpp", "-cl-std=clc++2021", "-cl-no-stdinc",
    "-Xclang", "-cl-ext=-cl_khr_fp64,-__opencl_c_fp64,+cl_khr_fp16",
    "-include", str(PRELUDE), "-ferror-limit=50", "-fno-color-diagnostics",
    # Warnings that are errors in MSL terms: an attribute Apple's compiler does not know or that
    # does not apply, a function that falls off its end without a value.
    "-Werror=unknown-attributes", "-Werror=ignored-attributes", "-Werror=return-type",
]


class CheckError(Exception):
    pass


def run(cmd: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True)


def preprocess(source: Path, includes: list[Path]) -> str:
    cmd = [CLANG, "-E", "-x", "c++", "-std=c++17", "-nostdinc", "-nostdinc++",
           "-D__METAL_VERSION__=400", "-I", str(STUB), "-I", str(source.parent)]
    for inc in includes:
        cmd += ["-I", str(inc)]
    r = run(cmd + [str(source)])
    if r.returncode != 0:
        raise CheckError(r.stderr)
    return r.stdout


def _demangle(names: list[str]) -> list[str]:
    filt = shutil.which("llvm-cxxfilt-19") or shutil.which("c++filt")
    if not filt:
        return names
    return run([filt], stdin="\n".join(names)).stdout.split("\n")[: len(names)]


class Library:
    """What the rules across the library's files need from each file."""

    def __init__(self):
        self.kernel_names: list[tuple[str, str]] = []   # (name, where)
        self.defined: set[str] = set()                   # functions defined
        self.undefined: list[tuple[str, str]] = []       # (function, error) called, not defined

    def problems(self) -> list[str]:
        return kernel_rules.duplicate_names(self.kernel_names) + [
            error for key, error in self.undefined if key not in self.defined]


def check_file(source: Path, includes: list[Path], library: Library | None = None) -> list[str]:
    """Every error found in one .metal translation unit (empty: it passes). With `library`,
    what the rules across files need is added to it instead of judged here: kernel names, and
    functions called here but defined in no file of the library."""
    host_names: list[tuple[str, str]] = []
    try:
        text = rewrite(preprocess(source, includes), host_names)
    except (CheckError, SourceError) as e:
        return [str(e).strip()]
    with tempfile.TemporaryDirectory(prefix="msl_check_") as tmp:
        rewritten = Path(tmp) / (source.stem + ".clcpp")
        rewritten.write_text(text)
        # Type check; the AST comes with it.
        r = run([CLANG, *CLCPP_FLAGS, "-fsyntax-only", "-Xclang", "-ast-dump",
                 str(rewritten)])
        diagnostics = [ln for ln in r.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in diagnostics if " error: " in ln or ln.startswith("error")]
        if r.returncode != 0 or errors:
            return ["\n".join(diagnostics)]
        files = {str(source)} | {
            f for f in re.findall(r'^# \d+ "([^"]+)"', text, re.M) if not f.startswith("<")}
        files = {f for f in files if not f.startswith(str(STUB))}
        own = files.__contains__
        tree = parse(r.stdout)
        problems = ast_rules.generic_pointers(tree, own)
        for kernel in kernel_rules.kernels(tree, own):
            problems += kernel_rules.kernel_interface(kernel)
        kernel_names = kernel_rules.kernel_names(tree, own, host_names)
        problems += kernel_rules.duplicate_names(kernel_names)
        undefined = ast_rules.undefined_functions(tree, own)
        if library is None:
            problems += [error for _, error in undefined]
        else:
            library.kernel_names += kernel_names
            library.defined |= ast_rules.functions_defined(tree, own)
            library.undefined += undefined
        problems += ast_rules.storage_and_constants(tree, own)
        problems += ast_rules.bfloat_conversions(tree, own)
        problems += ast_rules.member_calls(tree, own)
        problems += ast_rules.atomic_orders(tree, own)
        # Recursion and threadgroup memory, on the IR.
        ir = run([CLANG, *CLCPP_FLAGS, "-S", "-emit-llvm", "-O0", "-o", "-", str(rewritten)])
        if ir.returncode != 0:
            return problems + [ir.stderr]
        for cycle in ir_rules.cycles(OPT, ir.stdout):
            problems.append(f"{source}: recursion (MSL §1.4.4 Restrictions: no recursive "
                            f"function calls): {' -> '.join(_demangle(cycle))}")
        for kernel, size in ir_rules.threadgroup_memory(ir.stdout):
            problems.append(f"{source}: kernel {_demangle([kernel])[0]} uses {size} bytes of "
                            f"threadgroup memory, over {ir_rules.THREADGROUP_MEMORY_LIMIT} "
                            "(32 KiB; Metal feature set tables; MSL §4.4 Threadgroup Address "
                            "Space)")
        return problems


def apple_compile(source: Path, includes: list[Path]) -> list[str]:
    """Apple's compiler, as kernel-builder runs it, where it exists."""
    if shutil.which("xcrun") is None or run(["xcrun", "-f", "metal"]).returncode != 0:
        return []
    with tempfile.TemporaryDirectory(prefix="msl_check_air_") as tmp:
        cmd = ["xcrun", "metal", "-std=metal4.0", "-O2", "-c", str(source),
               "-o", str(Path(tmp) / (source.stem + ".air"))]
        for inc in includes:
            cmd += ["-I", str(inc)]
        r = run(cmd)
        return [r.stderr] if r.returncode != 0 else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sources", nargs="*", type=Path, default=DEFAULT_SOURCES)
    parser.add_argument("-I", dest="includes", action="append", type=Path, default=[])
    args = parser.parse_args(argv)
    if not args.sources:
        print("check-metal: no .metal sources found", file=sys.stderr)
        return 1
    failed = 0
    apple = shutil.which("xcrun") is not None and run(["xcrun", "-f", "metal"]).returncode == 0
    have_clang = shutil.which(CLANG) is not None and shutil.which(OPT) is not None
    if not have_clang and not apple:
        print(f"check-metal: {CLANG} / {OPT} not found (`make check-tools` installs them)",
              file=sys.stderr)
        return 1
    if not have_clang:
        print(f"check-metal: {CLANG} not found: only Apple's compiler runs")
    library = Library()
    for source in args.sources:
        source = source.resolve()
        problems = (check_file(source, args.includes, library) if have_clang else []) + \
            apple_compile(source, args.includes)
        rel = os.path.relpath(source, REPO)
        if problems:
            failed += 1
            print(f"FAIL {rel}")
            for p in problems:
                print(p)
        else:
            judges = (["clang-19 C++ for OpenCL, MSL prelude"] if have_clang else []) + (
                ["Apple metal -std=metal4.0 -O2"] if apple else [])
            print(f"ok   {rel} ({'; '.join(judges)})")
    # One library: kernel names unique across its files, every function called defined in one.
    across = library.problems()
    if across:
        failed += 1
        print("FAIL the library (all files together)")
        print("\n".join(across))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
