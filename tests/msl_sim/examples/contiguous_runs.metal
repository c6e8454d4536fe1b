// A thread's run of 8 contiguous floats, loaded and then stored: the shape an optimiser turns
// into one 32-byte vector access (clang's SLP vectorizer with AVX does). Every element must still
// be bounds-checked, counted, and land in the caller's memory.
#include <metal_stdlib>
using namespace metal;

kernel void scale_runs(const device float* in [[buffer(0)]], device float* out [[buffer(1)]],
                       uint tid [[thread_position_in_grid]]) {
  float run[8];
  for (uint i = 0; i < 8; ++i) run[i] = in[tid * 8 + i];
  for (uint i = 0; i < 8; ++i) out[tid * 8 + i] = run[i] * 2.0f;
}
