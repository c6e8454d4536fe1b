// BUG (on purpose): two halves of the threadgroup wait at different barriers.
#include <metal_stdlib>
using namespace metal;

kernel void divergent_barrier(device float* out [[buffer(0)]],
                              uint tid [[thread_index_in_threadgroup]]) {
  if (tid < 32) {
    out[tid] = 1.0;
    threadgroup_barrier(mem_flags::mem_threadgroup);
  } else {
    out[tid] = 2.0;
    threadgroup_barrier(mem_flags::mem_device);
  }
}
