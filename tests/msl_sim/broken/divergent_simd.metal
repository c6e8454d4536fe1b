// BUG (on purpose): lanes of one SIMD-group call different collectives.
#include <metal_stdlib>
using namespace metal;

kernel void divergent_simd(device float* out [[buffer(0)]],
                           uint lane [[thread_index_in_simdgroup]],
                           uint tid [[thread_index_in_threadgroup]]) {
  float x = float(tid);
  if (lane < 16) {
    x = simd_sum(x);
  } else {
    x = simd_max(x);
  }
  out[tid] = x;
}
