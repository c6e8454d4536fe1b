// The Metal builds (the real one and the simulated one) have no backward kernels yet: a backward
// through them raises instead of returning a wrong or missing gradient. Plain C++ shared by the
// Metal host and the simulator build; replaced when the Metal backward kernels exist.
#include <c10/util/Exception.h>

#include "attention_backend.h"

void run_attention_backward(const AttentionParams&, const AttentionTensors&,
                            const AttentionGradients&) {
  TORCH_CHECK_NOT_IMPLEMENTED(
      false,
      "metal-flash-sdpa: the Metal backward kernels are not written yet, so the backward of "
      "flash_attn_varlen_func / flash_attn_func (op `bwd`: gradients of q, k, v, s_aux) cannot "
      "run on this build; the cpu build has it");
}
