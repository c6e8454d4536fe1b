"""Higher-order autograd is refused, never answered with zeros (docs/API.md, "Autograd"): double
backward, forward-mode AD (torch.autograd.forward_ad, torch.func.jvp) and torch.func's grad
transforms raise NotImplementedError saying so, on the differentiable entry points; first-order
gradients through create_graph=True still work where no second derivative is taken."""

from __future__ import annotations

import pytest
import torch
import torch.autograd.forward_ad as forward_ad

from batches import random_tensor, varlen_batch
from reference import Semantics, assert_close, attention_fixed

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: every input is built on the `device` fixture's
REFUSAL = "not supported"


def inputs(generator, device):
    return [random_tensor(shape, torch.float32, generator, device=device)
            for shape in ((2, 5, 4, 16), (2, 6, 2, 16), (2, 6, 2, 16))]


def entry_points(fa, device, generator):
    """name -> f(q, k, v) for every differentiable entry point."""
    batch = varlen_batch([5, 5], [6, 6], heads=4, heads_kv=2, head_dim=16, dtype=torch.float32,
                         generator=generator, device=device)

    def varlen(q, k, v):
        return fa.flash_attn_varlen_func(q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1),
                                         batch.cu_seqlens_q, batch.cu_seqlens_k, 5, 6,
                                         causal=True)

    return {"fixed": lambda q, k, v: fa.flash_attn_func(q, k, v, causal=True), "varlen": varlen}


@pytest.mark.parametrize("entry", ["fixed", "varlen"])
def test_double_backward_raises(fa, device, generator, entry):
    attend = entry_points(fa, device, generator)[entry]
    q, k, v = (t.requires_grad_() for t in inputs(generator, device))
    out = attend(q, k, v)
    # A first-order gradient with create_graph=True is fine (e.g. a penalty on other terms)...
    (dk,) = torch.autograd.grad(out.pow(2).sum(), k, create_graph=True)
    # ...differentiating it again is not: zeros would be a wrong answer.
    with pytest.raises(NotImplementedError, match="double backward"):
        dk.sum().backward()


@pytest.mark.parametrize("entry", ["fixed", "varlen"])
def test_forward_ad_raises(fa, device, generator, entry):
    attend = entry_points(fa, device, generator)[entry]
    q, k, v = inputs(generator, device)
    with forward_ad.dual_level():
        dual_q = forward_ad.make_dual(q, torch.ones_like(q))
        with pytest.raises(NotImplementedError, match="forward-mode AD"):
            attend(dual_q, k, v)


@pytest.mark.parametrize("transform", ["jvp", "grad", "jacrev", "hessian"])
def test_torch_func_transforms_raise(fa, device, generator, transform):
    attend = entry_points(fa, device, generator)["fixed"]
    q, k, v = inputs(generator, device)
    loss = lambda q: attend(q, k, v).sum()
    with pytest.raises(NotImplementedError, match=REFUSAL):
        if transform == "jvp":
            torch.func.jvp(lambda q: attend(q, k, v), (q,), (torch.ones_like(q),))
        elif transform == "grad":
            torch.func.grad(loss)(q)
        elif transform == "jacrev":
            torch.func.jacrev(lambda q: attend(q, k, v))(q)
        else:
            torch.func.hessian(loss)(q)


def test_first_order_still_exact(fa, device, generator):
    """The refusals cost nothing to ordinary training: gradients against float64."""
    q, k, v = (t.requires_grad_() for t in inputs(generator, device))
    out = fa.flash_attn_func(q, k, v, causal=True)
    grad_out = random_tensor(out.shape, torch.float32, generator, device=device)
    out.backward(grad_out)
    q64, k64, v64 = (t.detach().cpu().double().requires_grad_() for t in (q, k, v))
    ref, _ = attention_fixed(q64, k64, v64, Semantics(scale=16 ** -0.5, causal=True))
    ref.backward(grad_out.cpu().double())
    for name, t, t64 in (("dq", q, q64), ("dk", k, k64), ("dv", v, v64)):
        assert_close(t.grad, t64.grad, torch.float32, what=name)
