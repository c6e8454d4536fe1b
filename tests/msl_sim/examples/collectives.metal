// One result per lane for each SIMD-group collective, to compare with their definitions.
// out is [10][threads]: sum, max, prefix inclusive sum, prefix exclusive sum, shuffle,
// shuffle_xor 1, shuffle_up 3, shuffle_down 5, broadcast lane 7, ballot(x > 16) low bits.
#include <metal_stdlib>
using namespace metal;

kernel void collectives(const device float* in [[buffer(0)]],
                        device float* out [[buffer(1)]],
                        uint tid [[thread_index_in_threadgroup]],
                        uint lane [[thread_index_in_simdgroup]],
                        uint n [[threads_per_threadgroup]]) {
  float x = in[tid];
  out[0 * n + tid] = simd_sum(x);
  out[1 * n + tid] = simd_max(x);
  out[2 * n + tid] = simd_prefix_inclusive_sum(x);
  out[3 * n + tid] = simd_prefix_exclusive_sum(x);
  out[4 * n + tid] = simd_shuffle(x, (lane * 7) % 32);
  out[5 * n + tid] = simd_shuffle_xor(x, 1);
  out[6 * n + tid] = simd_shuffle_up(x, 3);
  out[7 * n + tid] = simd_shuffle_down(x, 5);
  out[8 * n + tid] = simd_broadcast(x, 7);
  out[9 * n + tid] = float(uint(ulong(simd_ballot(x > 16.0)) & 0xffff));
}
