"""The scaled_dot_product_attention drop-in against torch's own SDPA on the same masked inputs
(cpu build): forward and forward + backward as ratios measured in one run (rounds interleaved),
and the peak extra memory of each.

    python benchmarks/sdpa_masks.py [--repeats 3] [--quick] [--baseline CHECKOUT]
        [--masks key_padding full_random_bool] [--head-dims 64 128] [--dtypes float32 bfloat16]

--baseline times another checkout's cpu build (its build/, e.g. main's before a change) in the
same interleaved rounds, so that a before / after comparison shares the machine's load.

Workloads: [batch 1, 16 heads, L = S = 2048] at head dim 64 and 128, fp32 and bf16, with a
key-padding mask [N, 1, 1, S] (a quarter of the keys padded away) and a full random boolean mask
[N, H, L, S] (half the keys kept).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import attention_routes as R  # noqa: E402


def workload(batch, heads, seqlen, head_dim, dtype, mask_kind, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, seqlen, head_dim, generator=g).to(dtype) for _ in range(3))
    if mask_kind == "key_padding":
        mask = torch.ones(batch, 1, 1, seqlen, dtype=torch.bool)
        mask[..., seqlen * 3 // 4:] = False
    else:
        mask = torch.rand(batch, heads, seqlen, seqlen, generator=g) > 0.5
    return q, k, v, mask


def load_baseline(checkout: Path):
    """The cpu build of another checkout (its build/), loaded beside this one's under its own
    repo id (the op namespaces differ by the build's hash)."""
    import kernels

    repo_id = "local/metal-flash-sdpa-baseline"
    os.environ["LOCAL_KERNELS"] = f"{repo_id}={checkout.resolve()}"
    return kernels.get_kernel(repo_id, version=2)


def routes(fa, q, k, v, mask, backward: bool, baseline=None):
    dout = torch.randn(q.shape[:-1] + (v.shape[-1],)).to(q.dtype)

    def run(fn):
        def call():
            if not backward:
                with torch.no_grad():
                    return fn(q, k, v, attn_mask=mask)
            leaves = [t.detach().requires_grad_() for t in (q, k, v)]
            fn(*leaves, attn_mask=mask).backward(dout)
        return call

    timed = {"kernel": run(fa.scaled_dot_product_attention),
             "torch SDPA": run(F.scaled_dot_product_attention)}
    if baseline is not None:
        timed["baseline"] = run(baseline.scaled_dot_product_attention)
    return timed


def main() -> None:
    def more(parser):
        parser.add_argument("--baseline", type=Path, help="a checkout whose cpu build to time too")
        parser.add_argument("--masks", nargs="+", default=["key_padding", "full_random_bool"],
                            choices=["key_padding", "full_random_bool"])
        parser.add_argument("--head-dims", nargs="+", type=int, default=[64, 128], choices=[64, 128])
        parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"],
                            choices=["float32", "bfloat16"])

    args = R.benchmark_arguments(None, 3, "L = S = 512 (a smoke run)", more)
    fa = R.load_local_kernel()
    baseline = load_baseline(args.baseline) if args.baseline else None
    seqlen = 512 if args.quick else 2048
    print(f"{R.torch_and_threads()}; ratio = torch / kernel "
          f"(> 1: the kernel is faster); memory = peak extra resident MiB, kernel / torch")
    for mask_kind in args.masks:
        for head_dim in args.head_dims:
            for dtype in (getattr(torch, name) for name in args.dtypes):
                q, k, v, mask = workload(1, 16, seqlen, head_dim, dtype, mask_kind)
                line = f"{mask_kind:17s} d={head_dim:3d} {str(dtype)[6:]:8s}"
                for backward in (False, True):
                    r = routes(fa, q, k, v, mask, backward, baseline)
                    t = R.time_routes(r, repeats=args.repeats)
                    mem = {name: R.peak_extra_bytes(r[name]) for name in ("kernel", "torch SDPA")}
                    what = "fwd+bwd" if backward else "fwd"
                    line += (f" | {what} {t['torch SDPA'] / t['kernel']:5.2f}x "
                             f"({t['kernel'] * 1e3:7.1f} ms vs {t['torch SDPA'] * 1e3:7.1f} ms), ")
                    if baseline is not None:
                        line += f"baseline {t['torch SDPA'] / t['baseline']:5.2f}x, "
                    line += f"mem {mem['kernel'] / 2**20:6.1f} / {mem['torch SDPA'] / 2**20:6.1f}"
                print(line, flush=True)


if __name__ == "__main__":
    main()
