"""flash_attn_with_kvcache's flash-attn arguments beyond the basic append-and-attend
(test_kvcache.py): rotary_cos / rotary_sin / rotary_interleaved, cache_leftpad, softcap,
alibi_slopes, window_size, return_softmax_lse and num_splits, on contiguous (with and without
cache_batch_idx) and paged caches, against the float64 reference; bad values refused by name with
the cache untouched."""

from __future__ import annotations

import math

import pytest
import torch

from batches import random_tensor
from reference import Semantics, assert_close, assert_lse_close, attention_one_sequence
from test_kvcache import check_refused_call_leaves_the_cache_untouched, refused_call

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: the kernel's inputs are on the `device` fixture's
BATCH, HEADS, HEADS_KV, CAPACITY, PAGE = 3, 4, 2, 48, 8


def rotate_reference(x, cos, sin, positions):
    """x [S, H, D] (float64) rotated at `positions` [S]: each rotated pair is a complex number
    multiplied by exp(i * angle), pairs (2m, 2m + 1) (interleaved) or (m, m + R/2) (NeoX)."""
    interleaved, half = rotate_reference.interleaved, cos.shape[1]
    x = x.clone()
    angle = torch.complex(cos[positions].double(), sin[positions].double()).unsqueeze(1)
    if interleaved:
        pairs = torch.view_as_complex(x[..., :2 * half].reshape(*x.shape[:-1], half, 2).contiguous())
        x[..., :2 * half] = torch.view_as_real(pairs * angle).reshape(*x.shape[:-1], 2 * half)
    else:
        z = torch.complex(x[..., :half], x[..., half:2 * half]) * angle
        x[..., :half], x[..., half:2 * half] = z.real, z.imag
    return x


def make_cache(layout, generator, dtype, dim, cached_k, cached_v, slots_from):
    """A NaN-filled cache holding sequence b's cached tokens at slots slots_from[b].. (the slots
    before stay NaN: a left-padded cache's padding is never read)."""
    kwargs = {}
    if layout == "paged":
        pages_per_seq, num_pages = CAPACITY // PAGE, BATCH * CAPACITY // PAGE + 3
        order = torch.randperm(num_pages, generator=generator)[: BATCH * pages_per_seq]
        table = order.view(BATCH, pages_per_seq).to(torch.int32)
        k_cache = torch.full((num_pages, PAGE, HEADS_KV, dim), math.nan, dtype=dtype)
        v_cache = torch.full((num_pages, PAGE, HEADS_KV, dim), math.nan, dtype=dtype)
        where = lambda b, t: (int(table[b, t // PAGE]), t % PAGE)  # noqa: E731
        kwargs["block_table"] = table
    else:
        rows = torch.tensor([2, 0, 3]) if layout == "batch_idx" else torch.arange(BATCH)
        k_cache = torch.full((4, CAPACITY, HEADS_KV, dim), math.nan, dtype=dtype)
        v_cache = torch.full((4, CAPACITY, HEADS_KV, dim), math.nan, dtype=dtype)
        where = lambda b, t: (int(rows[b]), t)  # noqa: E731
        if layout == "batch_idx":
            kwargs["cache_batch_idx"] = rows.to(torch.int32)
    for b in range(BATCH):
        for i in range(cached_k[b].shape[0]):
            k_cache[where(b, slots_from[b] + i)] = cached_k[b][i]
            v_cache[where(b, slots_from[b] + i)] = cached_v[b][i]
    return k_cache, v_cache, kwargs, where


def check(fa, device, generator, dtype, layout, *, s_new=3, seqlen_q=3, dim=64, causal=True,
          window=(-1, -1), rotary=None, leftpad=False, softcap=0.0, alibi=None):
    lengths = torch.tensor([4, 17, 40 - s_new], dtype=torch.int32)
    pad = torch.tensor([0, 5, 11] if leftpad else [0, 0, 0], dtype=torch.int32)
    q = random_tensor((BATCH, seqlen_q, HEADS, dim), dtype, generator)
    k_new = random_tensor((BATCH, s_new, HEADS_KV, dim), dtype, generator)
    v_new = random_tensor((BATCH, s_new, HEADS_KV, dim), dtype, generator)
    cached_k = [random_tensor((int(n - p), HEADS_KV, dim), dtype, generator)
                for n, p in zip(lengths, pad)]
    cached_v = [random_tensor((int(n - p), HEADS_KV, dim), dtype, generator)
                for n, p in zip(lengths, pad)]
    k_cache, v_cache, kwargs, where = make_cache(layout, generator, dtype, dim, cached_k, cached_v,
                                                 [int(p) for p in pad])
    if rotary is not None:
        interleaved, rotary_dim = rotary
        inv_freq = 1.0 / 10000 ** (torch.arange(0, rotary_dim, 2).double() / rotary_dim)
        angles = torch.arange(CAPACITY).double().view(-1, 1) * inv_freq
        kwargs.update(rotary_cos=angles.cos().to(dtype), rotary_sin=angles.sin().to(dtype),
                      rotary_interleaved=interleaved)
    if leftpad:
        kwargs["cache_leftpad"] = pad
    slopes = {None: None, "heads": torch.rand(HEADS, generator=generator),
              "batch": torch.rand(BATCH, HEADS, generator=generator)}[alibi]
    on = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
    k_cache, v_cache = on(k_cache), on(v_cache)
    out, lse = fa.flash_attn_with_kvcache(
        on(q), k_cache, v_cache, on(k_new), on(v_new), cache_seqlens=on(lengths), causal=causal,
        window_size=window, softcap=softcap, alibi_slopes=on(slopes), num_splits=3,
        return_softmax_lse=True, **{name: on(t) for name, t in kwargs.items()})

    sem = Semantics(scale=dim ** -0.5, causal=causal, window=window, softcap=softcap,
                    alibi_slopes=slopes)
    per_token = causal or window != (-1, -1)
    for b in range(BATCH):
        new_k, q_b = k_new[b].double(), q[b].double()
        if rotary is not None:
            rotate_reference.interleaved = rotary[0]
            cos, sin = kwargs["rotary_cos"], kwargs["rotary_sin"]
            steps = torch.arange(s_new)
            new_k = rotate_reference(new_k, cos, sin, int(lengths[b]) + steps)
            q_steps = torch.arange(seqlen_q) if per_token else torch.zeros(seqlen_q, dtype=torch.long)
            q_b = rotate_reference(q_b, cos, sin, int(lengths[b]) + q_steps)
            # The cache holds the rotated keys, rounded once to the dtype.
            stored = torch.stack([k_cache[where(b, int(lengths[b]) + i)].cpu()
                                  for i in range(s_new)])
            assert_close(stored, new_k, dtype, what=f"rotated keys of sequence {b}")
            # The kernel attends with the rotated tokens rounded to the dtype (as flash-attn's):
            # so does the reference, its inputs being the kernel's.
            new_k, q_b = new_k.to(dtype).double(), q_b.to(dtype).double()
        keys = torch.cat([cached_k[b].double(), new_k])
        values = torch.cat([cached_v[b], v_new[b]])
        ref_out, ref_lse = attention_one_sequence(q_b, keys, values, sem, b)
        assert_close(out[b], ref_out, dtype, what=f"sequence {b}")
        assert_lse_close(lse[b], ref_lse)


LAYOUTS = ["contiguous", "batch_idx", "paged"]
DTYPES = [torch.float32, torch.bfloat16]


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("causal", [True, False])
def test_rotary(fa, device, generator, dtype, layout, interleaved, causal):
    # Interleaved pairs on half the head dim (the rest untouched), NeoX halves on all of it.
    check(fa, device, generator, dtype, layout, causal=causal,
          rotary=(interleaved, 32 if interleaved else 64))


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
def test_leftpad(fa, device, generator, dtype, layout):
    check(fa, device, generator, dtype, layout, leftpad=True)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_leftpad_decode_with_rotary_window_and_alibi(fa, device, generator, layout):
    # The window and ALiBi are aligned to the left-padded sequence; rotary positions are slots.
    check(fa, device, generator, torch.float16, layout, s_new=1, seqlen_q=1, leftpad=True,
          rotary=(False, 64), window=(6, 0), alibi="batch")


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("feature", ["softcap", "window", "alibi_heads", "alibi_batch"])
def test_scores_features(fa, device, generator, dtype, layout, feature):
    check(fa, device, generator, dtype, layout, causal=feature != "window",
          softcap=5.0 if feature == "softcap" else 0.0,
          window=(7, 2) if feature == "window" else (-1, -1),
          alibi={"alibi_heads": "heads", "alibi_batch": "batch"}.get(feature))


@pytest.mark.parametrize("num_splits", [0, 1, 4])
def test_num_splits_changes_nothing(fa, device, generator, num_splits):
    q, k_cache, v_cache = (random_tensor(s, torch.float32, generator, device=device)
                           for s in ((2, 1, 4, 32), (2, 40, 2, 32), (2, 40, 2, 32)))
    lengths = torch.tensor([40, 13], dtype=torch.int32, device=device)
    base = fa.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=lengths)
    out = fa.flash_attn_with_kvcache(q, k_cache, v_cache, cache_seqlens=lengths,
                                     num_splits=num_splits)
    assert torch.equal(out, base)


def rotary_table(args, rows=8, half=8, dtype=torch.float16):
    device = args["q"].device
    return torch.ones(rows, half, dtype=dtype, device=device)


# name -> (how to break a good call, exception type, words the message must contain).
REFUSED = {
    "rotary_cos_alone": (lambda a: dict(rotary_cos=rotary_table(a)), ValueError,
                         ["rotary_cos and rotary_sin"]),
    "rotary_shapes_differ": (lambda a: dict(rotary_cos=rotary_table(a),
                                            rotary_sin=rotary_table(a, half=4)),
                             ValueError, ["same shape"]),
    "rotary_1d": (lambda a: dict(rotary_cos=rotary_table(a)[0], rotary_sin=rotary_table(a)[0]),
                  ValueError, ["rotary_cos", "seqlen_ro"]),
    "rotary_integer": (lambda a: dict(rotary_cos=rotary_table(a, dtype=torch.int32),
                                      rotary_sin=rotary_table(a, dtype=torch.int32)),
                       ValueError, ["rotary_cos", "floating"]),
    "rotary_dim_past_head_dim": (lambda a: dict(rotary_cos=rotary_table(a, half=20),
                                                rotary_sin=rotary_table(a, half=20)),
                                 ValueError, ["rotary_dim", "head_dim"]),
    "rotary_too_few_positions": (lambda a: dict(rotary_cos=rotary_table(a, rows=7),
                                                rotary_sin=rotary_table(a, rows=7)),
                                 ValueError, ["rotary_cos", "seqlen_ro"]),
    "rotary_device": (lambda a: dict(rotary_cos=rotary_table(a).to("meta"),
                                     rotary_sin=rotary_table(a).to("meta")),
                      RuntimeError, ["rotary_cos", "device"]),
    "cache_leftpad_int64": (lambda a: dict(cache_leftpad=torch.zeros(2, dtype=torch.int64,
                                                                     device=a["q"].device)),
                            ValueError, ["cache_leftpad", "int32"]),
    "cache_leftpad_shape": (lambda a: dict(cache_leftpad=torch.zeros(3, dtype=torch.int32,
                                                                     device=a["q"].device)),
                            ValueError, ["cache_leftpad", "batch=2"]),
    "cache_leftpad_past_cache_seqlens": (
        lambda a: dict(cache_leftpad=torch.tensor([0, 6], dtype=torch.int32, device=a["q"].device)),
        ValueError, ["cache_leftpad[1]", "cache_seqlens"]),
    "cache_leftpad_negative": (
        lambda a: dict(cache_leftpad=torch.tensor([-1, 0], dtype=torch.int32,
                                                  device=a["q"].device)),
        ValueError, ["cache_leftpad[0]"]),
    "num_splits_negative": (lambda a: dict(num_splits=-1), ValueError, ["num_splits"]),
    "num_splits_bool": (lambda a: dict(num_splits=True), ValueError, ["num_splits"]),
}
VALUES_CHECKED_ON_HOST_ONLY = {"cache_leftpad_past_cache_seqlens", "cache_leftpad_negative"}
CASES = [(c, layout) for c in sorted(REFUSED) for layout in ("contiguous", "paged")]


@pytest.mark.kernels_ci
@pytest.mark.parametrize("case,layout", CASES, ids=[f"{c}-{l}" for c, l in CASES])
def test_refused_call_leaves_the_cache_untouched(fa, device, generator, case, layout):
    check_refused_call_leaves_the_cache_untouched(
        fa, device, generator, REFUSED, VALUES_CHECKED_ON_HOST_ONLY, case, layout)


def test_rotary_needs_new_tokens(fa, device, generator):
    args = refused_call(device, generator, "contiguous")
    del args["k"], args["v"]
    table = rotary_table(args)
    with pytest.raises(ValueError, match="need k and v"):
        fa.flash_attn_with_kvcache(**args, rotary_cos=table, rotary_sin=table)


def test_leftpad_refuses_a_cache_whose_rows_are_not_packed(fa, device, generator):
    args = refused_call(device, generator, "contiguous")
    wide = torch.zeros(2, 12, 2, 32, dtype=torch.float16, device=device)
    args.update(k_cache=wide[:, :8], v_cache=wide[:, :8].clone(),
                cache_leftpad=torch.zeros(2, dtype=torch.int32, device=device))
    with pytest.raises(ValueError, match="cache_leftpad needs k_cache"):
        fa.flash_attn_with_kvcache(**args)
