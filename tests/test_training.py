"""A training step through transformers (attn_implementation = the kernel's repo id): every
parameter's gradient, the attention sinks included, matches transformers' eager attention on tiny
models built from configs with random weights (no downloads). On every build variant: `cpu`, `sim`
(the Metal backward kernels in the MSL simulator) and `mps` on a Mac."""

from __future__ import annotations

import copy

import pytest
import torch

from attention_scores import MIN_SCORE_STD, scores_seen, sharpen
from conftest import REPO_ID, load_kernel

# The models and inputs live on the variant's device (on a Mac the Metal build runs on mps).
INPUTS_ON_VARIANT_DEVICE = True


def llama_config():
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)


def gpt_oss_config():
    from transformers import GptOssConfig

    return GptOssConfig(vocab_size=96, hidden_size=64, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                        num_local_experts=4, num_experts_per_tok=2, sliding_window=6,
                        layer_types=["sliding_attention", "full_attention"],
                        max_position_embeddings=128)


def gemma2_config():
    from transformers import Gemma2Config

    return Gemma2Config(vocab_size=96, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                        num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                        attn_logit_softcapping=20.0, final_logit_softcapping=None,
                        sliding_window=6, max_position_embeddings=128)


def paired_models(config):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    eager = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation="eager")
    sharpen(eager)  # scores of O(1-10), not near-uniform attention (attention_scores.py)
    kernel = AutoModelForCausalLM.from_config(copy.deepcopy(config), attn_implementation=REPO_ID)
    kernel.load_state_dict(eager.state_dict())
    if hasattr(eager.model.layers[0].self_attn, "sinks"):  # gpt-oss: non-trivial sinks
        with torch.no_grad():
            for a, b in zip(eager.model.layers, kernel.model.layers):
                a.self_attn.sinks.normal_()
                b.self_attn.sinks.copy_(a.self_attn.sinks)
    return eager.train(), kernel.train()


@pytest.mark.parametrize("config", [llama_config, gpt_oss_config, gemma2_config])
def test_training_step_matches_eager(config, variant, device):
    import transformers.modeling_flash_attention_utils as flash_utils

    flash_utils._loaded_implementation = None
    fa = load_kernel(variant)
    # transformers takes the kernel's functions when it builds the model: record from before.
    with scores_seen(fa) as stds:
        eager, kernel = (m.to(device) for m in paired_models(config()))
        check_training_step(eager, kernel, device)
    # every layer's scores spread (attention_scores.py): a wrong scale or softcap shows
    assert stds and min(stds) >= MIN_SCORE_STD, f"score stds {stds}"


def check_training_step(eager, kernel, device):
    ids = torch.randint(0, 96, (2, 20), generator=torch.Generator().manual_seed(1)).to(device)
    mask = torch.ones_like(ids)
    # Right padding (transformers takes the varlen entry point): padded positions then feed no
    # loss term (their labels and the labels they predict are -100), and no real token sees them,
    # so eager's values at padded rows (which differ from the kernel's zeros) do not matter.
    mask[1, -5:] = 0
    for inputs in (dict(input_ids=ids), dict(input_ids=ids, attention_mask=mask)):
        for model in (eager, kernel):
            model.zero_grad()
            labels = inputs["input_ids"].masked_fill(inputs.get("attention_mask", ids) == 0, -100)
            model(**inputs, labels=labels).loss.backward()
        named = dict(kernel.named_parameters())
        checked = 0
        for name, p in eager.named_parameters():
            if p.grad is None:
                continue
            g = named[name].grad
            assert g is not None, f"{name}: no gradient through the kernel"
            torch.testing.assert_close(g, p.grad, atol=2e-5, rtol=1e-3, msg=name)
            checked += 1
        assert checked == sum(1 for _ in eager.parameters() if _.grad is not None)
    assert kernel.config._attn_implementation == REPO_ID
    if "sinks" in " ".join(named):
        assert any("sinks" in n and named[n].grad.abs().sum() > 0 for n in named)
