"""The legacy in-place flash_attention_varlen writes `out` while it reads q, k and v: an `out`
that overlaps one of them (out=k, out=q[1:]) or no `out` at all is refused naming `out`, before
anything is written; an `out` elsewhere in the same buffer as the inputs still works."""

from __future__ import annotations

import math

import pytest
import torch

from batches import cumulative
from reference import Semantics, assert_close, attention_varlen

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's
ROWS, HEADS, DIM = 9, 2, 16


def call(fa, out, q, k, v, device):
    cu = cumulative([4, 5], device=device)
    fa.flash_attention_varlen(out, q, k, v, cu, cu, 5, 5, do_causal=True)


def buffer(generator, device, rows):
    return torch.randn((rows, HEADS, DIM), generator=generator).to(device)


def overlapping(generator, device):
    """name -> (out, q, k, v) where out shares memory with an input."""
    q, k, v = (buffer(generator, device, ROWS) for _ in range(3))
    shifted = buffer(generator, device, ROWS + 1)
    packed = buffer(generator, device, 3 * ROWS)
    return {
        "out_is_k": (k, q, k, v, "k"),
        "out_is_q": (q, q, k, v, "q"),
        "out_is_v": (v, q, k, v, "v"),
        "out_is_q_shifted": (shifted[1:], shifted[:-1], k, v, "q"),
        "out_inside_v": (packed[ROWS // 2: ROWS // 2 + ROWS], q, k, packed[:ROWS], "v"),
    }


@pytest.mark.parametrize("case", ["out_is_k", "out_is_q", "out_is_v", "out_is_q_shifted",
                                  "out_inside_v"])
def test_overlapping_out_is_refused(fa, device, generator, case):
    out, q, k, v, name = overlapping(generator, device)[case]
    before = [t.clone() for t in (out, q, k, v)]
    with pytest.raises(ValueError, match=f"out must not overlap {name}"):
        call(fa, out, q, k, v, device)
    for t, b in zip((out, q, k, v), before):
        assert torch.equal(t, b)


def test_missing_out_is_refused(fa, device, generator):
    q, k, v = (buffer(generator, device, ROWS) for _ in range(3))
    with pytest.raises(ValueError, match="out must be a tensor"):
        call(fa, None, q, k, v, device)


def test_out_beside_the_inputs_in_one_buffer(fa, device, generator):
    """Disjoint parts of one storage are not an overlap: q, k, v and out as four slices."""
    packed = buffer(generator, device, 4 * ROWS)
    q, k, v, out = (packed[i * ROWS: (i + 1) * ROWS] for i in range(4))
    out.fill_(math.nan)
    call(fa, out, q, k, v, device)
    cu = cumulative([4, 5])
    ref, _ = attention_varlen(q, k, v, cu, cu, Semantics(scale=DIM ** -0.5, causal=True))
    assert_close(out, ref, torch.float32)
