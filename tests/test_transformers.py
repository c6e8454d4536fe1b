"""transformers loads the kernel by repo id (attn_implementation=...) through kernels.get_kernel
and gets the same logits as its own sdpa attention, on padded (varlen) and unpadded batches. The
model with the kernel runs on the variant's device; the sdpa reference on the CPU."""

from __future__ import annotations

import copy
import functools

import pytest
import torch

from attention_scores import MIN_SCORE_STD, scores_seen, sharpen
from conftest import REPO_ID, load_kernel

INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: the kernel's model and inputs are on `device`


def tiny_llama(attn_implementation: str, seed: int, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=128, hidden_size=128, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=256)
    torch.manual_seed(seed)
    reference = sharpen(LlamaForCausalLM(copy.deepcopy(config)).eval())  # scores of O(1-10)
    reference.config._attn_implementation = "sdpa"
    model = LlamaForCausalLM._from_config(copy.deepcopy(config),
                                          attn_implementation=attn_implementation).eval()
    model.load_state_dict(reference.state_dict())
    return reference, model.to(device)


@pytest.mark.kernels_ci
def test_transformers_uses_the_kernel_and_matches_sdpa(fa, variant, device):
    import transformers.modeling_flash_attention_utils as flash_utils

    # transformers caches the kernel it loaded per implementation name: forget the other variant's.
    flash_utils._loaded_implementation = None
    kernel = load_kernel(variant)  # sets LOCAL_KERNELS for this variant
    calls = []
    for name in ("flash_attn_varlen_func", "flash_attn_func"):
        original = getattr(kernel, name)

        @functools.wraps(original)
        def counted(*args, _original=original, _name=name, **kwargs):
            calls.append(_name)
            return _original(*args, **kwargs)

        setattr(kernel, name, counted)
    # transformers takes the kernel's functions when it builds the model: record from before.
    scores = scores_seen(kernel)
    stds = scores.__enter__()
    try:
        reference, model = tiny_llama(REPO_ID, seed=0, device=device)
        ids = torch.randint(0, 128, (3, 40), generator=torch.Generator().manual_seed(1))
        mask = torch.ones_like(ids)
        mask[1, :13] = 0  # left padding: transformers unpads and calls the varlen entry point
        mask[2, :1] = 0
        with torch.no_grad():
            padded_ref = reference(input_ids=ids, attention_mask=mask).logits
            padded = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.cpu()
            full_ref = reference(input_ids=ids).logits
            full = model(input_ids=ids.to(device)).logits.cpu()
    finally:
        scores.__exit__(None, None, None)
        for name in ("flash_attn_varlen_func", "flash_attn_func"):
            setattr(kernel, name, getattr(kernel, name).__wrapped__)
    assert "flash_attn_varlen_func" in calls and "flash_attn_func" in calls
    assert min(stds) >= MIN_SCORE_STD, f"scores must spread for a wrong scale to show: {stds}"
    valid = mask.bool()
    torch.testing.assert_close(padded[valid], padded_ref[valid], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(full, full_ref, atol=1e-4, rtol=1e-4)
    assert reference.config._attn_implementation == "sdpa"
    assert model.config._attn_implementation == REPO_ID
