// BUG (on purpose): threads read a neighbour's threadgroup slot without a barrier after the
// writes. In-order scheduling happens to hide it (the neighbour ran first); reverse and random
// scheduling read the NaN poison.
#include <metal_stdlib>
using namespace metal;

kernel void shift_no_barrier(const device float* in [[buffer(0)]],
                             device float* out [[buffer(1)]],
                             uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[128];
  tile[tid] = in[tid];
  // threadgroup_barrier(mem_flags::mem_threadgroup);  <- missing
  out[tid] = tid > 0 ? tile[tid - 1] : 0.0;
}
