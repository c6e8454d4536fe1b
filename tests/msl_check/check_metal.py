"""The Metal sources through a real compiler front-end: `make check-metal`.

Each .metal translation unit is preprocessed (clang, C++), rewritten line-preserving
(source_step.py) and type-checked by clang-19 as C++ for OpenCL 2021 against the MSL library
declarations (prelude/metal_prelude.h). On top of what clang enforces there (distinct address
spaces with no implicit conversion, no double, const through `constant`, every library name and
signature, every attribute name), this script rejects:
- a pointer or reference without an explicit address space (MSL 4.0 requires one): the AST
  has an OpenCL `__generic` type in a declaration or explicit cast written in the .metal sources;
- recursion: a cycle in the LLVM call graph of the translation unit (clang -emit-llvm, opt-19).
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


_LOC = re.compile(r"(/[^\s:<>,']+|line):(\d+):\d+")
_CHECKED_KINDS = re.compile(
    r"^(ParmVarDecl|VarDecl|FieldDecl|FunctionDecl|CXXMethodDecl|TypedefDecl|TypeAliasDecl|"
    r"CStyleCastExpr|CXXStaticCastExpr|CXXReinterpretCastExpr|CXXFunctionalCastExpr|"
    r"CXXConstCastExpr) ")


def _generic_pointers(ast: str, own: set[str]) -> list[str]:
    """Declarations and explicit casts written in the checked sources (not the prelude) whose
    type is a pointer or reference without an address space (OpenCL's __generic), from clang's
    text AST dump. Implicit declarations (copy constructors...) and their parts are skipped."""
    found = []
    file, line_no = "", 0
    skip_below = None  # depth of an implicit declaration whose children are skipped
    for line in ast.splitlines():
        # Where the node is: the dump prints a file or line only when it changes, so every
        # location is followed; the node's own (name) location is the last one on its line.
        if "/" in line or "line:" in line:
            for f, ln in _LOC.findall(line):
                if f != "line":
                    file = f
                line_no = int(ln)
        node = line.lstrip("| `-")
        depth = len(line) - len(node)
        if skip_below is not None:
            if depth > skip_below:
                continue
            skip_below = None
        if " implicit " in node:
            skip_below = depth
            continue
        if "__generic" not in node or file not in own:
            continue
        m = _CHECKED_KINDS.match(node)
        if not m:
            continue
        kind = m.group(1)
        types = re.findall(r"'([^']*)'", node)
        if not types:
            continue
        # A declaration's type is its first quoted type; a cast's is the type it casts to.
        ty = types[0]
        if not re.search(r"__generic [^']*[*&]", ty):
            continue
        name = node.split("'")[0].split()[-1] if kind.endswith("Decl") else ""
        found.append(f"{file}:{line_no}: {kind} {name} of type '{ty}': a pointer or reference "
                     "needs an explicit address space (device, constant, threadgroup or thread; "
                     "MSL §4 Address Spaces)")
    return found


def _cycles(llvm_ir: str) -> list[list[str]]:
    """Recursive functions: the call-graph SCCs that contain a cycle."""
    r = run([OPT, "-passes=print-callgraph-sccs", "-disable-output"], stdin=llvm_ir)
    if r.returncode != 0:
        raise CheckError(r.stderr)
    cycles = []
    for line in r.stderr.splitlines():
        m = re.match(r"SCC #\d+: (.*?)(?:, \(Has self-loop\)| \(Has self-loop\))?\s*$", line)
        if not m:
            continue
        names = [x.strip() for x in m.group(1).split(",") if x.strip()]
        if "Has self-loop" in line or len(names) > 1:
            cycles.append(names)
    return cycles


def _demangle(names: list[str]) -> list[str]:
    filt = shutil.which("llvm-cxxfilt-19") or shutil.which("c++filt")
    if not filt:
        return names
    return run([filt], stdin="\n".join(names)).stdout.split("\n")[: len(names)]


def check_file(source: Path, includes: list[Path]) -> list[str]:
    """Every error found in one .metal translation unit (empty: it passes)."""
    try:
        text = rewrite(preprocess(source, includes))
    except (CheckError, SourceError) as e:
        return [str(e).strip()]
    with tempfile.TemporaryDirectory(prefix="msl_check_") as tmp:
        rewritten = Path(tmp) / (source.stem + ".clcpp")
        rewritten.write_text(text)
        # Type check; the AST comes with it (declarations only from the sources themselves).
        r = run([CLANG, *CLCPP_FLAGS, "-fsyntax-only", "-Xclang", "-ast-dump",
                 str(rewritten)])
        diagnostics = [ln for ln in r.stderr.splitlines() if ln.strip()]
        errors = [ln for ln in diagnostics if " error: " in ln or ln.startswith("error")]
        if r.returncode != 0 or errors:
            return ["\n".join(diagnostics)]
        own = {str(source)} | {
            f for f in re.findall(r'^# \d+ "([^"]+)"', text, re.M) if not f.startswith("<")}
        own = {f for f in own if not f.startswith(str(STUB))}
        problems = _generic_pointers(r.stdout, own)
        # Recursion.
        ir = run([CLANG, *CLCPP_FLAGS, "-S", "-emit-llvm", "-O0", "-o", "-", str(rewritten)])
        if ir.returncode != 0:
            return problems + [ir.stderr]
        for cycle in _cycles(ir.stdout):
            problems.append(f"{source}: recursion (MSL §1.5.4 Restrictions: no recursive "
                            f"function calls): {' -> '.join(_demangle(cycle))}")
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
    for source in args.sources:
        source = source.resolve()
        problems = (check_file(source, args.includes) if have_clang else []) + \
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
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
