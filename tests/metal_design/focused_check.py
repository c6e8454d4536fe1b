#!/usr/bin/env python3
"""A focused correctness check of one simulated-Metal build, run in its own process:

    python tests/metal_design/focused_check.py <variant-root> [--dtypes f32]

Runs a few calls that reach every kernel family (multi-tile causal and windowed prefill with GQA,
sinks, ALiBi and softcap; decode, with and without split-K; rows outside every sequence; the
backward's gradients, with GQA, sinks, softcap, ALiBi and windows; torch's attn_mask through
scaled_dot_product_attention, its closed, open and mixed tiles, forward and backward with the
mask's gradient) under
the simulator's in-order, reverse and random fiber schedules with threadgroup memory poisoned,
and compares with the float64 reference. Exits 0 when everything matches, 1 otherwise (printing
what failed). The mutation test (test_metal_design.py) expects 1 from every planted bug.
--wide adds the head-dim-512 cases; the backward's run the backward op alone (out and lse from
the reference: tests/backward_op.py), so they need only the build's 512 backward kernels.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(TESTS))

import torch  # noqa: E402

from batches import paged_cache, varlen_batch  # noqa: E402
from reference import Semantics, TOLERANCE, attention_varlen  # noqa: E402

DTYPES = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}

# (name, q lengths, k lengths, heads, heads_kv, head_dim, feature kwargs)
CASES = [
    ("prefill_causal", [70, 33], [70, 90], 4, 2, 64,
     dict(causal=True, sinks=True, alibi=True, softcap=4.0)),
    ("prefill_window", [45], [60], 2, 1, 64, dict(window_size=(20, 3))),
    ("prefill_paged", [40, 20], [70, 33], 4, 2, 64, dict(causal=True, page_size=5)),
    ("decode", [1, 3, 2], [40, 75, 0], 4, 2, 64, dict(causal=True, sinks=True)),
    ("decode_window_alibi", [4, 2], [90, 50], 4, 2, 64,
     dict(window_size=(20, 3), alibi=True, softcap=4.0)),
    ("decode_paged", [1, 2], [70, 45], 4, 2, 64, dict(causal=True, page_size=3)),
    ("decode_split", [1, 2], [600, 300], 4, 1, 64, dict(causal=True, sinks=True)),
    # a GQA group of 8 heads x up to 8 rows: more pairs than a lane group holds (cohorts)
    ("decode_cohorts", [8, 5, 1], [40, 75, 9], 8, 1, 64,
     dict(causal=True, alibi=True, sinks=True)),
    ("decode_cohorts_paged", [6, 3], [70, 45], 8, 1, 64, dict(window_size=(30, 0), page_size=3)),
]


# --wide: head-dim tile 512 (four SIMD-groups per prefill row group, float32's shared K/V tile,
# decode's q read from threadgroup memory, lane shares straddling a 264-wide row's end), and the
# decode's MMA path and 16-lane shuffle path at tile 128 (16-bit).
WIDE_CASES = [
    ("prefill_wide", [40], [45], 2, 1, 512, dict(causal=True, sinks=True)),
    ("decode_wide", [1, 2], [40, 30], 4, 2, 512, dict(causal=True)),
    ("decode_wide_264", [2, 1], [35, 20], 4, 2, 264, dict(sinks=True)),
    # tile 128: the decode's MMA path in 16-bit dtypes (4 to 8 pairs: GQA 8 x 1 row, 2 heads x 3
    # rows, GQA 4 x 2 rows paged with a window, split keys, long runs of keys)
    ("decode_mma", [1, 3, 2], [70, 45, 0], 8, 1, 128, dict(causal=True, sinks=True, alibi=True)),
    ("decode_mma_paged", [1, 2], [70, 45], 8, 2, 128,
     dict(window_size=(30, 0), page_size=3, softcap=4.0)),
    ("decode_mma_split", [1, 1], [600, 300], 8, 1, 128, dict(sinks=True)),
    # 40 threadgroups of 8 pairs (GQA 4 x 2 rows): no split on the simulated 10-core GPU, so each
    # SIMD-group takes several 8-key steps (O^T rescaled between them)
    ("decode_mma_long", [1, 2, 1, 1, 2], [300, 280, 260, 90, 310], 32, 8, 128, dict(causal=True)),
    # the 16-bit tiles 96/128 shuffle path (1 to 3 pairs): a key over 16 lanes of 8 elements,
    # two keys per SIMD-group step, head dims 120 and 112 (lanes past the row's end), paged
    # (tile 128: the mutants' wide build keeps 64, 128 and 512)
    ("decode_16lanes", [1, 3, 2], [70, 45, 0], 2, 2, 120, dict(causal=True, sinks=True, alibi=True)),
    ("decode_16lanes_paged", [1, 1], [70, 45], 3, 1, 112,
     dict(window_size=(30, 0), page_size=3, softcap=4.0)),
]


def load(root: Path):
    os.environ["LOCAL_KERNELS"] = f"kernels-community/metal-flash-sdpa={root}"
    import kernels

    return kernels.get_kernel("kernels-community/metal-flash-sdpa", version=2)


def run_case(fa, case, dtype) -> str | None:
    name, lq, lk, heads, heads_kv, dim, feature = case
    g = torch.Generator().manual_seed(len(name))
    batch = varlen_batch(lq, lk, heads, heads_kv, dim, dtype, g, padding_rows=2)
    sinks = torch.randn(heads, generator=g) if feature.get("sinks") else None
    alibi = torch.rand(heads, generator=g) * 0.3 if feature.get("alibi") else None
    kwargs = {k: v for k, v in feature.items() if k not in ("sinks", "alibi", "page_size")}
    k, v, table = batch.k, batch.v, None
    if feature.get("page_size"):
        k, v, table = paged_cache(batch.k, batch.v, batch.cu_seqlens_k, feature["page_size"], g)
    try:
        out, lse, _ = fa.flash_attn_varlen_func(
            batch.q, k, v, batch.cu_seqlens_q, batch.cu_seqlens_k,
            batch.max_seqlen_q, batch.max_seqlen_k, s_aux=sinks, alibi_slopes=alibi,
            block_table=table, return_attn_probs=True, **kwargs)
    except RuntimeError as e:
        return f"{name}: raised {str(e).splitlines()[0][:300]}"
    sem = Semantics(scale=dim ** -0.5, causal=kwargs.get("causal", False),
                    window=kwargs.get("window_size", (-1, -1)), softcap=kwargs.get("softcap", 0.0),
                    alibi_slopes=alibi, sinks=sinks)
    ref_out, ref_lse = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                        batch.cu_seqlens_k, sem)
    tol = TOLERANCE[dtype]
    if out.isnan().any() or lse.isnan().any():
        return f"{name}: NaN in the output"
    if not torch.allclose(out.double(), ref_out, atol=tol["atol"] * 2, rtol=tol["rtol"] * 2):
        return f"{name}: out differs by {(out.double() - ref_out).abs().max().item():.3g}"
    finite = ~torch.isneginf(ref_lse)
    if not torch.equal(torch.isneginf(lse), ~finite) or not torch.allclose(
            lse.double()[finite], ref_lse[finite], atol=2e-4, rtol=2e-4):
        return f"{name}: lse differs"
    return None


# The backward: (name, q lengths, k lengths, heads, heads_kv, head_dim, feature kwargs). Several
# key and query tiles per threadgroup, GQA, a sequence without keys.
BACKWARD_CASES = [
    ("backward_causal", [70, 33], [70, 90], 4, 2, 64,
     dict(causal=True, sinks=True, alibi=True, softcap=2.0)),
    ("backward_window", [45, 5], [60, 0], 4, 1, 64, dict(window_size=(20, 3), sinks=True)),
    # Tile 96: dK/dV and dQ by head-dim shares in float32 (one streamed copy), by full-width rows
    # with the owned rows staged in threadgroup memory in 16-bit dtypes.
    ("backward_d96_causal", [37, 20], [45, 20], 4, 2, 96, dict(causal=True, softcap=2.0, alone=True)),
    # Dropout (metal/attention_dropout.h), forward and gradients against the reference with the
    # stream's mask: a window's hull starts key tiles off multiples of 4 (a lane's key pair then
    # straddles two Philox blocks); decode-sized queries, which the plan sends to the prefill.
    ("dropout_window", [40, 17], [60, 30], 4, 2, 64, dict(window_size=(21, 3), dropout_p=0.3)),
    ("dropout_decode_sized", [5, 3], [30, 21], 4, 2, 64, dict(causal=True, dropout_p=0.2)),
]
# --wide: tile 512 (streamed rows in registers, two barriers per tile), on the backward op alone;
# several owned and streamed tiles per sequence, GQA, V on its own tile.
BACKWARD_WIDE_CASES = [
    # Tile 256: the head-dim shares with two streamed copies (16-bit dtypes), 8 streamed rows.
    ("backward256_gqa_causal", [21, 9], [30, 9], 4, 2, 256, dict(causal=True, sinks=True, alone=True)),
    ("backward512_causal", [21, 9], [30, 9], 4, 2, 512,
     dict(causal=True, sinks=True, softcap=2.0, alone=True)),
    ("backward512_v256_window", [17], [26], 2, 1, 512,
     dict(window_size=(9, 2), alibi=True, head_dim_v=256, alone=True)),
]


# Max error of a gradient against float64, relative to its largest magnitude (at least 1).
BACKWARD_TOLERANCE = {torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 4e-2}


def run_backward_case(fa, case, dtype) -> str | None:
    """dq, dk, dv, d s_aux against float64 autograd of the reference (with `alone`: of the
    backward op on the reference's out and lse, else through the build's forward)."""
    from backward_op import backward_alone

    name, lq, lk, heads, heads_kv, dim, feature = case
    g = torch.Generator().manual_seed(len(name))
    dim_v = feature.get("head_dim_v", dim)
    batch = varlen_batch(lq, lk, heads, heads_kv, dim, dtype, g, head_dim_v=dim_v,
                         padding_rows=2)
    sinks = torch.randn(heads, generator=g) if feature.get("sinks") else None
    alibi = torch.rand(heads, generator=g) * 0.3 if feature.get("alibi") else None
    kwargs = {k: v for k, v in feature.items()
              if k not in ("sinks", "alibi", "head_dim_v", "alone")}
    dropout_p = feature.get("dropout_p", 0.0)
    inputs = [t.detach().requires_grad_() for t in (batch.q, batch.k, batch.v)]
    if sinks is not None:
        inputs.append(sinks.detach().requires_grad_())
    dout = torch.randn(batch.q.shape[0], heads, dim_v, generator=g).to(dtype)
    sem = Semantics(scale=dim ** -0.5, causal=kwargs.get("causal", False),
                    window=kwargs.get("window_size", (-1, -1)), softcap=kwargs.get("softcap", 0.0),
                    alibi_slopes=alibi, sinks=sinks)
    if dropout_p:  # the call draws its stream state from torch's generator: the same words
        from test_dropout import drawn_words, varlen_factors

        words = drawn_words(len(name))
        torch.manual_seed(len(name))
        sem.dropout_factors = varlen_factors(words, dropout_p, batch.cu_seqlens_q, heads)
    try:
        if feature.get("alone"):
            got = backward_alone(fa, batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                 batch.cu_seqlens_k, dout, sem, batch.max_seqlen_q,
                                 batch.max_seqlen_k)
        else:
            out = fa.flash_attn_varlen_func(
                *inputs[:3], batch.cu_seqlens_q, batch.cu_seqlens_k, batch.max_seqlen_q,
                batch.max_seqlen_k, s_aux=inputs[3] if sinks is not None else None,
                alibi_slopes=alibi, **kwargs)
            got = torch.autograd.grad(out, inputs, dout)
    except RuntimeError as e:
        return f"{name}: raised {str(e).splitlines()[0][:300]}"
    ref_inputs = [t.detach().double().requires_grad_() for t in inputs]
    sem.sinks = ref_inputs[3] if sinks is not None else None
    ref_out, _ = attention_varlen(*ref_inputs[:3], batch.cu_seqlens_q, batch.cu_seqlens_k, sem)
    want = torch.autograd.grad(ref_out, ref_inputs, dout.double())
    if dropout_p:
        err = (out.detach().double() - ref_out.detach()).abs().max().item()
        if err > 2 * TOLERANCE[dtype]["atol"] + 2 * TOLERANCE[dtype]["rtol"] * ref_out.abs().max().item():
            return f"{name}: out differs by {err:.3g}"
    for label, a, w in zip(("dq", "dk", "dv", "ds_aux"), got, want):
        if not torch.isfinite(a).all():
            return f"{name}: {label} is not finite"
        err = (a.double() - w).abs().max().item()
        if err > BACKWARD_TOLERANCE[dtype] * max(1.0, w.abs().max().item()):
            return f"{name}: {label} differs by {err:.3g}"
    return None


def mask_case_inputs(dtype):
    """An SDPA call with a learned bias whose 8 x 8 tiles are closed (-inf), open (0) and mixed,
    a fully masked row, GQA; and its boolean twin."""
    g = torch.Generator().manual_seed(21)
    n, h, hk, L, S, e = 2, 4, 2, 70, 90, 64
    q = torch.randn(n, h, L, e, generator=g).to(dtype)
    k = torch.randn(n, hk, S, e, generator=g).to(dtype)
    v = torch.randn(n, hk, S, e, generator=g).to(dtype)
    bias = torch.randn(1, h, L, S, generator=g)
    bias[..., 16:40] = float("-inf")
    bias[..., 40:64] = 0.0
    bias[..., ::5, 64:] = float("-inf")
    bias[..., 3, :] = float("-inf")
    return q, k, v, bias


def run_mask_case(fa, dtype) -> str | None:
    """attn_mask on the prefill and the backward (mask gradient included) against float64."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q, k, v, bias = mask_case_inputs(dtype)
    inputs = [t.detach().requires_grad_() for t in (q, k, v, bias)]
    ref_inputs = [t.detach().double().requires_grad_() for t in (q, k, v, bias)]
    try:
        out = fa.scaled_dot_product_attention(*inputs[:3], attn_mask=inputs[3], enable_gqa=True)
        dout = torch.randn(out.shape, generator=torch.Generator().manual_seed(1)).to(dtype)
        got = torch.autograd.grad(out, inputs, dout)
        keep = bias > float("-inf")
        out_bool = fa.scaled_dot_product_attention(q, k, v, attn_mask=keep, enable_gqa=True)
    except RuntimeError as e:
        return f"mask: raised {str(e).splitlines()[0][:300]}"
    with sdpa_kernel(SDPBackend.MATH):
        ref = F.scaled_dot_product_attention(*ref_inputs[:3], attn_mask=ref_inputs[3], enable_gqa=True)
        ref_bool = F.scaled_dot_product_attention(*ref_inputs[:3], attn_mask=keep, enable_gqa=True)
    want = torch.autograd.grad(ref, ref_inputs, dout.double())
    tol = TOLERANCE[dtype]
    for label, a, w in (("out", out, ref), ("bool out", out_bool, ref_bool)):
        if not torch.allclose(a.double(), w, atol=tol["atol"] * 2, rtol=tol["rtol"] * 2):
            return f"mask: {label} differs by {(a.double() - w).abs().max().item():.3g}"
    for label, a, w in zip(("dq", "dk", "dv", "dmask"), got, want):
        if not torch.isfinite(a).all():
            return f"mask: {label} is not finite"
        err = (a.double() - w).abs().max().item()
        if err > BACKWARD_TOLERANCE[dtype] * max(1.0, w.abs().max().item()):
            return f"mask: {label} differs by {err:.3g}"
    return None


def run_adversarial(fa) -> list[str]:
    """Garbage offsets (within reach of the simulator's red zones) must not fault."""
    from metal_design.adversarial import MILD_CASES, adversarial_call

    problems = []
    for name, (paged, bad) in MILD_CASES.items():
        for decode in (False, True):
            try:
                adversarial_call(fa, paged, decode, bad)
            except RuntimeError as e:
                problems.append(f"{name} decode={decode}: {str(e).splitlines()[0][:300]}")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("root", type=Path)
    parser.add_argument("--dtypes", default="f32")
    parser.add_argument("--schedules", default="inorder,reverse,random")
    parser.add_argument("--wide", action="store_true", help="the tile-512 cases too")
    args = parser.parse_args()
    if args.wide:  # first: a planted bug of the 512 path is reported by a 512 case
        BACKWARD_CASES[:0] = BACKWARD_WIDE_CASES
    fa = load(args.root)
    failures = []
    # Stops at the first failure: one is enough to fail, and planted bugs then cost less time.
    for schedule in args.schedules.split(","):
        os.environ["MFS_SIM_SCHEDULE"] = schedule
        for dtype in args.dtypes.split(","):
            runs = [(lambda fa, _case, dtype: run_mask_case(fa, dtype), None)]
            runs += [(run_backward_case, case) for case in BACKWARD_CASES]
            runs += [(run_case, case) for case in CASES + (WIDE_CASES if args.wide else [])]
            for run, case in runs:
                problem = run(fa, case, DTYPES[dtype])
                if problem:
                    failures.append(f"[{schedule} {dtype}] {problem}")
                    break
            if failures:
                break
        if failures:
            break
    if not failures:
        failures += [f"[adversarial] {p}" for p in run_adversarial(fa)]
    for f in failures:
        print(f)
    print("FAIL" if failures else "PASS")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
