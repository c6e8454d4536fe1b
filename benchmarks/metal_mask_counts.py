#!/usr/bin/env python3
"""attn_mask on the Metal kernels, counted by the MSL simulator (no Apple GPU here):

    python benchmarks/metal_mask_counts.py

A shared boolean [L, S] mask whose 8 x 8 tiles are a third closed, a third open and a third
mixed (tests/test_metal_design.py's block_mask), 2 batches x 2 heads, d 64, float32, forward and
backward; then the same call with an all-closed mask. Prints, per kernel, the attn_mask bytes it
reads against the bytes of the mixed tiles (once per sequence and head), and its MMAs against the
unmasked call's. tests/test_metal_design.py holds the same figures.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))


def main() -> int:
    subprocess.run([sys.executable, str(REPO / "scripts" / "build_local.py"), "--variant", "sim"],
                   check=True, stdout=subprocess.DEVNULL)
    os.environ["LOCAL_KERNELS"] = f"kernels-community/metal-flash-sdpa={REPO / 'build-sim'}"
    import kernels
    import torch

    from test_metal_design import block_mask

    fa = kernels.get_kernel("kernels-community/metal-flash-sdpa", version=2)
    n, h, L, S, e = 2, 2, 64, 128, 64
    g = torch.Generator().manual_seed(4)
    q, k, v = (torch.randn(n, h, length, e, generator=g).requires_grad_() for length in (L, S, S))
    mask, state = block_mask(L, S)
    tiles = (L // 8) * (S // 8)
    mixed = int((state == 2).sum()) // 64
    closed = int((state == 0).sum()) // 64

    def run(attn_mask):
        with tempfile.NamedTemporaryFile(suffix=".jsonl", delete=False) as f:
            os.environ["MFS_SIM_TRACE"] = f.name
        out = fa.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        torch.autograd.grad(out, (q, k, v), torch.ones_like(out))
        del os.environ["MFS_SIM_TRACE"]
        reports = [json.loads(line) for line in Path(f.name).read_text().splitlines()]
        os.unlink(f.name)
        return reports

    def mask_bytes(r):
        return sum(b["bytes_read"] for b in r["buffers"] if b["name"] == "attn_mask")

    masked, plain, shut = run(mask), run(None), run(torch.zeros(L, S, dtype=torch.bool))
    print(f"mask [{L}, {S}] bool, shared by {n} batches x {h} heads: {tiles} tiles of 8 x 8, "
          f"{closed} closed, {tiles - closed - mixed} open, {mixed} mixed "
          f"({mixed * 64 * n * h} bytes of mixed tiles over the sequences and heads)")
    print(f"{'kernel':22} {'mask bytes':>10} {'MMAs':>7} {'unmasked':>8} {'ratio':>6} "
          f"{'all closed':>10}")
    for r in masked:
        family = re.sub(r"_d\d+$", "", r["kernel"])
        p = next((x for x in plain if x["kernel"] == r["kernel"]), None)
        s = next((x for x in shut if x["kernel"] == r["kernel"]), None)
        base = p["simdgroup_mma"] if p else 0
        print(f"{family:22} {mask_bytes(r):10} {r['simdgroup_mma']:7} {base:8} "
              f"{(r['simdgroup_mma'] / base if base else 0):6.3f} "
              f"{(s['simdgroup_mma'] if s else 0):10}")
    print(f"live share of the tiles: {(tiles - closed) / tiles:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
