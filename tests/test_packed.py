"""flash-attn's packed entry points (flash_attn_qkvpacked_func, flash_attn_kvpacked_func and their
varlen forms): flash-attn's layouts, the kernel fed views of the packed tensor (no copy), outputs
and lse against the float64 reference, the packed tensor's gradient against float64 autograd."""

from __future__ import annotations

import pytest
import torch

from batches import cumulative, random_tensor
from reference import Semantics, assert_close, assert_lse_close, attention_fixed, attention_varlen
from test_backward import check_gradients, leaf

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
INPUTS_ON_VARIANT_DEVICE = True  # conftest.py: the kernel's inputs are on the `device` fixture's


class RecordingOps:
    """Stands in for the op namespace the forward calls: records the storage and data pointers of
    q, k and v as the kernel receives them."""

    def __init__(self, ops):
        self._ops = ops
        self.seen = []

    def __getattr__(self, name):
        op = getattr(self._ops, name)

        def call(*args):
            self.seen.append(tuple(t for t in args[:3]))
            return op(*args)
        return call


@pytest.fixture
def recorded(fa, monkeypatch):
    recorder = RecordingOps(fa._ops_forward.ops)
    monkeypatch.setattr(fa._ops_forward, "ops", recorder)
    return recorder.seen


def assert_views_of(packed: torch.Tensor, tensors, parts_at: dict[int, int]):
    """Each of `tensors` shares `packed`'s storage and starts at its part along dim -3."""
    for i, part in parts_at.items():
        t = tensors[i]
        assert t.untyped_storage().data_ptr() == packed.untyped_storage().data_ptr(), \
            "the kernel got a copy, not a view of the packed tensor"
        assert t.data_ptr() == packed.select(-3, part).data_ptr()


def sem_for(d, causal, window=(-1, -1), softcap=0.0, alibi=None):
    return Semantics(scale=d ** -0.5, causal=causal, window=window, softcap=softcap,
                     alibi_slopes=alibi)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_qkvpacked(fa, device, generator, recorded, dtype, causal):
    batch, seqlen, heads, d = 2, 19, 4, 32
    qkv = random_tensor((batch, seqlen, 3, heads, d), dtype, generator, device=device)
    alibi = torch.rand(heads, generator=generator).to(device)
    out, lse, probs = fa.flash_attn_qkvpacked_func(qkv, causal=causal, window_size=(6, -1),
                                                   softcap=3.0, alibi_slopes=alibi,
                                                   return_attn_probs=True)
    assert_views_of(qkv, recorded[0], {0: 0, 1: 1, 2: 2})
    assert probs is None
    ref_out, ref_lse = attention_fixed(*qkv.cpu().unbind(2),
                                       sem_for(d, causal, (6, -1), 3.0, alibi.cpu()))
    assert out.shape == (batch, seqlen, heads, d)
    assert_close(out, ref_out, dtype)
    assert_lse_close(lse, ref_lse)


@pytest.mark.parametrize("dtype", DTYPES)
def test_kvpacked_gqa(fa, device, generator, recorded, dtype):
    batch, sq, sk, heads, heads_kv, d = 3, 5, 23, 6, 2, 64
    q = random_tensor((batch, sq, heads, d), dtype, generator, device=device)
    kv = random_tensor((batch, sk, 2, heads_kv, d), dtype, generator, device=device)
    out = fa.flash_attn_kvpacked_func(q, kv, causal=True)
    assert_views_of(kv, recorded[0], {1: 0, 2: 1})
    ref_out, _ = attention_fixed(q.cpu(), *kv.cpu().unbind(2), sem_for(d, True))
    assert_close(out, ref_out, dtype)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES)
def test_varlen_qkvpacked(fa, device, generator, recorded, dtype):
    lengths, heads, d = [7, 0, 40, 1], 4, 48
    cu = cumulative(lengths, device=device)
    qkv = random_tensor((sum(lengths) + 2, 3, heads, d), dtype, generator, device=device)
    out, lse, _ = fa.flash_attn_varlen_qkvpacked_func(qkv, cu, torch.tensor(max(lengths)),
                                                      causal=True, return_attn_probs=True)
    assert_views_of(qkv, recorded[0], {0: 0, 1: 1, 2: 2})
    ref_out, ref_lse = attention_varlen(*qkv.cpu().unbind(1), cu.cpu(), cu.cpu(),
                                        sem_for(d, True))
    assert out.shape == (qkv.shape[0], heads, d)
    assert_close(out, ref_out, dtype)
    assert_lse_close(lse, ref_lse)


@pytest.mark.parametrize("dtype", DTYPES)
def test_varlen_kvpacked(fa, device, generator, recorded, dtype):
    lengths_q, lengths_k, heads, heads_kv, d = [3, 16, 1], [9, 16, 30], 8, 2, 32
    cu_q, cu_k = cumulative(lengths_q, device=device), cumulative(lengths_k, device=device)
    q = random_tensor((sum(lengths_q), heads, d), dtype, generator, device=device)
    kv = random_tensor((sum(lengths_k), 2, heads_kv, d), dtype, generator, device=device)
    out = fa.flash_attn_varlen_kvpacked_func(q, kv, cu_q, cu_k, max(lengths_q), max(lengths_k),
                                             window_size=(4, 2))
    assert_views_of(kv, recorded[0], {1: 0, 2: 1})
    ref_out, _ = attention_varlen(q.cpu(), *kv.cpu().unbind(1), cu_q.cpu(), cu_k.cpu(),
                                  sem_for(d, False, (4, 2)))
    assert_close(out, ref_out, dtype)


# Gradients: the packed tensor's, against float64 autograd of the reference on the same packed
# tensor, held to torch's own accuracy in the dtype (test_backward.check_gradients).

@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", DTYPES)
def test_qkvpacked_gradient(fa, device, generator, dtype):
    qkv = random_tensor((2, 21, 3, 4, 32), dtype, generator, device=device)
    sem = sem_for(32, True)

    def ours(qkv):
        return fa.flash_attn_qkvpacked_func(qkv, causal=True)

    def reference(qkv, dtype=torch.float64):
        return attention_fixed(*qkv.unbind(2), sem, dtype=dtype)[0]

    (dqkv,) = check_gradients(ours, reference, lambda t: reference(t, t.dtype).to(t.device),
                              [leaf(qkv)], dtype, names=("qkv",))
    assert dqkv.shape == qkv.shape


@pytest.mark.parametrize("dtype", DTYPES)
def test_kvpacked_gradient(fa, device, generator, dtype):
    q = random_tensor((2, 6, 4, 32), dtype, generator, device=device)
    kv = random_tensor((2, 17, 2, 2, 32), dtype, generator, device=device)
    sem = sem_for(32, False, softcap=4.0)

    def ours(q, kv):
        return fa.flash_attn_kvpacked_func(q, kv, softcap=4.0)

    def reference(q, kv, dtype=torch.float64):
        return attention_fixed(q, *kv.unbind(2), sem, dtype=dtype)[0]

    check_gradients(ours, reference, lambda q, kv: reference(q, kv, q.dtype).to(q.device),
                    [leaf(q), leaf(kv)], dtype, names=("q", "kv"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_varlen_qkvpacked_gradient(fa, device, generator, dtype):
    lengths = [5, 0, 33]
    cu = cumulative(lengths, device=device)
    qkv = random_tensor((sum(lengths) + 1, 3, 2, 40), dtype, generator, device=device)
    sem = sem_for(40, True)

    def ours(qkv):
        return fa.flash_attn_varlen_qkvpacked_func(qkv, cu, max(lengths), causal=True)

    def reference(qkv, dtype=torch.float64):
        return attention_varlen(*qkv.unbind(1), cu.cpu(), cu.cpu(), sem, dtype=dtype)[0]

    (dqkv,) = check_gradients(ours, reference, lambda t: reference(t, t.dtype).to(t.device),
                              [leaf(qkv)], dtype, names=("qkv",))
    assert torch.equal(dqkv[-1], torch.zeros_like(dqkv[-1])), "a row of no sequence: zero grad"


@pytest.mark.parametrize("dtype", DTYPES)
def test_varlen_kvpacked_gradient(fa, device, generator, dtype):
    lengths_q, lengths_k = [4, 9], [12, 9]
    cu_q, cu_k = cumulative(lengths_q, device=device), cumulative(lengths_k, device=device)
    q = random_tensor((sum(lengths_q), 4, 32), dtype, generator, device=device)
    kv = random_tensor((sum(lengths_k), 2, 1, 32), dtype, generator, device=device)
    sem = sem_for(32, True)

    def ours(q, kv):
        return fa.flash_attn_varlen_kvpacked_func(q, kv, cu_q, cu_k, 9, 12, causal=True)

    def reference(q, kv, dtype=torch.float64):
        return attention_varlen(q, *kv.unbind(1), cu_q.cpu(), cu_k.cpu(), sem, dtype=dtype)[0]

    check_gradients(ours, reference, lambda q, kv: reference(q, kv, q.dtype).to(q.device),
                    [leaf(q), leaf(kv)], dtype, names=("q", "kv"))


@pytest.mark.kernels_ci
def test_bad_packed_tensors_are_refused_by_name(fa, device):
    q = torch.zeros(2, 4, 2, 16, device=device)
    cu = torch.tensor([0, 4], dtype=torch.int32, device=device)
    with pytest.raises(ValueError, match="qkv must be"):
        fa.flash_attn_qkvpacked_func(torch.zeros(2, 4, 2, 2, 16, device=device))  # 2, not 3
    with pytest.raises(ValueError, match="kv must be"):
        fa.flash_attn_kvpacked_func(q, torch.zeros(2, 4, 3, 2, 16, device=device))
    with pytest.raises(ValueError, match="qkv must be"):
        fa.flash_attn_varlen_qkvpacked_func(torch.zeros(4, 3, 2, 2, 16, device=device), cu, 4)
    with pytest.raises(ValueError, match="kv must be"):
        fa.flash_attn_varlen_kvpacked_func(q[0], torch.zeros(4, 2, 16, device=device), cu, cu,
                                           4, 4)
