#!/usr/bin/env python3
"""Build the local `cpu` variant without Nix, laid out exactly as kernel-builder lays it out.

    python scripts/build_local.py            # -> build/torch213-cxx11-cpu-x86_64-linux/

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


def unique_id(sources: list[Path], flags: list[str]) -> str:
    """Like kernel-builder's revision suffix: changes whenever what is compiled changes."""
    h = hashlib.sha256(header_digest())
    for s in sorted(sources):
        h.update(str(s.relative_to(REPO)).encode())
        h.update(s.read_bytes())
    h.update(" ".join(flags).encode())
    return h.hexdigest()[:10]


def compile_one(cxx: str, src: Path, obj: Path, flags: list[str]) -> None:
    if obj.exists():
        return
    obj.parent.mkdir(parents=True, exist_ok=True)
    tmp = obj.with_suffix(".tmp.o")
    cmd = [cxx, *flags, "-c", str(src), "-o", str(tmp)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"compilation of {src.relative_to(REPO)} failed")
    tmp.rename(obj)


def build(variant: Variant, jobs: int) -> Path:
    cxx = os.environ.get("CXX", "g++")
    base_cxx, base_ld = torch_flags()
    uid = unique_id(variant.sources, base_cxx + variant.extra_cxx_flags + variant.defines)
    ops_name = f"_metal_flash_sdpa_{variant.backend}_{uid}"
    flags = [
        *base_cxx,
        *variant.extra_cxx_flags,
        *[f"-D{d}" for d in variant.defines],
        f"-DTORCH_EXTENSION_NAME={ops_name}",
    ]
    compiled = [s for s in variant.sources if s.suffix in (".cpp", ".cc")]
    obj_dir = variant.out_root / ".obj"
    objects = []
    for src in compiled:
        key = hashlib.sha256(
            (" ".join(flags) + str(src)).encode() + src.read_bytes() + header_digest()
        ).hexdigest()[:16]
        objects.append(obj_dir / f"{src.stem}-{key}.o")
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(lambda so: compile_one(cxx, so[0], so[1], flags), zip(compiled, objects)))

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
    args = parser.parse_args()
    out_dir = build(cpu_variant(read_build_toml()), args.jobs)
    print(f"built {out_dir.relative_to(REPO)}")


if __name__ == "__main__":
    main()
