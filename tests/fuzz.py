#!/usr/bin/env python3
"""Fuzzing the public entry points against the float64 reference (tests/reference.py).

    python tests/fuzz.py --variant cpu --cases 10000      # make fuzz runs both builds
    python tests/fuzz.py --variant sim --cases 1000 --seed 7

Each case draws one random configuration across every axis at once: entry point (packed varlen,
paged varlen, fixed length, kv-cache decode/chunked prefill with and without appending, the
legacy in-place call), dtype, head dims up to 512 (V's may differ; above 256 in about one case
of eight), GQA, length mixes (empty sequences, sq != sk, decode-sized queries, rows after the last
sequence), page sizes, causal, windows (up to 2**31 - 1), softcap, ALiBi, sinks, scale, strided
views, integer tensors (offsets, cache_seqlens, block_table, cache_batch_idx) as strided or
expanded views. In about one case of eight a NaN or an infinity is planted in q, k, v or s_aux, and in
one of ten softcap is extreme (1e-3 .. 1e30) (draw_numerics). Outputs are compared with per-dtype
tolerances, NaN and Inf where the reference has them (docs/API.md, "NaN and Inf"); lse is
compared too; a case that raises is a failure. Case i of seed s is the same
configuration on every machine (printed on failure, re-run with --case). The kernel's inputs
are on the variant's device (`mps` on a Mac); the reference reads the same values on the CPU.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from batches import (  # noqa: E402
    cumulative,
    paged_cache,
    random_tensor,
    varlen_batch,
    widen_head_dims,
)
from nonfinite import assert_same_nonfinite_and_close, draw_plant, plant  # noqa: E402
from reference import (  # noqa: E402
    LSE_TOLERANCE,
    TOLERANCE,
    Semantics,
    attention_fixed,
    attention_one_sequence,
    attention_varlen,
)
from reference import assert_close as assert_finite_close  # noqa: E402
from reference import assert_lse_close as assert_finite_lse_close  # noqa: E402

KINDS = ["varlen", "varlen", "paged", "fixed", "kvcache", "kvcache_paged", "legacy"]


def draw_lengths(rng: random.Random, n_seq: int, longest: int):
    """Per-sequence (queries, keys): equal, decode, prefix, more queries than keys, empty."""
    lengths_q, lengths_k = [], []
    for _ in range(n_seq):
        kind = rng.choice(["equal", "decode", "prefix", "short_k", "empty_q", "empty_k"])
        n = rng.randint(1, longest)
        lengths_k.append(0 if kind == "empty_k" else n)
        lengths_q.append({"equal": n, "decode": rng.randint(1, 4), "prefix": rng.randint(1, n),
                          "short_k": n + rng.randint(1, 10), "empty_q": 0,
                          "empty_k": rng.randint(1, 5)}[kind])
    return lengths_q, lengths_k


def draw(rng: random.Random) -> dict:
    heads_kv = rng.choice([1, 1, 2, 3])
    head_dim = 8 * rng.choice([1, 2, 4, 8, 9, 10, 12, 16, 24, 32, rng.randint(1, 32)])
    window = (rng.choice([-1, -1, -1, 0, 1, 3, 17, 2**31 - 1]),
              rng.choice([-1, -1, -1, 0, 2, 5, 2**31 - 1]))
    n_seq = rng.randint(1, 4)
    longest = rng.choice([4, 16, 40, 80])
    lengths_q, lengths_k = draw_lengths(rng, n_seq, longest)
    c = dict(
        kind=rng.choice(KINDS),
        dtype=rng.choice([torch.float32, torch.float16, torch.bfloat16]),
        heads_kv=heads_kv, heads=heads_kv * rng.choice([1, 1, 2, 4]),
        head_dim=head_dim,
        head_dim_v=8 * rng.randint(1, 32) if rng.random() < 0.2 else head_dim,
        lengths_q=lengths_q, lengths_k=lengths_k,
        padding_rows=rng.choice([0, 0, 0, 3]),
        causal=rng.random() < 0.5, window=window,
        softcap=rng.choice([0.0, 0.0, 0.0, 1.0, 20.0]),
        alibi=rng.choice([None, None, "per_head", "per_batch"]),
        sinks=rng.random() < 0.3, strided=rng.random() < 0.3,
        page_size=rng.choice([1, 3, 16, 64]),
        scale=rng.choice([None, None, 0.05, 1.0]),
        # kv-cache: decode (1 query) or a chunk; tokens appended or not.
        sq_cache=rng.choice([1, 1, 2, 4, 9]), append=rng.random() < 0.6,
        permute_cache=rng.random() < 0.3,
    )
    c["head_dim"], c["head_dim_v"] = widen_head_dims(rng, c["head_dim"], c["head_dim_v"])
    # Integer tensors as views the kernels must not read as dense arrays: strided (junk between
    # the entries) or, for the kv-cache's lengths, one value expanded over the batch.
    c["offsets"] = rng.choice(["dense", "dense", "dense", "strided", "expanded"])
    draw_numerics(rng, c)
    return c


def int_view(t, c):
    """t as the case's integer-tensor layout: dense, or its values every other entry of a wider
    tensor (the last dim strided, junk between)."""
    if t is None or c["offsets"] == "dense":
        return t
    wide = torch.full((*t.shape[:-1], 2 * t.shape[-1]), -77, dtype=t.dtype, device=t.device)
    wide[..., ::2] = t
    return wide[..., ::2]


def draw_numerics(rng: random.Random, c: dict) -> None:
    """Extreme softcaps (tanh of tiny arguments, saturation) and NaN/Inf inputs."""
    if rng.random() < 0.1:
        c["softcap"] = rng.choice([1e-3, 1e6, 1e8, 1e30])
    masked = c["causal"] or c["window"] != (-1, -1) or c["kind"].startswith("kvcache")
    c["plant"] = draw_plant(rng, masked)
    if c["plant"] and c["softcap"] >= 1e6 and c["alibi"] and math.isinf(c["plant"]["value"]):
        # An infinite score is capped to +-softcap, where float32 cannot hold an ALiBi bias
        # (1e6 + 1.3 rounds to a multiple of 1/16): a limit of float32, not of the kernels.
        c["plant"]["value"] = math.nan


# A case without NaN/Inf planted must have none in its outputs; with, they must sit where the
# reference's are.
def assert_close(out, ref_out, dtype, c=None):
    if c is None or c.get("plant") is None:
        return assert_finite_close(out, ref_out, dtype)
    assert_same_nonfinite_and_close(out, ref_out, TOLERANCE[dtype], "out")


def assert_lse_close(lse, ref_lse, c=None):
    if c is None or c.get("plant") is None:
        return assert_finite_lse_close(lse, ref_lse)
    assert_same_nonfinite_and_close(lse, ref_lse, LSE_TOLERANCE, "lse")


def on(t, device):
    return None if t is None else t.to(device)


def features(c, n_seq: int, generator, device):
    """The reference's semantics (CPU tensors) and the kernel's keyword arguments (on device)."""
    alibi = {None: None, "per_head": torch.rand(c["heads"], generator=generator),
             "per_batch": torch.rand(n_seq, c["heads"], generator=generator)}[c["alibi"]]
    sinks = torch.randn(c["heads"], generator=generator) if c["sinks"] else None
    plant(c.get("plant"), s_aux=sinks)
    scale = c["scale"] or c["head_dim"] ** -0.5
    sem = Semantics(scale=scale, causal=c["causal"], window=c["window"], softcap=c["softcap"],
                    alibi_slopes=alibi, sinks=sinks)
    kwargs = dict(softmax_scale=c["scale"], causal=c["causal"], window_size=c["window"],
                  softcap=c["softcap"], alibi_slopes=on(alibi, device), s_aux=on(sinks, device))
    return sem, kwargs


def run_varlen(fa, c, generator, device, paged: bool):
    batch = varlen_batch(c["lengths_q"], c["lengths_k"], c["heads"], c["heads_kv"], c["head_dim"],
                         c["dtype"], generator, head_dim_v=c["head_dim_v"], strided=c["strided"],
                         padding_rows=c["padding_rows"], device=device)
    plant(c.get("plant"), q=batch.q, k=batch.k, v=batch.v)
    sem, kwargs = features(c, len(c["lengths_q"]), generator, device)
    k, v, table = batch.k, batch.v, None
    if paged:
        k, v, table = paged_cache(batch.k, batch.v, batch.cu_seqlens_k, c["page_size"], generator)
    out, lse, _ = fa.flash_attn_varlen_func(
        batch.q, k, v, int_view(batch.cu_seqlens_q, c), int_view(batch.cu_seqlens_k, c),
        batch.max_seqlen_q, batch.max_seqlen_k, block_table=int_view(table, c),
        return_attn_probs=True, **kwargs)
    ref_out, ref_lse = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                        batch.cu_seqlens_k, sem)
    assert_close(out, ref_out, c["dtype"], c)
    assert_lse_close(lse, ref_lse, c)


def run_legacy(fa, c, generator, device):
    """flash_attention_varlen writes a NaN-poisoned `out` in place: only sequences' rows."""
    # Its own conventions: no window/ALiBi/sinks, V's head dim is q's, softcapping 1.0 is off.
    c = {**c, "window": (-1, -1), "alibi": None, "sinks": False, "head_dim_v": c["head_dim"],
         "softcap": 0.0 if c["softcap"] == 1.0 else c["softcap"]}
    batch = varlen_batch(c["lengths_q"], c["lengths_k"], c["heads"], c["heads_kv"], c["head_dim"],
                         c["dtype"], generator, strided=c["strided"], padding_rows=c["padding_rows"],
                         device=device)
    plant(c.get("plant"), q=batch.q, k=batch.k, v=batch.v)
    sem, _ = features(c, len(c["lengths_q"]), generator, device)
    out = torch.full(batch.q.shape, math.nan, dtype=c["dtype"], device=device)
    fa.flash_attention_varlen(out, batch.q, batch.k, batch.v, int_view(batch.cu_seqlens_q, c),
                              int_view(batch.cu_seqlens_k, c), batch.max_seqlen_q,
                              batch.max_seqlen_k,
                              do_causal=c["causal"], scale=c["scale"],
                              softcapping=c["softcap"] or 1.0)
    ref_out, _ = attention_varlen(batch.q, batch.k, batch.v, batch.cu_seqlens_q,
                                  batch.cu_seqlens_k, sem)
    rows = int(batch.cu_seqlens_q[-1])
    assert_close(out[:rows], ref_out[:rows], c["dtype"], c)
    assert out[rows:].isnan().all(), "rows after the last sequence were written"


def run_fixed(fa, c, generator, device):
    batch, sq, sk = len(c["lengths_q"]), max(c["lengths_q"][0], 1), c["lengths_k"][0]
    q = random_tensor((batch, sq, c["heads"], c["head_dim"]), c["dtype"], generator, c["strided"],
                      device)
    k = random_tensor((batch, sk, c["heads_kv"], c["head_dim"]), c["dtype"], generator,
                      c["strided"], device)
    v = random_tensor((batch, sk, c["heads_kv"], c["head_dim_v"]), c["dtype"], generator,
                      c["strided"], device)
    plant(c.get("plant"), q=q, k=k, v=v)
    sem, kwargs = features(c, batch, generator, device)
    out, lse, _ = fa.flash_attn_func(q, k, v, return_attn_probs=True, **kwargs)
    ref_out, ref_lse = attention_fixed(q, k, v, sem)
    assert_close(out, ref_out, c["dtype"], c)
    assert_lse_close(lse, ref_lse, c)


def run_kvcache(fa, c, generator, device, paged: bool):
    """Sequence b holds lengths_k[b] cached keys; `append` adds sq_cache new ones first. keys and
    values stay on the CPU (the reference's); the caches are built there, then moved."""
    batch, sq = len(c["lengths_k"]), c["sq_cache"]
    s_new = sq if c["append"] else 0
    hkv, d, dv, dtype = c["heads_kv"], c["head_dim"], c["head_dim_v"], c["dtype"]
    cached = c["lengths_k"]
    if c["offsets"] == "expanded":  # one length for every sequence, given as an expanded view
        cached = [cached[0]] * batch
    total = [n + s_new for n in cached]
    keys = [random_tensor((n, hkv, d), dtype, generator) for n in total]
    values = [random_tensor((n, hkv, dv), dtype, generator) for n in total]
    q = random_tensor((batch, sq, c["heads"], d), dtype, generator, c["strided"], device)
    plant(c.get("plant"), q=q, k=keys, v=values)
    capacity = max(total) + 2
    kwargs_cache = {}
    if paged:
        page = c["page_size"]
        # Pages for the cached keys plus room for the appended ones.
        cu = cumulative([n + s_new + page for n in cached])
        pad = lambda t, n: torch.cat([t, t.new_zeros(n, *t.shape[1:])])  # noqa: E731
        spaced_k = torch.cat([pad(k[:n], s_new + page) for k, n in zip(keys, cached)])
        spaced_v = torch.cat([pad(v[:n], s_new + page) for v, n in zip(values, cached)])
        k_cache, v_cache, table = paged_cache(spaced_k, spaced_v, cu, page, generator)
        kwargs_cache["block_table"] = table
        slots = lambda b: [(int(table[b, p // page]), p % page) for p in range(total[b])]  # noqa
    else:
        rows = list(range(batch))
        if c["permute_cache"]:
            rows = torch.randperm(batch + 1, generator=generator)[:batch].tolist()
            kwargs_cache["cache_batch_idx"] = torch.tensor(rows, dtype=torch.int32)
        k_cache = torch.full((batch + 1, capacity, hkv, d), math.nan, dtype=dtype)
        v_cache = torch.full((batch + 1, capacity, hkv, dv), math.nan, dtype=dtype)
        for b, row in enumerate(rows):
            k_cache[row, :cached[b]] = keys[b][:cached[b]]
            v_cache[row, :cached[b]] = values[b][:cached[b]]
        slots = lambda b: [(rows[b], p) for p in range(total[b])]  # noqa: E731
    new_k = torch.stack([k[cached[b]:] for b, k in enumerate(keys)]) if s_new else None
    new_v = torch.stack([v[cached[b]:] for b, v in enumerate(values)]) if s_new else None
    sem, kwargs = features(c, batch, generator, device)
    k_cache, v_cache = k_cache.to(device), v_cache.to(device)
    if c["offsets"] == "expanded":
        lengths = torch.tensor(cached[:1], dtype=torch.int32, device=device).expand(batch)
    else:
        lengths = int_view(torch.tensor(cached, dtype=torch.int32, device=device), c)
    out, lse = fa.flash_attn_with_kvcache(
        q, k_cache, v_cache, on(new_k, device), on(new_v, device), cache_seqlens=lengths,
        return_softmax_lse=True, **{k: int_view(on(t, device), c)
                                    for k, t in kwargs_cache.items()}, **kwargs)
    k_cache, v_cache = k_cache.cpu(), v_cache.cpu()
    for b in range(batch):
        ref_out, ref_lse = attention_one_sequence(q[b], keys[b], values[b], sem, b)
        assert_close(out[b], ref_out, dtype, c)
        assert_lse_close(lse[b], ref_lse, c)
        stored_k = torch.stack([k_cache[p, s] for p, s in slots(b)]) if total[b] else None
        stored_v = torch.stack([v_cache[p, s] for p, s in slots(b)]) if total[b] else None
        if total[b]:  # bit for bit (a planted NaN equal to itself)
            for stored, want in ((stored_k, keys[b]), (stored_v, values[b])):
                torch.testing.assert_close(stored, want, rtol=0, atol=0, equal_nan=True,
                                           msg="the cache does not hold the appended tokens")


def run_case(fa, seed: int, index: int, device="cpu") -> dict:
    rng = random.Random(f"fuzz-{seed}-{index}")
    c = draw(rng)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    kind = c["kind"]
    if kind in ("varlen", "paged"):
        run_varlen(fa, c, generator, device, paged=kind == "paged")
    elif kind == "legacy":
        run_legacy(fa, c, generator, device)
    elif kind == "fixed":
        run_fixed(fa, c, generator, device)
    else:
        run_kvcache(fa, c, generator, device, paged=kind == "kvcache_paged")
    return c


def describe(c: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in c.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    from conftest import VARIANTS, load_kernel

    parser.add_argument("--variant", choices=sorted(VARIANTS), default="cpu")
    parser.add_argument("--cases", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--case", type=int, help="run only this case (to reproduce a failure)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (the cases are small: one thread is fastest)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    fa = load_kernel(args.variant)
    device = VARIANTS[args.variant][2]
    indices = [args.case] if args.case is not None else range(args.cases)
    failures, kinds = [], {}
    start = time.perf_counter()
    for done, i in enumerate(indices):
        if done and done % 500 == 0:
            print(f"  {done} cases, {len(failures)} mismatches, "
                  f"{time.perf_counter() - start:.0f} s", flush=True)
        try:
            c = run_case(fa, args.seed, i, device)
            kinds[c["kind"]] = kinds.get(c["kind"], 0) + 1
        except Exception as e:  # noqa: BLE001 - every failure is reported, none stops the run
            c = draw(random.Random(f"fuzz-{args.seed}-{i}"))
            failures.append(i)
            print(f"case {i} FAILED ({type(e).__name__}: {str(e)[:400]})\n  {describe(c)}",
                  flush=True)
    elapsed = time.perf_counter() - start
    print(f"fuzz {args.variant}: seed {args.seed}, {len(indices)} cases, {len(failures)} "
          f"mismatches, {elapsed:.0f} s; by entry point: "
          + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    if failures:
        raise SystemExit(f"failing cases: {failures[:50]}")


if __name__ == "__main__":
    main()
