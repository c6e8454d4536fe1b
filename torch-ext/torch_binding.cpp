// The op schema of metal-flash-sdpa, registered under the build's unique namespace.
//
// One functional forward op and one in-place variant share a single implementation; every
// Python entry point (flash_attn_varlen_func, flash_attn_func, the legacy flash_attention_varlen)
// is a thin wrapper over them in torch-ext/metal_flash_sdpa/. The backward op is the functional
// forward's gradient (contiguous K/V), attached to it by torch.library.register_autograd
// (torch-ext/metal_flash_sdpa/_ops_backward.py). max_seqlen_* are SymInts so that torch.compile
// keeps them symbolic (a padding-free training step changes them every step: no recompile); the
// kernels receive them as plain ints. dropout_seed is the call's dropout stream state, int64 cpu
// [3] = (seed_lo, seed_hi, offset) (torch-ext/metal_flash_sdpa/_dropout.py draws it).
#include <torch/library.h>

#include "registration.h"
#include "torch_binding.h"

#define FORWARD_ARGS                                                                      \
  "Tensor q, Tensor k, Tensor v, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, "            \
  "Tensor? seqused_k, Tensor? block_table, Tensor? alibi_slopes, Tensor? s_aux, "         \
  "SymInt max_seqlen_q, SymInt max_seqlen_k, float softmax_scale, float softcap, "        \
  "int window_left, int window_right, bool return_lse, Tensor? seqused_q=None, "            \
  "float dropout_p=0.0, Tensor? dropout_seed=None"

TORCH_LIBRARY_EXPAND(TORCH_EXTENSION_NAME, ops) {
  ops.def("fwd(" FORWARD_ARGS ") -> (Tensor out, Tensor lse)");
  ops.def("fwd_into(Tensor(a!) out, " FORWARD_ARGS ") -> Tensor lse");
  ops.def(
      "bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, Tensor? alibi_slopes, Tensor? s_aux, "
      "SymInt max_seqlen_q, SymInt max_seqlen_k, float softmax_scale, float softcap, "
      "int window_left, int window_right, Tensor? seqused_q=None, Tensor? seqused_k=None, "
      "float dropout_p=0.0, Tensor? dropout_seed=None) "
      "-> (Tensor dq, Tensor dk, Tensor dv, Tensor ds_aux)");
  // flash-attn's S_dmask (return_attn_probs with dropout): the probabilities, dropped ones negated.
  ops.def(
      "dropout_probs(Tensor q, Tensor k, Tensor v, Tensor? cu_seqlens_q, Tensor? cu_seqlens_k, "
      "Tensor? seqused_k, Tensor? block_table, Tensor? alibi_slopes, Tensor? s_aux, "
      "SymInt max_seqlen_q, SymInt max_seqlen_k, float softmax_scale, float softcap, "
      "int window_left, int window_right, Tensor? seqused_q, float dropout_p, "
      "Tensor? dropout_seed, Tensor lse) -> Tensor");
  // scaled_dot_product_attention's drop-in (torch's attn_mask; _sdpa.py maps torch's layout).
  ops.def(
      "sdpa_fwd(Tensor q, Tensor k, Tensor v, Tensor? attn_mask, float softmax_scale, "
      "int window_right, bool return_lse, float dropout_p=0.0, Tensor? dropout_seed=None) -> "
      "(Tensor out, Tensor lse)");
  ops.def(
      "sdpa_bwd(Tensor dout, Tensor q, Tensor k, Tensor v, Tensor out, Tensor lse, "
      "Tensor? attn_mask, float softmax_scale, int window_right, bool mask_grad, "
      "float dropout_p=0.0, Tensor? dropout_seed=None) -> "
      "(Tensor dq, Tensor dk, Tensor dv, Tensor dmask)");
}

// Registered for every backend key (CompositeExplicitAutograd), not only this build's device:
// a tensor on another device then reaches the shared checks, which name the argument and the
// device this build runs on, instead of failing in the dispatcher.
#if !defined(CPU_KERNEL) && !defined(METAL_KERNEL) && !defined(METAL_SIMULATOR_KERNEL)
#error "build with one of CPU_KERNEL, METAL_KERNEL, METAL_SIMULATOR_KERNEL"
#endif

TORCH_LIBRARY_IMPL_EXPAND(TORCH_EXTENSION_NAME, CompositeExplicitAutograd, ops) {
  ops.impl("fwd", &attention_forward);
  ops.impl("fwd_into", &attention_forward_into);
  ops.impl("bwd", &attention_backward);
  ops.impl("dropout_probs", &attention_dropout_probs);
  ops.impl("sdpa_fwd", &sdpa_forward);
  ops.impl("sdpa_bwd", &sdpa_backward);
}

REGISTER_EXTENSION(TORCH_EXTENSION_NAME)
