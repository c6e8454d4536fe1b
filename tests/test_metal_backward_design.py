"""Design checks of the Metal backward kernels (metal/attention_backward.metal): the backward
plan's choices (plain C++, probed like the forward's in test_metal_design.py: tiles, threadgroup
memory, registers, grids, what it refuses), and, on the MSL simulator through the `sim` build,
every instantiation and the device traffic and MMA work against the design minimum
(benchmarks/metal_traffic.py). The gradients themselves are tested on every variant by
test_backward.py and test_training.py; planted bugs by test_metal_design.py's mutants."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from metal_design.plan import (BWD_DKDV, BWD_DQ, BWD_ROW_DOT, BWD_SINKS, DTYPES, ELEM_BYTES,
                               HAS_ALIBI, HAS_SINKS, PAGED_KV, SEQUSED_K, VARLEN_K, VARLEN_Q,
                               WRITE_LSE, backward_kernel_names, backward_plan,
                               backward_register_estimates, instantiated_backward_names, plans)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import metal_traffic  # noqa: E402

TILES = [32, 64, 72, 80, 96, 128, 192, 256]
MAX_TG_BYTES = 32 * 1024
OWN = 16  # MFS_BWD_OWN


def fields(batch=2, heads_q=8, heads_kv=2, head_dim=64, head_dim_v=None, max_q=40, max_k=50,
           flags=VARLEN_Q | VARLEN_K | WRITE_LSE, q_rows=None, k_rows=None, **extra):
    return dict(batch=batch, heads_q=heads_q, heads_kv=heads_kv, head_dim=head_dim,
                head_dim_v=head_dim if head_dim_v is None else head_dim_v, max_seqlen_q=max_q,
                max_seqlen_k=max_k, flags=flags, q_rows=q_rows or batch * max_q,
                k_rows=k_rows or batch * max_k, **extra)


# ---------------------------------------------------------------------------- the plan (C++)

@pytest.mark.kernels_ci
def test_every_backward_name_the_plan_can_pick_is_instantiated():
    names = set(backward_kernel_names())
    assert len(names) == 3 * (1 + 2 * len(TILES)) + 1
    assert names == instantiated_backward_names()


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_threads_and_threadgroup_memory_of_every_instantiation(dtype):
    """Every head dim 8..256 runs on the smallest tile that holds it; the tiled kernels' static
    threadgroup memory is <= 32 KiB (f32 at tile 256 included); grids own 16 keys / rows."""
    dims = list(range(8, 257, 8))
    calls = [(dtype, "f32", fields(head_dim=d, head_dim_v=(64 if d == 256 else None)))
             for d in dims]
    for d, p in zip(dims, plans(calls, backward=True)):
        tile = min(t for t in TILES if t >= max(d, 32))
        kinds = [l["kind"] for l in p["launches"]]
        assert kinds == [BWD_ROW_DOT, BWD_DKDV, BWD_DQ], p
        row_dot, dkdv, dq = p["launches"]
        assert row_dot["kernel"] == f"mfs_bwd_row_dot_{dtype}"
        assert dkdv["kernel"] == f"mfs_bwd_dkdv_{dtype}_d{tile}"
        assert dq["kernel"] == f"mfs_bwd_dq_{dtype}_d{tile}"
        for launch in (dkdv, dq):
            assert 0 < launch["tgmem"] <= MAX_TG_BYTES, launch
            assert launch["threads"] == (256 if tile >= 192 else 128)
        assert dkdv["grid"] == [-(-50 // OWN), 2, 2]  # key tiles, KV heads, sequences
        assert dq["grid"] == [-(-40 // OWN), 8, 2]    # query tiles, query heads, sequences
        assert p["scratch"] == [2 * 40 * 8 * 4]       # D: one float per (row, head)


@pytest.mark.kernels_ci
def test_threadgroup_memory_at_the_largest_tiles():
    # float32 at tile 256: the streamed tiles shrink to 8 rows so that everything fits.
    p = backward_plan("f32", "f32", **fields(head_dim=256))
    assert all(l["tgmem"] <= MAX_TG_BYTES for l in p["launches"])
    assert max(l["tgmem"] for l in p["launches"]) > 16 * 1024


@pytest.mark.kernels_ci
def test_register_estimates_are_within_budget_and_documented():
    estimates = backward_register_estimates()
    assert len(estimates) == 2 * 2 * len(TILES)
    assert max(estimates.values()) <= 128, estimates
    readme = (REPO / "metal-flash-sdpa" / "metal" / "README.md").read_text()
    for family in ("dkdv", "dq"):
        for tile in TILES:
            row = (f"| backward {family} | {tile} | {estimates[f'{family}_f32_d{tile}']} | "
                   f"{estimates[f'{family}_16bit_d{tile}']} |")
            assert row in readme, f"README register table lacks: {row}"


@pytest.mark.kernels_ci
def test_sinks_get_their_own_deterministic_launch():
    p = backward_plan("bf16", "f16", **fields(flags=VARLEN_Q | VARLEN_K | WRITE_LSE | HAS_SINKS))
    sinks = p["launches"][-1]
    assert sinks["kind"] == BWD_SINKS and sinks["kernel"] == "mfs_bwd_sinks"
    assert sinks["grid"] == [1, 8, 1] and sinks["threads"] == 32  # one SIMD-group per head
    assert 10 in sinks["buffers"] and 19 in sinks["buffers"]  # s_aux, d s_aux
    assert sinks["constants"]["0"] == 1  # s_aux's dtype (float16) as a function constant
    assert BWD_SINKS not in [l["kind"] for l in backward_plan(**fields())["launches"]]


@pytest.mark.kernels_ci
def test_features_are_function_constants_and_buffers_bound():
    p = backward_plan(**fields(flags=VARLEN_Q | VARLEN_K | WRITE_LSE | HAS_ALIBI),
                      window_left=3, window_right=0, softcap=2.0)
    for launch in p["launches"]:
        assert launch["constants"]["5"] == 1 and launch["constants"]["6"] == 1
        assert launch["constants"]["9"] == 1
    dkdv = p["launches"][1]
    # q, k, v, lse, cu_seqlens_q/k, slopes, dout, dk, dv, D
    assert sorted(dkdv["buffers"]) == [0, 1, 2, 4, 5, 6, 9, 15, 17, 18, 20]


@pytest.mark.kernels_ci
def test_what_the_backward_refuses():
    for flags in (VARLEN_Q | VARLEN_K | PAGED_KV | WRITE_LSE, VARLEN_Q | SEQUSED_K | WRITE_LSE,
                  VARLEN_Q | VARLEN_K):
        assert "error" in backward_plan(**fields(flags=flags))
    assert "error" in backward_plan(**fields(heads_q=6, heads_kv=4))


@pytest.mark.kernels_ci
def test_empty_calls_launch_nothing():
    assert backward_plan(**fields(batch=0))["launches"] == []
    p = backward_plan(**fields(max_k=0, k_rows=1))
    assert [l["kind"] for l in p["launches"]] == [BWD_ROW_DOT, BWD_DQ]  # dq rows get zeros


# ---------------------------------------------------------------------- on the MSL simulator

@pytest.fixture(scope="module")
def fa_sim():
    return metal_traffic.load_sim_build()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_every_backward_instantiation_runs(fa_sim, dtype):
    """Each (tile, dtype) backward kernel the plan can pick runs once, with bounds checking, and
    its gradients match float64 autograd (the tolerance of test_backward.py's margin)."""
    from batches import varlen_batch
    from reference import Semantics, attention_varlen

    g = torch.Generator().manual_seed(3)
    for tile in TILES:
        batch = varlen_batch([5, 19], [21, 19], 4, 2, tile, dtype, g)
        inputs = [t.detach().requires_grad_() for t in (batch.q, batch.k, batch.v)]
        out = fa_sim.flash_attn_varlen_func(*inputs, batch.cu_seqlens_q, batch.cu_seqlens_k,
                                            19, 21, causal=True)
        dout = torch.randn(out.shape, generator=g).to(dtype)
        got = torch.autograd.grad(out, inputs, dout)
        ref = [t.detach().double().requires_grad_() for t in inputs]
        ref_out, _ = attention_varlen(*ref, batch.cu_seqlens_q, batch.cu_seqlens_k,
                                      Semantics(scale=tile ** -0.5, causal=True))
        want = torch.autograd.grad(ref_out, ref, dout.double())
        margin = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}[dtype]
        for a, w in zip(got, want):
            err = (a.double() - w).abs().max().item()
            assert err <= margin * max(1.0, w.abs().max().item()), (tile, err)


@pytest.mark.parametrize("config", metal_traffic.BACKWARD_CONFIGS, ids=lambda c: c.name)
def test_backward_traffic_and_work_are_near_the_design_minimum(fa_sim, config):
    """Device bytes within 15 % of the design minimum (metal_traffic.backward_minimum); each of
    dq, dk, dv written once; MMAs no more than the whole-tile count, and within 15 % of the
    visible pairs' ideal."""
    m = metal_traffic.measure_backward(fa_sim, config)
    eb = metal_traffic.ELEM[config.dtype]
    rows_q = sum(config.lengths_q)
    rows_k = sum(config.lengths_k)
    assert m["bytes"]["dq"] == rows_q * config.heads * config.head_dim * eb
    assert m["bytes"]["dk"] == rows_k * config.heads_kv * config.head_dim * eb
    assert m["bytes"]["dv"] == rows_k * config.heads_kv * config.dv * eb
    assert m["ratio"] <= 1.15, f"{m['total']} device bytes vs minimum {m['minimum']['total']}"
    assert m["mma"] <= m["minimum"]["tiled_mma"] + 1e-9
    assert m["mma_ratio"] <= 1.15, m["mma_ratio"]
    assert all(tg_bytes <= MAX_TG_BYTES for _, tg_bytes in m["tiles"].values())
