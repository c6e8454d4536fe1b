"""Real programs through the routing of F.scaled_dot_product_attention: transformers encoder
models on their `sdpa` attention path with padding masks (BERT; T5, an encoder-decoder whose
relative-position bias reaches SDPA as a floating mask that requires grad), and a diffusers UNet
whose attention processor (AttnProcessor2_0) calls SDPA, its cross-attention with a padding mask
on the text tokens; random-weight configs, no downloads. Outputs and a training step's gradients
with routing equal those without."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

INPUTS_ON_VARIANT_DEVICE = True


def bert(seed):
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=120, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=96, max_position_embeddings=80,
                        attention_probs_dropout_prob=0.0, hidden_dropout_prob=0.0,
                        attn_implementation="sdpa")
    return BertModel(config).float()


def t5(seed):
    from transformers import T5Config, T5Model

    torch.manual_seed(seed)
    config = T5Config(vocab_size=120, d_model=64, d_kv=16, d_ff=96, num_layers=2,
                      num_decoder_layers=2, num_heads=4, dropout_rate=0.0,
                      attn_implementation="sdpa")
    return T5Model(config).float()


def padded_batch(device, lengths, vocab=120, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, vocab, (len(lengths), max(lengths)), generator=g)
    mask = torch.zeros_like(ids)
    for b, n in enumerate(lengths):
        mask[b, :n] = 1
    return ids.to(device), mask.to(device)


def run(model, kind, ids, mask):
    if kind == "bert":
        return model(input_ids=ids, attention_mask=mask).last_hidden_state
    return model(input_ids=ids, attention_mask=mask, decoder_input_ids=ids[:, :9],
                 decoder_attention_mask=mask[:, :9]).last_hidden_state


def count_kernel_calls(fa, monkeypatch):
    calls = []
    kernel = fa._routing.scaled_dot_product_attention
    monkeypatch.setattr(fa._routing, "scaled_dot_product_attention",
                        lambda *a, **kw: calls.append(kw.get("attn_mask", a[3] if len(a) > 3 else None)) or kernel(*a, **kw))
    return calls


@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_encoder_models_with_padding_masks(fa, variant, device, kind, monkeypatch):
    model = (bert if kind == "bert" else t5)(0).to(device).train()
    ids, mask = padded_batch(device, [37, 20, 5])
    # Training mode without dropout (routed dropout: test_dropout.py). Without routing (torch's SDPA): output and a training step's gradients.
    out = run(model, kind, ids, mask)
    loss = out.square().mean()
    want_grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    calls = count_kernel_calls(fa, monkeypatch)
    with fa.routed_sdpa():
        got = run(model, kind, ids, mask)
        got_grads = torch.autograd.grad(got.square().mean(), list(model.parameters()),
                                        allow_unused=True)
    # every attention call, masks included, ran on the kernels (cpu and Metal builds)
    layers = 2 if kind == "bert" else 2 + 2 * 2
    assert len(calls) == layers and all(m is not None for m in calls)
    torch.testing.assert_close(got, out, atol=2e-5, rtol=2e-5)
    for (name, p), a, b in zip(model.named_parameters(), got_grads, want_grads):
        if b is None:
            assert a is None, name
            continue
        torch.testing.assert_close(a, b, atol=5e-5, rtol=5e-4, msg=lambda m: f"{name}: {m}")


def unet(seed):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    # A two-level UNet with transformer blocks at 32 channels (down and up) and 64 (middle), 4
    # heads (head dims 8, the kernels' smallest, and 16): self-attention over the latent's
    # positions, cross-attention over 7 text tokens.
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64), down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=24,
        attention_head_dim=4, norm_num_groups=8).float()


def test_diffusers_unet_with_text_padding_mask(fa, variant, device, monkeypatch):
    model = unet(0).to(device).train()
    g = torch.Generator().manual_seed(1)
    latents = torch.randn(2, 4, 8, 8, generator=g).to(device)
    text = torch.randn(2, 7, 24, generator=g).to(device)
    # The second prompt is 4 tokens long: diffusers turns this into a floating bias on SDPA's
    # cross-attention scores, broadcast over heads and queries.
    text_mask = torch.tensor([[1] * 7, [1] * 4 + [0] * 3]).to(device)
    timesteps = torch.tensor([10, 500]).to(device)

    def step():
        out = model(latents, timesteps, encoder_hidden_states=text,
                    encoder_attention_mask=text_mask).sample
        grads = torch.autograd.grad(out.square().mean(), list(model.parameters()), allow_unused=True)
        return out.detach(), grads

    want, want_grads = step()  # torch's SDPA
    calls = count_kernel_calls(fa, monkeypatch)
    with fa.routed_sdpa():
        got, got_grads = step()
    # Every attention layer's call ran on the kernels, on both builds: self-attention without a
    # mask, cross-attention with the text padding bias.
    from diffusers.models.attention_processor import Attention

    layers = [m for m in model.modules() if isinstance(m, Attention)]
    cross = sum(m.is_cross_attention for m in layers)
    masked = [m for m in calls if m is not None]
    assert cross > 0 and len(layers) > cross
    assert len(calls) == len(layers), len(calls)
    assert len(masked) == cross
    assert all(m.is_floating_point() for m in masked)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)
    for (name, p), a, b in zip(model.named_parameters(), got_grads, want_grads):
        if b is None:
            assert a is None, name
            continue
        torch.testing.assert_close(a, b, atol=5e-5, rtol=5e-4, msg=lambda m: f"{name}: {m}")
