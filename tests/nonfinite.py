"""Comparing outputs that may hold NaN and Inf (docs/API.md, "NaN and Inf") with the float64
reference, and planting them into a fuzz case's inputs (tests/fuzz.py)."""

from __future__ import annotations

import math
import random

import torch


def assert_same_nonfinite_and_close(actual, expected, tolerance, what, keep=None):
    """NaN, +inf and -inf where `expected` has them; the finite entries within `tolerance`
    (torch.testing.assert_close's atol/rtol). `keep` (a bool mask broadcastable to the tensors)
    limits the comparison."""
    a, e = actual.cpu().double(), expected.cpu().double()
    if keep is not None:
        keep = keep.expand_as(e)
        a, e = a[keep], e[keep]
    for name, test in (("NaN", torch.isnan), ("+inf", torch.isposinf), ("-inf", torch.isneginf)):
        got, want = test(a), test(e)
        assert torch.equal(got, want), (
            f"{what}: {name} at {int(got.sum())} entries, the truth has {int(want.sum())} "
            f"({int((got != want).sum())} differ)")
    finite = torch.isfinite(e)
    torch.testing.assert_close(a[finite], e[finite], **tolerance, msg=lambda m: f"{what}: {m}")


# What a fuzz case may plant: one value, in one input.
VALUES = [math.nan, math.inf, -math.inf]


def draw_plant(rng: random.Random, masked: bool) -> dict | None:
    """In about one case of eight: a NaN or +-inf in q, k, s_aux, or (where no key is masked:
    the rule for v under a mask is not specified) v. None otherwise."""
    if rng.random() >= 0.125:
        return None
    target = rng.choice(["q", "k", "s_aux"] + ([] if masked else ["v"]))
    # In v only NaN: an infinity times a probability that fp32 flushes to 0 (float64 does not)
    # is NaN in one and inf in the other.
    value = math.nan if target == "v" else rng.choice(VALUES)
    return dict(target=target, value=value, where=rng.random())


def plant(spec: dict | None, **inputs) -> None:
    """Writes spec's value into the input it names (in place), at the flat position `where` of
    it; inputs that are None or empty are left alone."""
    if spec is None:
        return
    t = inputs.get(spec["target"])
    if isinstance(t, (list, tuple)):  # per-sequence tensors (the kv-cache's keys): pick one
        t = [x for x in t if x.numel()]
        t = t[min(int(spec["where"] * len(t)), len(t) - 1)] if t else None
    if t is None or t.numel() == 0:
        return
    flat = t.view(-1) if t.is_contiguous() else None
    index = min(int(spec["where"] * t.numel()), t.numel() - 1)
    if flat is not None:
        flat[index] = spec["value"]
    else:  # a strided view: its own element `index`, in row-major order
        t[tuple(torch.unravel_index(torch.tensor(index), t.shape))] = spec["value"]
