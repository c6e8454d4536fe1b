"""The local build is laid out as kernel-builder lays out a Hub variant (and as the Hub's kernel
requirements ask), so that kernels loads it unchanged; build.toml lists every source and header of
the tree."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tomllib

import pytest

from conftest import REPO, VARIANTS

REQUIRED_METADATA_KEYS = {"id", "name", "version", "license", "backend", "digest"}


def build_local():
    """scripts/build_local.py: the variant name is derived by the build's own function."""
    spec = importlib.util.spec_from_file_location("build_local", REPO / "scripts" / "build_local.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("build_local", module)  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def variant_dir(variant: str):
    if variant == "mps":
        pytest.skip("checks the local build's layout (scripts/build_local.py); kernel-builder made the mps one")
    root = VARIANTS[variant][0]
    build = root / "build" if (root / "build").is_dir() else root
    return build / build_local().torch_variant_name()


@pytest.mark.kernels_ci
def test_variant_name_is_the_one_kernels_resolves(variant):
    """kernels' own resolver, given the build directory, picks the variant the build wrote."""
    from kernels.variants import get_variants_local, resolve_variant

    directory = variant_dir(variant)
    assert directory.is_dir()
    chosen, trace = resolve_variant(get_variants_local(directory.parent), "cpu")
    assert chosen is not None, trace
    assert chosen.variant_str == directory.name


@pytest.mark.kernels_ci
def test_variant_directory(fa, variant):
    directory = variant_dir(variant)
    metadata = json.loads((directory / "metadata.json").read_text())
    assert REQUIRED_METADATA_KEYS <= set(metadata)
    assert metadata["name"] == "metal-flash-sdpa" and metadata["version"] == 2
    assert metadata["license"] == "Apache-2.0"
    assert metadata["backend"]["type"] == "cpu"
    assert metadata["id"] == fa.__name__
    assert (directory / f"{metadata['id']}.abi3.so").is_file()
    ops_py = (directory / "_ops.py").read_text()
    assert f'return f"{metadata["id"]}::{{op_name}}"' in ops_py


@pytest.mark.kernels_ci
def test_metadata_digest_is_what_kernels_computes(variant):
    """kernels' own (Rust) metadata parser reads the file, and its digest of the variant (the one
    `kernels verify-signature` checks) matches the one the build wrote: every file is covered."""
    from kernels._rust import Digest, Metadata

    directory = variant_dir(variant)
    metadata = Metadata.from_bytes((directory / "metadata.json").read_bytes())
    assert metadata.digest is not None
    metadata.digest.validate(Digest.hash_variant(metadata.digest.algorithm, directory))
    files = json.loads((directory / "metadata.json").read_text())["digest"]["files"]
    assert {"__init__.py", "_ops.py", "metal_flash_sdpa/__init__.py"} <= set(files)
    assert any(name.endswith(".abi3.so") for name in files)


@pytest.mark.kernels_ci
def test_compatibility_folder_reexports_the_package(variant):
    """build/<variant>/metal_flash_sdpa/ exports what build/<variant>/__init__.py exports (a
    direct import, as older kernels and the Hub's requirements do it; in its own process)."""
    directory = variant_dir(variant)
    script = (
        "import sys, torch; sys.path.insert(0, sys.argv[1]); import metal_flash_sdpa as m\n"
        "q = torch.randn(5, 2, 16)\n"
        "cu = torch.tensor([0, 5], dtype=torch.int32)\n"
        "out = m.flash_attn_varlen_func(q, q, q, cu, cu, 5, 5)\n"
        "assert out.shape == q.shape and torch.isfinite(out).all()\n"
        "print(' '.join(sorted(m.__all__)))\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(directory)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    package_all = _package_all(directory)
    assert result.stdout.split() == sorted(package_all)


def _package_all(directory) -> list[str]:
    import ast

    tree = ast.parse((directory / "__init__.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__all__"
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("__init__.py has no __all__")


@pytest.mark.kernels_ci
def test_cxx_standard_follows_kernel_builder():
    """kernel-builder compiles with C++17 before torch 2.12 and C++20 from it on."""
    import torch

    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    expected = "-std=c++20" if (major, minor) >= (2, 12) else "-std=c++17"
    assert build_local().torch_flags()[0].count(expected) == 1


@pytest.mark.kernels_ci
def test_build_toml_lists_every_source_and_header():
    config = tomllib.loads((REPO / "build.toml").read_text())
    assert config["general"]["version"] == 2 and config["general"]["edition"] == 5
    assert config["general"]["hub"]["repo-id"] == "kernels-community/metal-flash-sdpa"
    assert set(config["general"]["backends"]) == {"cpu", "metal"}
    listed = set(config["torch"]["src"])
    for kernel in config["kernel"].values():
        listed |= set(kernel["src"])
    on_disk = {str(p.relative_to(REPO)) for p in (REPO / "metal-flash-sdpa").rglob("*")
               if p.suffix in {".h", ".cpp", ".mm", ".metal"}
               and "sim" not in p.relative_to(REPO / "metal-flash-sdpa").parts[:1]}
    on_disk |= {str(p.relative_to(REPO)) for p in (REPO / "torch-ext").glob("*.[ch]*")}
    assert on_disk - listed == set(), "sources missing from build.toml"
    assert {p for p in listed if not (REPO / p).exists()} == set(), "listed but missing"


@pytest.mark.kernels_ci
def test_flags_follow_the_compiler_and_system():
    """GCC gets torch's OpenMP and -fno-gnu-unique; clang (Apple's has neither) does not; macOS
    leaves the Python symbols to the loading interpreter (docs/CONTRIBUTING.md, "On a Mac")."""
    module = build_local()
    gcc_cxx, gcc_ld = module.torch_flags(compiler="g++", system="Linux")
    clang_cxx, clang_ld = module.torch_flags(compiler="clang++-19", system="Linux")
    mac_cxx, mac_ld = module.torch_flags(compiler="clang++-19", system="Darwin")
    assert {"-fopenmp", "-fno-gnu-unique"} <= set(gcc_cxx)
    assert any(flag.endswith("libgomp.so.1") for flag in gcc_ld)
    for cxx, ld in [(clang_cxx, clang_ld), (mac_cxx, mac_ld)]:
        assert not {"-fopenmp", "-fno-gnu-unique"} & set(cxx)
        assert not any("gomp" in flag for flag in ld)
    assert "dynamic_lookup" in mac_ld and "dynamic_lookup" not in gcc_ld + clang_ld


@pytest.mark.kernels_ci
def test_variant_name_on_macos(monkeypatch):
    """kernels names macOS variants without a C++ ABI tag, arm64 as aarch64."""
    import platform

    import torch
    from kernels.variants import parse_variant

    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    major, minor = torch.__version__.split(".")[:2]
    name = build_local().torch_variant_name()
    assert name == f"torch{major}{minor}-cpu-aarch64-darwin"
    assert parse_variant(name).variant_str == name


@pytest.mark.kernels_ci
def test_simulator_flags_follow_the_compiler_and_machine(monkeypatch):
    """tests/msl_sim/build.py: GCC's and clang's spelling of the ThreadSanitizer option, -mf16c
    on x86-64 only, -undefined dynamic_lookup on macOS."""
    import platform

    spec = importlib.util.spec_from_file_location("msl_sim_build",
                                                  REPO / "tests" / "msl_sim" / "build.py")
    sim_build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(sim_build)
    _, gcc_kernel, gcc_link = sim_build.compiler_flags("g++")
    _, clang_kernel, _ = sim_build.compiler_flags("clang++-19")
    assert "--param" in gcc_kernel and "-mllvm" not in gcc_kernel
    assert "-mllvm" in clang_kernel and "--param" not in clang_kernel
    assert ("-mf16c" in gcc_kernel) == (platform.machine() == "x86_64")
    monkeypatch.setattr(platform, "system", lambda: "Darwin")
    monkeypatch.setattr(platform, "machine", lambda: "arm64")
    runtime, kernel, link = sim_build.compiler_flags("clang++-19")
    assert "-mf16c" not in runtime + kernel and "dynamic_lookup" in link
    assert "dynamic_lookup" not in gcc_link
