"""Gemma 4 through the kernel (issue 11): a tiny text model built from its config with random
weights (no downloads): sliding-window layers of head dim 256 or 64 and a global layer of head dim
512 (`global_head_dim`), loaded by transformers with attn_implementation = the kernel's repo id.
It generates token for token like transformers' eager attention, padded and unpadded, and a
training step's parameter gradients match eager's. On every build variant (conftest.py)."""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch

from attention_scores import MIN_SCORE_STD, entry_point_calls, scores_seen
from conftest import REPO_ID, load_kernel
from test_training import paired_models

# The models and inputs live on the variant's device (on a Mac the Metal build runs on mps).
INPUTS_ON_VARIANT_DEVICE = True

VOCAB = 96
# Ours may be this many times eager float32's gradient error (both against eager float64), plus
# MARGIN times the parameter's largest gradient (test_training.py's absolute 2e-5, made relative).
# Gemma 4 scales scores by 1.0 (q and k are RMS-normed instead), so scores are large and both
# float32 errors grow with them. Both builds' were up to ~3-5x eager's until their backward summed
# S as their forward does (test_backward.py, FP32_LARGE_SCORES_FACTOR).
ERROR_FACTOR = 2.0
MARGIN = 2e-5


def gemma4_config(sliding_head_dim: int):
    from transformers import Gemma4TextConfig

    # Sliding, sliding, global: Gemma 4's pattern (5:1) cut short; the last layer is global.
    return Gemma4TextConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=128,
                            num_hidden_layers=3, num_attention_heads=2, num_key_value_heads=1,
                            head_dim=sliding_head_dim, global_head_dim=512, sliding_window=6,
                            layer_types=["sliding_attention", "sliding_attention",
                                         "full_attention"],
                            hidden_size_per_layer_input=0, max_position_embeddings=128,
                            pad_token_id=0, eos_token_id=None, bos_token_id=None)


def kernel_loaded_for(variant):
    import transformers.modeling_flash_attention_utils as flash_utils

    # transformers caches the kernel it loaded per implementation name: forget the other variant's.
    flash_utils._loaded_implementation = None
    return load_kernel(variant)


@contextlib.contextmanager
def head_dims_seen(kernel):
    """The set of q head dims the kernel's entry points (those transformers calls) are given."""
    seen = set()
    with entry_point_calls(kernel, lambda q, k, kw: seen.add(q.shape[-1])):
        yield seen


def test_the_config_has_sliding_and_512_wide_global_layers():
    config = gemma4_config(64)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    dims = [(layer.self_attn.head_dim, layer.self_attn.is_sliding) for layer in model.model.layers]
    assert dims == [(64, True), (64, True), (512, False)]


@pytest.mark.parametrize("sliding_head_dim", [256, 64])
def test_generation_matches_eager_token_for_token(variant, device, sliding_head_dim):
    # transformers takes the kernel's functions when it builds the model: record from before.
    with head_dims_seen(kernel_loaded_for(variant)) as seen:
        eager, kernel = (m.eval() for m in paired_models(gemma4_config(sliding_head_dim)))
        kernel.to(device)
        ids = torch.randint(1, VOCAB, (2, 9), generator=torch.Generator().manual_seed(1))
        mask = torch.ones_like(ids)
        mask[1, :4] = 0  # left padding: transformers unpads the prompt for the varlen entry point
        # 10 new tokens: past the sliding window (6), so the sliding layers' caches drop tokens.
        settings = dict(max_new_tokens=10, do_sample=False, output_scores=True,
                        return_dict_in_generate=True)
        for inputs in (dict(input_ids=ids), dict(input_ids=ids, attention_mask=mask)):
            with torch.no_grad():
                want = eager.generate(**inputs, **settings)
                got = kernel.generate(**{k: v.to(device) for k, v in inputs.items()}, **settings)
            what = "padded" if "attention_mask" in inputs else "unpadded"
            assert torch.equal(got.sequences.cpu(), want.sequences), what
            for step, (ours, theirs) in enumerate(zip(got.scores, want.scores)):
                torch.testing.assert_close(ours.cpu(), theirs, atol=1e-4, rtol=1e-4,
                                           msg=lambda m, s=step: f"{what}, step {s}: {m}")
    assert seen == {sliding_head_dim, 512}, f"the kernel saw head dims {seen}"
    assert kernel.config._attn_implementation == REPO_ID


def gradients(model, inputs):
    model.zero_grad()
    ids = inputs["input_ids"]
    labels = ids.masked_fill(inputs.get("attention_mask", torch.ones_like(ids)) == 0, -100)
    model(**inputs, labels=labels).loss.backward()
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("sliding_head_dim", [256, 64])
def test_training_step_matches_eager(variant, device, sliding_head_dim):
    """Every parameter's gradient through the kernel (float32) is as close to eager float64's as
    eager float32's is, up to ERROR_FACTOR."""
    fa = kernel_loaded_for(variant)
    # transformers takes the kernel's functions when it builds the model: record from before.
    with scores_seen(fa) as stds:
        eager, kernel = paired_models(gemma4_config(sliding_head_dim))
        check_training_step(eager, kernel, device)
    assert stds and min(stds) >= MIN_SCORE_STD, f"the scores must spread: stds {stds}"


def check_training_step(eager, kernel, device):
    eager64 = copy.deepcopy(eager).double()
    kernel.to(device)
    ids = torch.randint(1, VOCAB, (2, 16), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    # Right padding (transformers takes the varlen entry point): padded positions feed no loss
    # term and no real token sees them, so eager's values at padded rows do not matter.
    mask[1, -5:] = 0
    for inputs in (dict(input_ids=ids), dict(input_ids=ids, attention_mask=mask)):
        want = gradients(eager64, inputs)
        theirs = gradients(eager, inputs)
        ours = gradients(kernel, {k: v.to(device) for k, v in inputs.items()})
        assert ours.keys() == want.keys() == theirs.keys()
        for name, w in want.items():
            ours_err = (ours[name].cpu().double() - w).abs().max().item()
            eager_err = (theirs[name].double() - w).abs().max().item()
            bound = ERROR_FACTOR * eager_err + MARGIN * max(1.0, w.abs().max().item())
            assert ours_err <= bound, (f"{name}: error {ours_err:.3g} vs eager float32's "
                                       f"{eager_err:.3g} (bound {bound:.3g})")
    assert kernel.config._attn_implementation == REPO_ID
