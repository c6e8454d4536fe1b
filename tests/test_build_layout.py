"""The local build is laid out as kernel-builder lays out a Hub variant, so that kernels loads
it unchanged; build.toml lists every source and header of the tree."""

from __future__ import annotations

import json
import tomllib

import pytest
import torch

from conftest import REPO, VARIANTS


@pytest.mark.kernels_ci
def test_variant_directory(fa, variant):
    import kernels.variants  # noqa: F401  (the loader's own variant naming)

    major, minor = torch.__version__.split(".")[:2]
    root = VARIANTS[variant][0]
    build = root / "build" if (root / "build").is_dir() else root
    variant_dir = build / f"torch{major}{minor}-cxx11-cpu-x86_64-linux"
    assert variant_dir.is_dir()
    metadata = json.loads((variant_dir / "metadata.json").read_text())
    assert metadata["name"] == "metal-flash-sdpa" and metadata["version"] == 2
    assert metadata["backend"]["type"] == "cpu"
    assert metadata["id"] == fa.__name__
    assert (variant_dir / f"{metadata['id']}.abi3.so").is_file()
    ops_py = (variant_dir / "_ops.py").read_text()
    assert f'return f"{metadata["id"]}::{{op_name}}"' in ops_py


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
