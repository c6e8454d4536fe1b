#!/usr/bin/env python3
"""Builds the MSL simulator (runtime + translated .metal kernels) into a shared library, cached.

    build.py --name NAME [-I DIR]... SRC.metal... [--out-dir DIR] [--jobs N]

prints the path of build/libmsl_sim_NAME.so. Every step is keyed by a hash of its inputs and
flags (translated text, compat headers, runtime sources), so unchanged sources are not rebuilt.
Also importable: build_library(name, sources, includes) -> path.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import functools
import glob
import hashlib
import os
import platform
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
INCLUDE = os.path.join(HERE, "include")
RUNTIME = os.path.join(HERE, "runtime")
BUILD = os.path.join(HERE, "build")
sys.path.insert(0, HERE)
import translate  # noqa: E402

CXX = os.environ.get("MSL_SIM_CXX", "g++")


@functools.lru_cache(maxsize=None)  # one build asks the compiler its version once
def _is_clang(cxx: str) -> bool:
    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout.lower()
    return "clang" in version


def compiler_flags(cxx: str) -> tuple[list[str], list[str], list[str]]:
    """(runtime, kernel, link) flags for `cxx`: GCC or clang (Apple's on macOS), x86-64 or arm64.

    Every load/store of a kernel calls __tsan_{read,write}N, defined by runtime/memcheck.cpp (no
    ThreadSanitizer runtime is linked); function entry/exit callbacks are off (GCC's --param,
    clang's -mllvm), and clang's calls for memcpy/memset/memmove come to memcheck.cpp too. -g1
    line tables let reports name .metal lines. -mf16c (x86 only; arm64 has half conversions)
    makes a half conversion one instruction. On macOS, a shared library may leave symbols to the
    process that loads it (Python's, torch's)."""
    clang = _is_clang(cxx)
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    common = ["-std=c++20", "-O2", *(["-mf16c"] if x86 else []), "-fPIC", "-I", INCLUDE]
    no_entry_exit = (["-mllvm", "-tsan-instrument-func-entry-exit=0"] if clang
                     else ["--param", "tsan-instrument-func-entry-exit=0"])
    # clang's ThreadSanitizer pass leaves accesses wider than 16 bytes uninstrumented (GCC's
    # calls __tsan_{read,write}_range for them), and its vectorizers make such accesses out of
    # a lane's contiguous elements: off, so that every access is bounds-checked and counted.
    no_wide_accesses = ["-fno-vectorize", "-fno-slp-vectorize"] if clang else []
    kernel = common + ["-g1", "-gdwarf-4", "-fsanitize=thread", *no_entry_exit, *no_wide_accesses,
                       "-Wno-unused-variable", "-Wno-unused-parameter"]
    link = ["-shared", "-ldl", "-lpthread"]
    if platform.system() == "Darwin":
        link += ["-undefined", "dynamic_lookup"]
    return common + ["-Wall", "-Wextra"], kernel, link




def _hash(*parts) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p if isinstance(p, bytes) else str(p).encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _tree_hash(patterns: list[str]) -> str:
    files = sorted(f for p in patterns for f in glob.glob(p, recursive=True) if os.path.isfile(f))
    return _hash(*[f.encode() + b"=" + _read(f) for f in files])


def headers_hash() -> str:
    return _tree_hash([os.path.join(INCLUDE, "**", "*")])


def _compile(cxx: str, src: str, obj: str, flags: list[str], key: str) -> str:
    stamp = obj + ".key"
    if os.path.exists(obj) and os.path.exists(stamp) and _read(stamp).decode() == key:
        return obj
    os.makedirs(os.path.dirname(obj), exist_ok=True)
    cmd = [cxx, *flags, "-c", src, "-o", obj + ".tmp"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"compiling {src} failed:\n{' '.join(cmd)}\n{r.stderr}")
    os.replace(obj + ".tmp", obj)
    with open(stamp, "w") as f:
        f.write(key)
    return obj


def _write_if_changed(path: str, text: str) -> None:
    if os.path.exists(path) and _read(path).decode() == text:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def translate_source(src: str, includes: list[str], out_dir: str) -> str:
    """Translates one .metal file (paths shown relative to the repository) -> generated .cpp path."""
    rel = os.path.relpath(os.path.abspath(src), REPO)
    stem = rel.replace(os.sep, "_").replace(".metal", "")
    out = os.path.join(out_dir, "gen", stem + ".cpp")
    cwd = os.getcwd()
    os.chdir(REPO)  # so line markers (and reports) name files relative to the repository
    try:
        text, warnings = translate.translate(rel, [os.path.abspath(os.path.join(cwd, i)) for i in includes])
    finally:
        os.chdir(cwd)
    for w in warnings:
        print(w, file=sys.stderr)
    _write_if_changed(out, text)
    return out


def runtime_objects(out_dir: str = BUILD, jobs: int | None = None, cxx: str = CXX) -> list[str]:
    flags = compiler_flags(cxx)[0] + ["-I", RUNTIME]
    hh = headers_hash() + _tree_hash([os.path.join(RUNTIME, "*.h")])
    srcs = sorted(glob.glob(os.path.join(RUNTIME, "*.cpp")))
    with concurrent.futures.ThreadPoolExecutor(jobs or os.cpu_count()) as ex:
        futs = [ex.submit(_compile, cxx, s, os.path.join(out_dir, "obj", "runtime", os.path.basename(s)[:-4] + ".o"),
                          flags, _hash(cxx, flags, _read(s), hh)) for s in srcs]
        return [f.result() for f in futs]


def build_library(name: str, sources: list[str], includes: list[str] = (), out_dir: str = BUILD,
                  jobs: int | None = None, cxx: str = CXX) -> str:
    """Runtime + the given .metal sources -> out_dir/libmsl_sim_<name>.so (rebuilt only if needed),
    compiled by `cxx` (one out_dir per compiler keeps each one's objects cached)."""
    gens = [translate_source(s, list(includes), out_dir) for s in sources]
    hh = headers_hash()
    _, kernel_flags, link_flags = compiler_flags(cxx)
    objs = runtime_objects(out_dir, jobs, cxx)
    with concurrent.futures.ThreadPoolExecutor(jobs or os.cpu_count()) as ex:
        futs = [ex.submit(_compile, cxx, g, os.path.join(out_dir, "obj", "kernels", os.path.basename(g)[:-4] + ".o"),
                          kernel_flags, _hash(cxx, kernel_flags, _read(g), hh)) for g in gens]
        objs += [f.result() for f in futs]
    lib = os.path.join(out_dir, f"libmsl_sim_{name}.so")
    key = _hash(cxx, link_flags, *[_read(o + ".key") for o in objs])
    stamp = lib + ".key"
    if not (os.path.exists(lib) and os.path.exists(stamp) and _read(stamp).decode() == key):
        cmd = [cxx, "-o", lib + ".tmp", *objs, *link_flags]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise RuntimeError(f"linking {lib} failed:\n{r.stderr}")
        os.replace(lib + ".tmp", lib)
        with open(stamp, "w") as f:
            f.write(key)
    return lib


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sources", nargs="+")
    ap.add_argument("--name", required=True)
    ap.add_argument("-I", dest="includes", action="append", default=[])
    ap.add_argument("--out-dir", default=BUILD)
    ap.add_argument("--jobs", type=int)
    a = ap.parse_args(argv)
    try:
        print(build_library(a.name, a.sources, a.includes, a.out_dir, a.jobs))
    except (RuntimeError, translate.TranslateError) as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
