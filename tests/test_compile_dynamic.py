"""torch.compile for training: fullgraph tracing with dynamic shapes (symbolic floats and ints
included), and a padding-free training loop whose sequence lengths, batch size and max_seqlen
change every step compiles at most twice (the static first graph, then one dynamic graph)
with gradients equal to eager."""

from __future__ import annotations

import random

import pytest
import torch
from torch._dynamo.testing import CompileCounterWithBackend

from batches import cumulative, random_tensor
from reference import Semantics, assert_close, attention_fixed

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's
HEADS, HEADS_KV, DIM, MODEL = 4, 2, 16, 32


@pytest.mark.parametrize("softcap", [0.0, 5.0])
def test_fixed_dynamic_fullgraph(fa, device, generator, softcap):
    torch._dynamo.reset()
    attend = torch.compile(fa.flash_attn_func, dynamic=True, fullgraph=True, backend="aot_eager")
    for seqlen in (5, 7):
        q, k, v = (random_tensor((2, seqlen, h, DIM), torch.float32, generator, device=device)
                   .requires_grad_() for h in (HEADS, HEADS_KV, HEADS_KV))
        out = attend(q, k, v, causal=True, softcap=softcap, softmax_scale=0.3)
        grad_out = random_tensor(out.shape, torch.float32, generator, device=device)
        out.backward(grad_out)
        q64, k64, v64 = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
        ref, _ = attention_fixed(q64, k64, v64, Semantics(scale=0.3, causal=True,
                                                           softcap=softcap))
        ref.backward(grad_out.cpu().double())
        assert_close(out.detach(), ref.detach(), torch.float32)
        for name, t, t64 in (("dq", q, q64), ("dk", k, k64), ("dv", v, v64)):
            assert_close(t.grad, t64.grad, torch.float32, what=name)


class PackedAttention(torch.nn.Module):
    """One attention layer over a padding-free packed batch (as transformers' flash path)."""

    def __init__(self, fa, generator):
        super().__init__()
        self.fa = fa
        self.qkv = torch.nn.Parameter(torch.randn(MODEL, (HEADS + 2 * HEADS_KV) * DIM,
                                                  generator=generator) * MODEL ** -0.5)
        self.proj = torch.nn.Parameter(torch.randn(HEADS * DIM, MODEL, generator=generator)
                                       * (HEADS * DIM) ** -0.5)

    def forward(self, x, cu_seqlens, max_seqlen):
        q, k, v = (x @ self.qkv).split([HEADS * DIM, HEADS_KV * DIM, HEADS_KV * DIM], dim=-1)
        out = self.fa.flash_attn_varlen_func(
            q.view(-1, HEADS, DIM), k.view(-1, HEADS_KV, DIM), v.view(-1, HEADS_KV, DIM),
            cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, causal=True)
        return (out.reshape(-1, HEADS * DIM) @ self.proj).square().mean()


def test_padding_free_training_compiles_at_most_twice(fa, device, generator):
    model = PackedAttention(fa, generator).to(device)
    counter = CompileCounterWithBackend("aot_eager")
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, backend=counter)
    rng = random.Random(1234)
    seen_max = set()
    for step in range(20):
        # Lengths >= 2: a size or int of 0 or 1 is specialised by torch.compile itself (its "0/1
        # specialisation", one more graph whatever the op), which is not what this counts.
        lengths = [rng.randint(2, 24) for _ in range(rng.randint(1, 4))]
        seen_max.add(max(lengths))
        x = random_tensor((sum(lengths), MODEL), torch.float32, generator, device=device)
        cu = cumulative(lengths, device=device)
        grads = []
        for run in (model, compiled):
            model.zero_grad()
            run(x, cu, max(lengths)).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for eager, traced in zip(*grads):
            torch.testing.assert_close(traced, eager, atol=1e-6, rtol=1e-5)
    assert len(seen_max) > 5  # the loop did change max_seqlen
    assert counter.frame_count <= 2, f"compiled {counter.frame_count} times in 20 steps"
