"""Scores that can show a wrong answer, for the tests through transformers' tiny models.

A model built from a config has random weights of std 0.02: its attention scores have a std of
~0.01, attention is nearly uniform, and a wrong softmax scale or softcap gives nearly the same
output. sharpen() scales the q and k projections so that scores are O(1-10); scores_seen()
records the scores the kernel's entry points are actually given, so a test can assert that."""

from __future__ import annotations

import contextlib
import functools

import torch

# q and k projections times 16: scores times 256 (std ~0.005-0.02 -> ~1.5-5 in the tests' models).
SHARPEN = 16.0
# What the tests require of the scores the kernel sees: a std of at least 1 (softcap and scale
# errors then move the output by far more than the tolerances).
MIN_SCORE_STD = 1.0


def sharpen(model: torch.nn.Module, factor: float = SHARPEN) -> torch.nn.Module:
    """Scales every attention's q and k projections by `factor`, in place. Attentions that RMS-norm
    q and k after projecting them (Gemma 4's q_norm, k_norm) are left alone: the norm would undo
    it, and their scores (scale 1.0 on unit-RMS q and k) already spread."""
    with torch.no_grad():
        for module in model.modules():
            if hasattr(module, "q_proj") and hasattr(module, "k_proj") and not hasattr(module, "q_norm"):
                for proj in (module.q_proj, module.k_proj):
                    proj.weight.mul_(factor)
                    if proj.bias is not None:
                        proj.bias.mul_(factor)
    return model


def _score_std(q, k, softmax_scale):
    """Std of q.k * scale over every (query, key) pair of the call, GQA heads matched."""
    q, k = q.detach().cpu().double(), k.detach().cpu().double()
    if q.dim() == 4:  # [B, S, H, D] -> [B*S, H, D] (pairs across the batch spread alike)
        q, k = q.flatten(0, 1), k.flatten(0, 1)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    scale = q.shape[-1] ** -0.5 if softmax_scale is None else softmax_scale
    return (torch.einsum("qhd,khd->hqk", q, k) * scale).std().item()


@contextlib.contextmanager
def entry_point_calls(kernel, observe):
    """Calls observe(q, k, kwargs) on every call of the kernel's flash_attn_varlen_func or
    flash_attn_func (what transformers calls) while the context is open."""
    names = ("flash_attn_varlen_func", "flash_attn_func")
    for name in names:
        original = getattr(kernel, name)

        @functools.wraps(original)
        def recorded(q, k, *args, _original=original, **kwargs):
            observe(q, k, kwargs)
            return _original(q, k, *args, **kwargs)

        setattr(kernel, name, recorded)
    try:
        yield
    finally:
        for name in names:
            setattr(kernel, name, getattr(kernel, name).__wrapped__)


@contextlib.contextmanager
def scores_seen(kernel):
    """Yields a list that receives, per entry-point call, the std of the scaled scores given."""
    stds = []
    with entry_point_calls(kernel, lambda q, k, kw: stds.append(
            _score_std(q, k, kw.get("softmax_scale")))):
        yield stds
