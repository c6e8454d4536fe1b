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
    build/<variant>/metadata.json
    build/<variant>/_metal_flash_sdpa_cpu_<id>.abi3.so

The variant name comes from the installed torch. Object files are cached by content, so an
unchanged source is not recompiled.
"""

from __future__ import annotations

import argparse
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
    abi = "cxx11" if torch._C._GLIBCXX_USE_CXX11_ABI else "cxx98"
    machine = platform.machine()
    system = platform.system().lower()
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
        common / "metal_backward_pending.cpp",
        common / "metal_launch_plan.cpp",
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
    """The simulator's own compile/link flags (tests/msl_sim/build.py), not restated here."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("msl_sim_build", SIM_DIR / "build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.RUNTIME_FLAGS, module.KERNEL_FLAGS, module.LINK_FLAGS


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


def torch_flags() -> tuple[list[str], list[str]]:
    import torch
    from torch.utils import cpp_extension

    includes = [f"-I{p}" for p in cpp_extension.include_paths()]
    includes.append(f"-I{sysconfig.get_paths()['include']}")
    torch_lib = Path(torch.__file__).parent / "lib"
    cxx = [
        "-std=c++17",
        "-O3",
        "-fPIC",
        "-fvisibility=hidden",
        "-fopenmp",
        "-fno-gnu-unique",
        f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}",
        "-DTORCH_API_INCLUDE_EXTENSION_H",
        "-DPy_LIMITED_API=0x03090000",
        *includes,
        f"-I{REPO / 'torch-ext'}",
        f"-I{REPO / 'scripts' / 'kernel_builder_shim'}",
    ]
    # Link torch's own OpenMP runtime so that at::parallel_for shares torch's thread pool.
    ld = [
        "-shared",
        f"-L{torch_lib}",
        "-lc10",
        "-ltorch_cpu",
        "-ltorch",
        f"{torch_lib / 'libgomp.so.1'}",
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
          fixed_id: str | None = None) -> Path:
    """`fixed_id` replaces the content-derived id (tests building many throw-away variants that
    are each loaded in their own process: the torch-side objects are then shared)."""
    cxx = os.environ.get("CXX", "g++")
    base_cxx, base_ld = torch_flags()
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

    out_dir = variant.out_root / torch_variant_name()
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    so_path = out_dir / f"{ops_name}.abi3.so"
    link = [cxx, *map(str, objects), *base_ld, *variant.extra_ldflags, "-o", str(so_path)]
    result = subprocess.run(link, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit("link failed")

    package = REPO / "torch-ext" / "metal_flash_sdpa"
    for py in package.rglob("*.py"):
        target = out_dir / py.relative_to(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(py, target)
    (out_dir / "_ops.py").write_text(OPS_PY.format(ops_name=ops_name))
    config = read_build_toml()["general"]
    metadata = {
        "name": config["name"],
        "id": ops_name,
        "version": config["version"],
        "license": config["license"],
        "python-depends": config.get("python-depends", []),
        "backend": {"type": variant.metadata_backend},
    }
    (out_dir / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    return out_dir


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
