"""The package loads the way it does on a user's machine after `get_kernel` downloaded it: from an
offline Hugging Face cache laid out as a Hub snapshot of this repo (kernel repo type, a `v2`
branch ref), with HF_HUB_OFFLINE=1 and no LOCAL_KERNELS. Runs in a child process so that its
environment (cache location, offline mode) does not leak into the other tests. The call runs on
the variant's device."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

import pytest

from conftest import REPO, REPO_ID, VARIANTS

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: the child builds its inputs on the variant's device

LOAD_AND_CALL = r"""
import os, sys, torch, kernels
sys.path.insert(0, sys.argv[1])
from batches import varlen_batch
from reference import Semantics, assert_close, attention_varlen

assert "LOCAL_KERNELS" not in os.environ and os.environ["HF_HUB_OFFLINE"] == "1"
backend, device = sys.argv[4], sys.argv[5]  # a Mac's build/ holds the metal and cpu variants
fa = kernels.get_kernel(sys.argv[2], version=2, backend=backend)
assert fa.__file__.startswith(sys.argv[3]), fa.__file__  # loaded from the cache
batch = varlen_batch([5, 0, 9], [7, 3, 9], heads=4, heads_kv=2, head_dim=64,
                     dtype=torch.float16, generator=torch.Generator().manual_seed(0),
                     device=device)
out = fa.flash_attn_varlen_func(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                batch.cu_seqlens_k, batch.max_seqlen_q, batch.max_seqlen_k,
                                causal=True)
ref, _ = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                          Semantics(scale=64 ** -0.5, causal=True))
assert_close(out, ref, torch.float16)
print("loaded", fa.__name__)
"""


def hub_snapshot(cache, build_dir, commit: str):
    """huggingface_hub's cache layout for a kernel repo: blobs by content hash, a snapshot per
    commit whose files link to the blobs, refs/<branch> naming the commit."""
    repo_dir = cache / ("kernels--" + REPO_ID.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    files = {"build.toml": REPO / "build.toml", "README.md": REPO / "README.md"}
    for path in build_dir.rglob("*"):
        rel = path.relative_to(build_dir)
        if (path.is_file() and "__pycache__" not in rel.parts
                and not any(part.startswith(".") for part in rel.parts)):  # .obj/, .gen/
            files[f"build/{rel.as_posix()}"] = path
    for name, source in files.items():
        data = source.read_bytes()
        blob = repo_dir / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "v2").write_text(commit)
    return snapshot


@pytest.mark.kernels_ci
def test_get_kernel_from_an_offline_hub_snapshot(variant, tmp_path):
    root, backend, device = VARIANTS[variant]
    build_dir = root / "build" if (root / "build").is_dir() else root  # holds <variant>/ dirs
    commit = hashlib.sha1(variant.encode()).hexdigest()
    cache = tmp_path / "hub"
    hub_snapshot(cache, build_dir, commit)
    env = {k: v for k, v in os.environ.items()
           if k not in ("LOCAL_KERNELS", "KERNELS_CACHE", "HF_HOME")}
    env.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), HF_HOME=str(tmp_path / "home"))
    result = subprocess.run(
        [sys.executable, "-c", LOAD_AND_CALL, str(REPO / "tests"), REPO_ID, str(cache), backend,
         device],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("loaded _metal_flash_sdpa_")

