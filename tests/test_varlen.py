"""flash_attn_varlen_func against the float64 reference, over the feature matrix of docs/API.md."""

from __future__ import annotations

import pytest
import torch

from batches import paged_cache, varlen_batch
from reference import Semantics, assert_close, assert_lse_close, attention_varlen

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's

# name -> keyword arguments of flash_attn_varlen_func (alibi / sinks drawn per call)
FEATURES = {
    "plain": {},
    "causal": dict(causal=True),
    "window": dict(window_size=(7, 3)),
    "window_left_causal": dict(window_size=(5, -1), causal=True),
    "window_right_only": dict(window_size=(-1, 2)),
    "softcap": dict(softcap=1.5),
    "sinks": dict(sinks=True),
    "alibi": dict(alibi="per_head"),
    "alibi_per_batch": dict(alibi="per_batch"),
    "everything": dict(causal=True, window_size=(9, -1), softcap=3.0, sinks=True,
                       alibi="per_head"),
}

# name -> (query lengths, key lengths) of the sequences of one packed batch
LENGTHS = {
    "ragged": ([5, 17, 1, 33], [9, 17, 40, 33]),
    "empty_q_or_k": ([0, 4, 3, 0, 2], [6, 0, 3, 0, 5]),
    "q_longer_than_k": ([12, 3], [5, 3]),
    "decode_long_k": ([1, 1, 1], [70, 1, 130]),
}


def call_varlen(fa, batch, generator, feature: dict, k=None, v=None, block_table=None,
                scale=None):
    """Runs the kernel and the reference for one feature set; returns both."""
    heads = batch.q.shape[1]
    n_seq = len(batch.cu_seqlens_q) - 1
    kwargs = {key: val for key, val in feature.items() if key not in ("sinks", "alibi")}
    alibi = None
    device = batch.q.device
    if feature.get("alibi") == "per_head":
        alibi = (torch.rand(heads, generator=generator) * 0.5).to(device)
    elif feature.get("alibi") == "per_batch":
        alibi = (torch.rand(n_seq, heads, generator=generator) * 0.5).to(device)
    sinks = torch.randn(heads, generator=generator).to(device) if feature.get("sinks") else None
    scale = batch.q.shape[-1] ** -0.5 if scale is None else scale
    out, lse, _ = fa.flash_attn_varlen_func(
        batch.q, batch.k if k is None else k, batch.v if v is None else v,
        batch.cu_seqlens_q, batch.cu_seqlens_k, batch.max_seqlen_q, batch.max_seqlen_k,
        softmax_scale=scale, alibi_slopes=alibi, s_aux=sinks, block_table=block_table,
        return_attn_probs=True, **kwargs,
    )
    sem = Semantics(scale=scale, causal=kwargs.get("causal", False),
                    window=kwargs.get("window_size", (-1, -1)), softcap=kwargs.get("softcap", 0.0),
                    alibi_slopes=alibi, sinks=sinks)
    ref_out, ref_lse = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                        batch.cu_seqlens_k, sem)
    return out, lse, ref_out, ref_lse


@pytest.mark.parametrize("lengths", sorted(LENGTHS))
@pytest.mark.parametrize("feature", sorted(FEATURES))
@pytest.mark.parametrize("head_dim", [64, 72, 128])
@pytest.mark.parametrize("gqa", [1, 4])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_varlen_features(fa, device, generator, dtype, gqa, head_dim, feature, lengths):
    lengths_q, lengths_k = LENGTHS[lengths]
    batch = varlen_batch(lengths_q, lengths_k, heads=2 * gqa, heads_kv=2, head_dim=head_dim,
                         dtype=dtype, generator=generator, device=device)
    inputs_before = [t.clone() for t in (batch.q, batch.k, batch.v)]
    out, lse, ref_out, ref_lse = call_varlen(fa, batch, generator, FEATURES[feature])
    assert out.shape == ref_out.shape and out.dtype == dtype
    assert_close(out, ref_out, dtype)
    assert_lse_close(lse, ref_lse)
    for before, after in zip(inputs_before, (batch.q, batch.k, batch.v)):
        assert torch.equal(before, after), "an input was modified"


# Every multiple of 8 up to 256; above it (Gemma 4's global layers use 512) a few, so that the
# simulator, slowest at the widest tiles, stays quick: 264 (past the 256 tile), the middle of the
# 512 tile, one short of and exactly 512.
HEAD_DIMS = list(range(8, 257, 8)) + [264, 384, 504, 512]


@pytest.mark.kernels_ci
@pytest.mark.parametrize("head_dim", HEAD_DIMS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_every_head_dim(fa, device, generator, dtype, head_dim):
    batch = varlen_batch([3, 20], [25, 20], heads=4, heads_kv=2, head_dim=head_dim, dtype=dtype,
                         generator=generator, device=device)
    out, lse, ref_out, ref_lse = call_varlen(fa, batch, generator, dict(causal=True))
    assert_close(out, ref_out, dtype)
    assert_lse_close(lse, ref_lse)


@pytest.mark.parametrize("dims", [(64, 128), (128, 64), (32, 256), (96, 40), (512, 256),
                                  (256, 512), (264, 72), (40, 512)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_value_head_dim_differs(fa, device, generator, dtype, dims):
    head_dim, head_dim_v = dims
    batch = varlen_batch([7, 30], [30, 11], heads=4, heads_kv=1, head_dim=head_dim,
                         head_dim_v=head_dim_v, dtype=dtype, generator=generator, device=device)
    out, lse, ref_out, ref_lse = call_varlen(fa, batch, generator, dict(causal=True))
    assert out.shape[-1] == head_dim_v
    assert_close(out, ref_out, dtype)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_strided_inputs_and_rows_outside_sequences(fa, device, generator, dtype):
    """q/k/v views with only the last dim contiguous; rows after cu_seqlens_q[-1] come back 0."""
    batch = varlen_batch([6, 19, 1], [6, 30, 8], heads=6, heads_kv=3, head_dim=64, dtype=dtype,
                         generator=generator, strided=True, padding_rows=5, device=device)
    assert not batch.q.is_contiguous() and not batch.k.is_contiguous()
    out, lse, ref_out, ref_lse = call_varlen(fa, batch, generator,
                                             dict(causal=True, sinks=True))
    assert_close(out, ref_out, dtype)
    assert_lse_close(lse, ref_lse)
    assert torch.equal(out[-5:], torch.zeros_like(out[-5:]))


@pytest.mark.parametrize("page_size", [1, 5, 16, 64])
@pytest.mark.parametrize("feature", ["plain", "causal", "everything"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_paged_kv(fa, device, generator, dtype, feature, page_size):
    batch = varlen_batch([3, 1, 20, 0], [40, 1, 20, 7], heads=4, heads_kv=2, head_dim=64,
                         dtype=dtype, generator=generator, device=device)
    k_cache, v_cache, table = paged_cache(batch.k, batch.v, batch.cu_seqlens_k, page_size,
                                          generator)
    out, lse, ref_out, ref_lse = call_varlen(fa, batch, generator, FEATURES[feature],
                                             k=k_cache, v=v_cache, block_table=table)
    assert_close(out, ref_out, dtype)
    assert_lse_close(lse, ref_lse)


@pytest.mark.parametrize("route", ["prefill", "decode"])
@pytest.mark.parametrize("paged", [False, True], ids=["packed", "paged"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_head_dim_512_every_feature(fa, device, generator, dtype, paged, route):
    """The widest head dim with every feature at once, prefill (several query rows) and decode
    (one row against long keys), packed and paged K/V."""
    lengths = ([9, 1, 20], [9, 30, 20]) if route == "prefill" else ([1, 1], [70, 5])
    batch = varlen_batch(*lengths, heads=4, heads_kv=2, head_dim=512, dtype=dtype,
                         generator=generator, device=device)
    k, v, table = batch.k, batch.v, None
    if paged:
        k, v, table = paged_cache(batch.k, batch.v, batch.cu_seqlens_k, 16, generator)
    out, lse, ref_out, ref_lse = call_varlen(fa, batch, generator, FEATURES["everything"],
                                             k=k, v=v, block_table=table)
    assert_close(out, ref_out, dtype)
    assert_lse_close(lse, ref_lse)


@pytest.mark.kernels_ci
def test_lse_not_returned_by_default(fa, device, generator):
    batch = varlen_batch([4, 9], [4, 9], heads=2, heads_kv=2, head_dim=32,
                         dtype=torch.float32, generator=generator, device=device)
    out = fa.flash_attn_varlen_func(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                    batch.cu_seqlens_k, batch.max_seqlen_q, batch.max_seqlen_k)
    assert isinstance(out, torch.Tensor)
    ref, _ = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                              Semantics(scale=32 ** -0.5))
    assert_close(out, ref, torch.float32)


@pytest.mark.kernels_ci
def test_max_seqlen_as_tensor(fa, device, generator):
    """transformers passes max_seqlen_* as 0-dim tensors (on the inputs' device)."""
    batch = varlen_batch([4, 9], [5, 9], heads=2, heads_kv=1, head_dim=32,
                         dtype=torch.bfloat16, generator=generator, device=device)
    out = fa.flash_attn_varlen_func(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                    batch.cu_seqlens_k,
                                    torch.tensor(batch.max_seqlen_q, device=device),
                                    torch.tensor(batch.max_seqlen_k, dtype=torch.int32,
                                                 device=device),
                                    causal=True)
    ref, _ = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q, batch.cu_seqlens_k,
                              Semantics(scale=32 ** -0.5, causal=True))
    assert_close(out, ref, torch.bfloat16)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_long_sequences(fa, device, generator, dtype):
    """Several key tiles and query tiles, causal and windowed: the tiling and skipping paths."""
    batch = varlen_batch([300, 129, 1], [300, 257, 513], heads=4, heads_kv=2, head_dim=128,
                         dtype=dtype, generator=generator, device=device)
    for feature in (dict(causal=True), dict(window_size=(100, 20)), dict(softcap=5.0,
                                                                          sinks=True)):
        out, lse, ref_out, ref_lse = call_varlen(fa, batch, generator, feature)
        assert_close(out, ref_out, dtype, what=str(feature))
        assert_lse_close(lse, ref_lse)


def test_scale_is_applied(fa, device, generator):
    batch = varlen_batch([9], [14], heads=2, heads_kv=2, head_dim=64, dtype=torch.float32,
                         generator=generator, device=device)
    out, lse, ref_out, ref_lse = call_varlen(fa, batch, generator, {}, scale=0.37)
    assert_close(out, ref_out, torch.float32)
    assert_lse_close(lse, ref_lse)


@pytest.mark.parametrize("dims", [(264, 264), (384, 384), (136, 392)],
                         ids=lambda d: f"{d[0]}_{d[1]}")
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_decode_head_dims_above_256(fa, device, generator, dtype, dims):
    """The decode path at head dims inside the 512 tile but not 512 (test_every_head_dim and
    test_head_dim_512_every_feature take prefill and 512): on Metal, rows that end mid-vector
    (264) must not be read past their end, and q/k and v may sit on different tiles."""
    head_dim, head_dim_v = dims
    batch = varlen_batch([1, 2], [30, 17], heads=4, heads_kv=2, head_dim=head_dim,
                         head_dim_v=head_dim_v, dtype=dtype, generator=generator, device=device)
    out, lse, ref_out, ref_lse = call_varlen(fa, batch, generator, dict(sinks=True))
    assert out.shape[-1] == head_dim_v
    assert_close(out, ref_out, dtype)
    assert_lse_close(lse, ref_lse)
