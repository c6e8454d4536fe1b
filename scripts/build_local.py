#!/usr/bin/env python3
"""Build the local `cpu` variant without Nix, laid out exactly as kernel-builder lays it out.

    python scripts/build_local.py            # -> build/torch213-cxx11-cpu-x86_64-linux/
    python scripts/build_local.py --variant sim   # -> build-sim/torch213-cxx11-cpu-x86_64-linux/

The `sim` variant runs the Metal kernels (metal-flash-sdpa/metal/*.metal) in the project's MSL
simulator (tests/msl_sim/) on CPU tensors: each .metal is translated by the simulator's source
step into build-sim/.gen/, then compiled with the simulator runtime, the shared common code, the
Metal launch plan and the simulator executor (metal-flash-sdpa/sim/), with -DMETAL_SIMULATOR_KERNEL
and the op namespace _metal_flash_sdpa_metalsim_<id>; its metadata says backend "cpu".

kernel-builder (Nix) builds the Hub variants from build.toml; it cannot run here, so this script
compiles the same sources that build.toml lists for the cpu backend with the installed torch and
writes the variant directory that `kernels.get_kernel` loads through
`LOCAL_KERNELS=kernels-community/metal-flash-sdpa=<repo>`:

    build/<variant>/__init__.py ...    the Python package (torch-ext/metal_flash_sdpa/)
    build/<variant>/_ops.py            generated, with the build's unique op namespace
    build/<variant>/metal_flash_sdpa/__init__.py   the compatibility folder the Hub's kernel
                                       requirements ask for: re-exports the package
    build/<variant>/metadata.json      every key kernel-builder writes, `digest` included
    build/<variant>/_metal_flash_sdpa_cpu_<id>.abi3.so

The variant name comes from the installed torch. Object files are cached by content, so an
unchanged source is not recompiled.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

OPS_PY = '''import torch
from . import {ops_name}
ops = torch.ops.{ops_name}

def add_op_namespace_prefix(op_name: str):
    """
    Prefix op by namespace.
    """
    return f"{ops_name}::{{op_name}}"
'''


@dataclass
class Variant:
    """One local build: which sources, which defines, where it goes."""

    backend: str  # the backend name baked into the op namespace
    metadata_backend: str  # what metadata.json says (the resolver matches on it)
    sources: list[Path]
    defines: list[str]
    out_root: Path
    extra_cxx_flags: list[str] = field(default_factory=list)
    extra_ldflags: list[str] = field(default_factory=list)
    # Sources compiled with their own flags instead of torch's (simulator runtime and kernels):
    # (sources, flags) groups.
    plain_groups: list[tuple[list[Path], list[str]]] = field(default_factory=list)
    # Further files every object depends on (beyond the project's headers).
    extra_headers: list[Path] = field(default_factory=list)


def torch_variant_name() -> str:
    import torch

    major, minor = torch.__version__.split("+")[0].split(".")[:2]
    machine = platform.machine()
    system = platform.system().lower()
    if system == "darwin":  # kernels' names on macOS: no C++ ABI tag, arm64 called aarch64
        machine = "aarch64" if machine == "arm64" else machine
        return f"torch{major}{minor}-cpu-{machine}-{system}"
    abi = "cxx11" if torch._C._GLIBCXX_USE_CXX11_ABI else "cxx98"
    return f"torch{major}{minor}-{abi}-cpu-{machine}-{system}"


def read_build_toml() -> dict:
    with open(REPO / "build.toml", "rb") as f:
        return tomllib.load(f)


def backend_sources(config: dict, backend: str) -> list[Path]:
    """The [torch] sources plus every [kernel.*] source of one backend, as build.toml lists them."""
    sources = [REPO / s for s in config["torch"]["src"]]
    for kernel in config["kernel"].values():
        if kernel["backend"] == backend:
            sources += [REPO / s for s in kernel["src"]]
    return sources


def cpu_variant(config: dict) -> Variant:
    return Variant(
        backend="cpu",
        metadata_backend="cpu",
        sources=backend_sources(config, "cpu"),
        defines=["CPU_KERNEL"],
        out_root=REPO / "build",
    )


SIM_DIR = REPO / "tests" / "msl_sim"


def sim_sources() -> list[Path]:
    """The torch-side sources of the simulated Metal build: the op schema, the shared common code,
    the launch plan and the simulator executor."""
    common = REPO / "metal-flash-sdpa" / "common"
    return [
        *(REPO / s for s in read_build_toml()["torch"]["src"]),
        common / "attention_backward.cpp",
        common / "attention_forward.cpp",
        common / "attention_inputs.cpp",
        common / "attention_sdpa.cpp",
        common / "metal_backward_plan.cpp",
        common / "metal_launch_plan.cpp",
        common / "metal_probabilities_plan.cpp",
        *sorted((REPO / "metal-flash-sdpa" / "sim").glob("*.cpp")),
    ]


def translate_metal(metal_dir: Path, gen_dir: Path) -> list[Path]:
    """Runs the simulator's source step (tests/msl_sim/translate.py) on every .metal of
    `metal_dir`; returns the C++ files. A file is translated again only when it, a header it can
    include, or the source step changed."""
    translator = SIM_DIR / "translate.py"
    gen_dir.mkdir(parents=True, exist_ok=True)
    include_dirs = [metal_dir, REPO / "metal-flash-sdpa" / "common"]
    digest = hashlib.sha256(translator.read_bytes())
    for d in include_dirs:
        for h in sorted(d.glob("*.h")):
            digest.update(h.read_bytes())
    for h in sorted((SIM_DIR / "include" / "stub").glob("*")):
        digest.update(h.read_bytes())
    outputs = []
    for src in sorted(metal_dir.glob("*.metal")):
        key = hashlib.sha256(digest.digest() + src.read_bytes()).hexdigest()[:12]
        out = gen_dir / f"{src.stem}-{key}.cpp"
        if not out.exists():
            for old in gen_dir.glob(f"{src.stem}-*.cpp"):
                old.unlink()
            cmd = [sys.executable, str(translator), str(src), "-o", str(out)]
            for d in include_dirs:
                cmd += ["-I", str(d)]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                sys.stderr.write(result.stdout + result.stderr)
                raise SystemExit(f"translation of {src} failed")
            if result.stderr.strip():
                sys.stderr.write(result.stderr)
        outputs.append(out)
    return outputs


def simulator_build_flags():
    """The simulator's own compile/link flags (tests/msl_sim/build.py), not restated here, for the
    compiler this build uses."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("msl_sim_build", SIM_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.compiler_flags(compiler_cxx())


def sim_variant(metal_dir: Path | None = None, out_root: Path | None = None) -> Variant:
    """`metal_dir` / `out_root` let tests build mutated kernels elsewhere (object cache shared)."""
    out_root = out_root or REPO / "build-sim"
    kernels = translate_metal(metal_dir or REPO / "metal-flash-sdpa" / "metal", out_root / ".gen")
    runtime_flags, kernel_flags, link_flags = simulator_build_flags()
    include = SIM_DIR / "include"
    return Variant(
        backend="metalsim",
        metadata_backend="cpu",
        sources=sim_sources(),
        defines=["METAL_SIMULATOR_KERNEL"],
        out_root=out_root,
        extra_cxx_flags=[f"-I{include}"],
        extra_ldflags=[f for f in link_flags if f != "-shared"],
        plain_groups=[
            (sorted((SIM_DIR / "runtime").glob("*.cpp")), [*runtime_flags, "-I", str(SIM_DIR / "runtime")]),
            (kernels, kernel_flags),
        ],
        extra_headers=sorted([*include.rglob("*.h"), *include.rglob("*.inc"),
                              *(SIM_DIR / "runtime").glob("*.h"), SIM_DIR / "build.py"]),
    )


def cxx_standard() -> str:
    """kernel-builder's rule (utils.cmake): C++17 before torch 2.12, C++20 from it on."""
    import torch

    major, minor = (int(x) for x in torch.__version__.split("+")[0].split(".")[:2])
    return "-std=c++17" if (major, minor) < (2, 12) else "-std=c++20"


@dataclass
class CrossTarget:
    """A build for another machine (scripts/aarch64/build.py): its compiler, the headers and
    libraries of its torch and Python, and the variant name kernels looks for there."""

    cxx: str
    torch_dir: Path  # the target's torch package: include/, lib/
    python_include: Path
    variant_name: str
    cxx_flags: list[str] = field(default_factory=list)


def is_clang(cxx: str) -> bool:
    """Whether `cxx` is clang (Apple's on macOS, LLVM's elsewhere) rather than GCC."""
    result = subprocess.run([cxx, "--version"], capture_output=True, text=True)
    return "clang" in result.stdout.lower()


def compiler_cxx() -> str:
    return os.environ.get("CXX", "g++")


def torch_flags(target: CrossTarget | None = None, compiler: str | None = None,
                system: str | None = None) -> tuple[list[str], list[str]]:
    """Compile and link flags for code against torch, for the compiler that builds it: GCC gets
    torch's OpenMP (libgomp, so that at::parallel_for shares torch's thread pool) and
    -fno-gnu-unique; clang (Apple's has no -fopenmp; LLVM's would bring its own OpenMP runtime
    next to torch's libgomp) builds without OpenMP, so at::parallel_for loops run serially there.
    On macOS the Python symbols resolve when the interpreter loads the module."""
    import torch
    from torch.utils import cpp_extension

    clang = is_clang(target.cxx if target else (compiler or compiler_cxx()))
    darwin = (system or platform.system()).lower() == "darwin"

    host_torch = Path(torch.__file__).parent
    torch_dir = target.torch_dir if target else host_torch
    includes = [f"-I{torch_dir / Path(p).relative_to(host_torch)}"
                for p in cpp_extension.include_paths()]
    includes.append(f"-I{target.python_include if target else sysconfig.get_paths()['include']}")
    torch_lib = torch_dir / "lib"
    cxx = [
        cxx_standard(),
        "-O3",
        "-fPIC",
        "-fvisibility=hidden",
        *([] if clang else ["-fopenmp", "-fno-gnu-unique"]),
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        "-DPy_LIMITED_API=0x03090000",
        *includes,
        f"-I{REPO / 'torch-ext'}",
        f"-I{REPO / 'scripts' / 'kernel_builder_shim'}",
        *(target.cxx_flags if target else []),
    ]
    ld = [
        "-shared",
        *(["-undefined", "dynamic_lookup"] if darwin else []),
        f"-L{torch_lib}",
        "-lc10",
        "-ltorch_cpu",
        "-ltorch",
        # torch's own OpenMP runtime, so that at::parallel_for shares torch's thread pool.
        *([] if clang else [f"{torch_lib / 'libgomp.so.1'}"]),
        f"-Wl,-rpath,{torch_lib}",
    ]
    return cxx, ld


def unique_id(sources: list[Path], flags: list[str], extra: bytes = b"") -> str:
    """Like kernel-builder's revision suffix: changes whenever what is compiled changes."""
    h = hashlib.sha256(header_digest() + extra)
    for s in sorted(sources):
        h.update(str(s.relative_to(REPO) if s.is_relative_to(REPO) else s.name).encode())
        h.update(s.read_bytes())
    h.update(" ".join(flags).encode())
    return h.hexdigest()[:10]


def compile_one(cxx: str, src: Path, obj: Path, flags: list[str]) -> None:
    if obj.exists():
        return
    obj.parent.mkdir(parents=True, exist_ok=True)
    tmp = obj.with_suffix(f".{os.getpid()}.tmp.o")
    cmd = [cxx, *flags, "-c", str(src), "-o", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"compilation of {src} failed")
    tmp.rename(obj)


def build(variant: Variant, jobs: int, obj_dir: Path | None = None,
          fixed_id: str | None = None, target: CrossTarget | None = None) -> Path:
    """`fixed_id` replaces the content-derived id (tests building many throw-away variants that
    are each loaded in their own process: the torch-side objects are then shared). `target`
    cross-compiles for another machine (default: this one, with its torch)."""
    cxx = target.cxx if target else compiler_cxx()
    base_cxx, base_ld = torch_flags(target, compiler=cxx)
    extra = b"".join(h.read_bytes() for h in variant.extra_headers)
    plain = [(src, flags) for sources, flags in variant.plain_groups for src in sources]
    uid = fixed_id or unique_id(
        variant.sources + [src for src, _ in plain],
        base_cxx + variant.extra_cxx_flags + variant.defines
        + [f for _, flags in variant.plain_groups for f in flags], extra)
    ops_name = f"_metal_flash_sdpa_{variant.backend}_{uid}"
    flags = [
        *base_cxx,
        *variant.extra_cxx_flags,
        *[f"-D{d}" for d in variant.defines],
        f"-DTORCH_EXTENSION_NAME={ops_name}",
    ]
    obj_dir = obj_dir or variant.out_root / ".obj"
    jobs_list = []  # (source, object, flags)
    for src in [s for s in variant.sources if s.suffix in (".cpp", ".cc")]:
        jobs_list.append((src, flags))
    jobs_list += plain
    objects = []
    for src, src_flags in jobs_list:
        # The op namespace is in `flags`: torch-side objects are rebuilt when it changes; the
        # plain objects (simulator runtime, translated kernels) do not depend on it.
        key = hashlib.sha256(
            (" ".join(src_flags) + str(src)).encode() + src.read_bytes() + header_digest() + extra
        ).hexdigest()[:16]
        objects.append(obj_dir / f"{src.stem}-{key}.o")
    # Largest first: the translated kernels dominate the build.
    order = sorted(range(len(jobs_list)), key=lambda i: -jobs_list[i][0].stat().st_size)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda i: compile_one(cxx, jobs_list[i][0], objects[i], jobs_list[i][1]),
                      order))

    out_dir = variant.out_root / (target.variant_name if target else torch_variant_name())
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    so_path = out_dir / f"{ops_name}.abi3.so"
    link = [cxx, *map(str, objects), *base_ld, *variant.extra_ldflags, "-o", str(so_path)]
    result = subprocess.run(link, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit("link failed")

    write_python_package(out_dir, ops_name)
    write_compat_package(out_dir)
    write_metadata(out_dir, ops_name, variant.metadata_backend)
    return out_dir


MODULE_NAME = "metal_flash_sdpa"  # the repository's name with - replaced by _

# The compatibility folder build/<variant>/metal_flash_sdpa/__init__.py (Hub kernel requirements:
# it must export what build/<variant>/__init__.py exports, for older `kernels` and direct imports).
# It loads the variant's package under a name of its own, so that its relative imports resolve.
COMPAT_INIT_PY = '''"""Compatibility module: re-exports the kernel package one directory up."""
import hashlib
import importlib.util
import sys
from pathlib import Path

_package_dir = Path(__file__).resolve().parent.parent
_name = "_metal_flash_sdpa_" + hashlib.sha256(str(_package_dir).encode()).hexdigest()[:16]
if _name not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _name, _package_dir / "__init__.py", submodule_search_locations=[str(_package_dir)])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_name] = _module
    _spec.loader.exec_module(_module)
_package = sys.modules[_name]
globals().update({k: getattr(_package, k) for k in _package.__all__})
__all__ = list(_package.__all__)
'''


def write_python_package(out_dir: Path, ops_name: str) -> None:
    """torch-ext/metal_flash_sdpa/ copied as is, plus the generated _ops.py."""
    package = REPO / "torch-ext" / MODULE_NAME
    for py in package.rglob("*.py"):
        target = out_dir / py.relative_to(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(py, target)
    (out_dir / "_ops.py").write_text(OPS_PY.format(ops_name=ops_name))


def write_compat_package(out_dir: Path) -> None:
    compat = out_dir / MODULE_NAME
    compat.mkdir()
    (compat / "__init__.py").write_text(COMPAT_INIT_PY)


def variant_digest(out_dir: Path) -> dict:
    """kernel-builder's `digest` (kernels-data digest.rs, `kernel-builder hash`): the base64
    sha256 of every file of the variant by its /-separated relative path, except the top-level
    metadata.json (and its .sigstore signature) and Python bytecode."""
    files = {}
    for path in sorted(out_dir.rglob("*")):
        rel = path.relative_to(out_dir)
        if (not path.is_file() or "__pycache__" in rel.parts or path.suffix == ".pyc"
                or str(rel) in ("metadata.json", "metadata.json.sigstore")):
            continue
        files[rel.as_posix()] = base64.b64encode(hashlib.sha256(path.read_bytes()).digest()).decode()
    return {"algorithm": "sha256", "files": dict(sorted(files.items()))}


def write_metadata(out_dir: Path, ops_name: str, backend: str) -> None:
    """The keys kernel-builder writes (kernels-data metadata.rs) for a build.toml without
    upstream/source/provenance; the digest last, once every other file is in place."""
    config = read_build_toml()["general"]
    metadata = {
        "name": config["name"],
        "id": ops_name,
        "version": config["version"],
        "license": config["license"],
        "python-depends": config.get("python-depends", []),
        "kernel-depends": [],
        "backend": {"type": backend},
        "digest": variant_digest(out_dir),
    }
    (out_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")


_HEADER_DIGEST: bytes | None = None


def header_digest() -> bytes:
    """Objects depend on every project header (a coarse but safe rule)."""
    global _HEADER_DIGEST
    if _HEADER_DIGEST is None:
        h = hashlib.sha256()
        for header in sorted([*REPO.glob("metal-flash-sdpa/**/*.h"), *REPO.glob("torch-ext/*.h"),
                              *REPO.glob("scripts/kernel_builder_shim/*.h")]):
            h.update(header.read_bytes())
        _HEADER_DIGEST = h.digest()
    return _HEADER_DIGEST


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--variant", choices=["cpu", "sim"], default="cpu")
    args = parser.parse_args()
    variant = cpu_variant(read_build_toml()) if args.variant == "cpu" else sim_variant()
    out_dir = build(variant, args.jobs)
    print(f"built {out_dir.relative_to(REPO)}")


if __name__ == "__main__":
    main()
