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
                               instantiated_backward_names, plans)

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import metal_traffic  # noqa: E402

TILES = [32, 64, 72, 80, 96, 128, 192, 256, 512]
MAX_TG_BYTES = 32 * 1024
OWN = 16  # MFS_BWD_OWN
# dK/dV and dQ by full-width rows (mfs_bwd_rows_tile): tiles up to 96 in 16-bit dtypes (128: dK/dV
# over the register budget), up to 80 in float32 (above: owned rows + two streamed copies > 32 KiB).
ROWS_TILES = {"f32": (32, 64, 72, 80), "f16": (32, 64, 72, 80, 96),
              "bf16": (32, 64, 72, 80, 96)}


def rows_stream(tile: int, dtype: str) -> int:
    """mfs_bwd_rows_stream: streamed rows per step of the full-width-rows kernels."""
    return {("f32", 64): 16, ("f32", 72): 8, ("f32", 80): 8, ("f16", 80): 16, ("f16", 96): 16,
            ("f16", 128): 8}.get((dtype.replace("bf16", "f16"), tile), 32)


def rows_tg_bytes(tile: int, dtype: str) -> int:
    """Two copies of the streamed tiles (rows padded by 16 B) and their lse, D; above tile 64 each
    SIMD-group's 8 owned rows of two operands (32 rows x 2, padded alike)."""
    eb = ELEM_BYTES[dtype]
    st = rows_stream(tile, dtype)
    owned = 2 * 32 * (tile + 16 // eb) * eb if tile > 64 else 0
    return 2 * (2 * st * (tile + 16 // eb) * eb + 2 * st * 4) + owned
ROWS_OWN = 32          # MFS_BWD_ROWS_OWN: 8 keys / rows per SIMD-group, 4 SIMD-groups


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
    assert len(names) == 3 * (1 + 2 * len(TILES)) + 2  # + d s_aux, attn_mask's summary
    assert names == instantiated_backward_names()


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES)
def test_tiles_threads_and_threadgroup_memory_of_every_instantiation(dtype):
    """Every head dim 8..512 runs on the smallest tile that holds it; the tiled kernels' static
    threadgroup memory is <= 32 KiB (f32 at tiles 256 and 512 included); grids own 16 keys /
    rows."""
    dims = list(range(8, 513, 8))
    calls = [(dtype, "f32", fields(head_dim=d, head_dim_v=(64 if d == 256 else None)))
             for d in dims]
    for d, p in zip(dims, plans(calls, backward=True)):
        tile = min(t for t in TILES if t >= max(d, 32))
        kinds = [l["kind"] for l in p["launches"]]
        assert kinds == [BWD_ROW_DOT, BWD_DKDV, BWD_DQ], p
        row_dot, dkdv, dq = p["launches"]
        rows = tile in ROWS_TILES[dtype]
        assert row_dot["kernel"] == f"mfs_bwd_row_dot_{dtype}"
        assert dkdv["kernel"] == f"mfs_bwd_dkdv_{'rows_' if rows else ''}{dtype}_d{tile}"
        assert dq["kernel"] == f"mfs_bwd_dq_{'rows_' if rows else ''}{dtype}_d{tile}"
        for launch in (dkdv, dq):
            assert 0 < launch["tgmem"] <= MAX_TG_BYTES, launch
            assert launch["threads"] == (512 if tile == 512 else 256 if tile >= 192 else 128)
        # key tiles, KV heads, sequences
        assert dkdv["grid"] == [-(-50 // (ROWS_OWN if rows else OWN)), 2, 2]
        assert dq["grid"] == [-(-40 // (ROWS_OWN if rows else OWN)), 8, 2]  # query tiles
        assert p["scratch"] == [2 * 40 * 8 * 4]       # D: one float per (row, head)


@pytest.mark.kernels_ci
def test_threadgroup_memory_at_the_largest_tiles():
    # float32 at tile 256: the streamed tiles shrink to 8 rows so that everything fits.
    p = backward_plan("f32", "f32", **fields(head_dim=256))
    assert all(l["tgmem"] <= MAX_TG_BYTES for l in p["launches"])
    assert max(l["tgmem"] for l in p["launches"]) > 16 * 1024
    # Tile 512: no streamed tile in threadgroup memory (read into registers), whatever the dtype:
    # 16 SIMD-groups' partial S and dP (16 x 2 x 16 rows of 8 floats, each padded by 4 against
    # bank conflicts: mfs_bwd_partial_ld), the finished P and dS (2 x 16 x 12 floats), the lse
    # and D of 16 rows.
    for dtype in DTYPES:
        for d, dv in ((512, 512), (512, 256), (256, 512), (264, 264)):
            p = backward_plan(dtype, "f32", **fields(head_dim=d, head_dim_v=dv))
            tiled = [l for l in p["launches"] if l["kind"] in (BWD_DKDV, BWD_DQ)]
            assert [l["kernel"][-5:] for l in tiled] == ["_d512"] * 2
            assert all(l["tgmem"] == (16 * 2 * 16 * 12 + 2 * 16 * 12 + 2 * 16) * 4 for l in tiled)
            assert all(l["threads"] == 512 for l in tiled)


@pytest.mark.kernels_ci
def test_16_bit_streamed_tiles_are_double_buffered_within_32_kib():
    # metal_backward_config.h, mfs_bwd_stream_buffers: 16-bit dtypes stage two copies of the
    # streamed tiles (rows padded by 16 B) and of their lse, D, and the finished P, dS get their
    # own area; float32 stages one copy, the finished P, dS in slot 0 of the partials.
    for d, st, nsg in ((96, 16, 4), (128, 16, 4), (256, 8, 8)):
        partials = nsg * 2 * 16 * (st + 4)
        for dtype in (("f32",) if d == 96 else DTYPES):  # 16-bit up to 96: full-width rows
            eb = ELEM_BYTES[dtype]
            copies = 2 if eb == 2 else 1
            p = backward_plan(dtype, "f32", **fields(head_dim=d))
            tiled = [l for l in p["launches"] if l["kind"] in (BWD_DKDV, BWD_DQ)]
            finished = 2 * 16 * (st + 4) if copies == 2 else 0
            want = copies * 2 * st * (d + 16 // eb) * eb + (partials + finished + copies * 2 * 16) * 4
            assert [l["tgmem"] for l in tiled] == [want] * 2, (dtype, d)
            assert want <= MAX_TG_BYTES


@pytest.mark.kernels_ci
def test_full_width_rows_double_buffer_the_streamed_rows_within_32_kib():
    # metal_backward_config.h, mfs_bwd_rows_*: two copies of the streamed tiles (Q and dO, or K
    # and V; rows padded by 16 B) and of the streamed rows' lse and D (dK/dV; dQ keeps its rows'
    # in registers and leaves that area unused); 32 streamed rows, 16 or 8 where two copies of
    # 32 would not fit; above tile 64 the owned rows too; nothing else (no partials).
    for d in (8, 32, 40, 64, 72, 80, 88, 96, 120, 128):
        tile = min(t for t in TILES if t >= max(d, 32))
        for dtype in DTYPES:
            p = backward_plan(dtype, "f32", **fields(head_dim=d))
            tiled = [l for l in p["launches"] if l["kind"] in (BWD_DKDV, BWD_DQ)]
            if tile not in ROWS_TILES[dtype]:
                assert [l["kernel"] for l in tiled] == [f"mfs_bwd_dkdv_{dtype}_d{tile}",
                                                        f"mfs_bwd_dq_{dtype}_d{tile}"]
                continue
            assert [l["kernel"] for l in tiled] == [f"mfs_bwd_dkdv_rows_{dtype}_d{tile}",
                                                    f"mfs_bwd_dq_rows_{dtype}_d{tile}"]
            for launch in tiled:
                assert launch["threads"] == 128
                assert launch["tgmem"] == rows_tg_bytes(tile, dtype), (d, dtype)
                assert launch["tgmem"] <= MAX_TG_BYTES
    # float32 at 96 and 128 keeps the head-dim shares (owned rows + two streamed copies of 8:
    # 38,528 and 50,816 bytes); so does a 16-bit call whose V head dim takes it to tile 192.
    assert rows_tg_bytes(96, "f32") > MAX_TG_BYTES and rows_tg_bytes(128, "f32") > MAX_TG_BYTES
    p = backward_plan("f16", "f32", **fields(head_dim=64, head_dim_v=136))
    assert [l["kernel"] for l in p["launches"] if l["kind"] in (BWD_DKDV, BWD_DQ)] == [
        "mfs_bwd_dkdv_f16_d192", "mfs_bwd_dq_f16_d192"]


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


# Max error of a gradient against float64 autograd, relative to its largest magnitude (at
# least 1).
MARGIN = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}


def backward_against_reference(fa, lengths_q, lengths_k, heads, heads_kv, head_dim, dtype,
                               generator, head_dim_v=None, sinks=False, alibi=False, **semantics):
    """The backward op alone (tests/backward_op.py: out and lse from the float64 reference, so
    that a tile runs whether or not the build's forward has it) against float64 autograd of the
    reference; returns the gradients."""
    from backward_op import backward_alone
    from batches import varlen_batch
    from reference import Semantics, attention_varlen

    batch = varlen_batch(lengths_q, lengths_k, heads, heads_kv, head_dim, dtype, generator,
                         head_dim_v=head_dim_v)
    s_aux = torch.randn(heads, generator=generator) if sinks else None
    slopes = torch.rand(heads, generator=generator) * 0.3 if alibi else None
    dout = torch.randn(batch.q.shape[0], heads, batch.v.shape[-1], generator=generator).to(dtype)
    sem = Semantics(scale=head_dim ** -0.5, alibi_slopes=slopes, sinks=s_aux, **semantics)
    got = backward_alone(fa, batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                         dout, sem, max(lengths_q), max(lengths_k))
    ref = [t.detach().double().requires_grad_() for t in (batch.q, batch.k, batch.v)]
    ref_sinks = s_aux.double().requires_grad_() if sinks else None
    sem.sinks = ref_sinks
    ref_out, _ = attention_varlen(*ref, batch.cu_seqlens_q, batch.cu_seqlens_k, sem)
    want = torch.autograd.grad(ref_out, ref + ([ref_sinks] if sinks else []), dout.double())
    for name, a, w in zip(("dq", "dk", "dv", "ds_aux"), got, want):
        assert a.dtype == (torch.float32 if name == "ds_aux" else dtype) and a.shape == w.shape
        err = (a.double() - w).abs().max().item()
        assert err <= MARGIN[dtype] * max(1.0, w.abs().max().item()), (name, head_dim, err)
    return got


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_every_backward_instantiation_runs(fa_sim, dtype):
    """Each (tile, dtype) backward kernel the plan can pick runs once, with bounds checking, and
    its gradients match float64 autograd (the tolerance of test_backward.py's margin). The
    backward op runs alone (tests/backward_op.py), so every tile runs in this build."""
    g = torch.Generator().manual_seed(3)
    for tile in TILES:
        backward_against_reference(fa_sim, [5, 19], [21, 19], 4, 2, tile, dtype, g, causal=True)


# Head dim 512 (Gemma 4's global layers), on the backward op alone: GQA, causal, softcap, sinks,
# ALiBi, windows; q/k and v on different tiles; a head dim that is not a multiple of 16. Owned
# tiles of 16 keys / rows, streamed tiles of 8: several of each per sequence.
HEAD_DIM_512_CASES = {
    "d512_gqa_causal_softcap_sinks": dict(lengths_q=[5, 19], lengths_k=[21, 19], heads=4,
                                          heads_kv=1, head_dim=512, causal=True, softcap=3.0,
                                          sinks=True),
    "d512_v256_window_alibi": dict(lengths_q=[12, 3], lengths_k=[17, 0], heads=2, heads_kv=2,
                                   head_dim=512, head_dim_v=256, window=(6, 2), alibi=True),
    "d256_v512_causal": dict(lengths_q=[9, 18], lengths_k=[9, 25], heads=4, heads_kv=2,
                             head_dim=256, head_dim_v=512, causal=True, sinks=True),
    "d264_noncausal": dict(lengths_q=[7, 20], lengths_k=[11, 20], heads=2, heads_kv=1,
                           head_dim=264),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", HEAD_DIM_512_CASES, ids=str)
def test_head_dim_512_gradients(fa_sim, case, dtype):
    g = torch.Generator().manual_seed(11)
    backward_against_reference(fa_sim, dtype=dtype, generator=g, **HEAD_DIM_512_CASES[case])


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
