// The design counters: load instructions by width (a 4-element vector is one load) and kernel
// events (MSL_SIM_COUNT, a no-op macro for Apple's compiler).
#include <metal_stdlib>
using namespace metal;

#ifndef MSL_SIM_COUNT
#define MSL_SIM_COUNT(name, n)
#endif

kernel void widths(const device half* h [[buffer(0)]], const device float* f [[buffer(1)]],
                   device float* out [[buffer(2)]], uint tid [[thread_position_in_grid]]) {
  const half4 a = *((const device half4*)(h + tid * 4));    // one 8-byte load
  const float4 b = *((const device float4*)(f + tid * 4));  // one 16-byte load
  const float c = f[tid];                                    // one 4-byte load
  out[tid] = float(a.x + a.y + a.z + a.w) + b.x + b.y + b.z + b.w + c;
  MSL_SIM_COUNT("threads", 1);
  if (tid % 2 == 0) MSL_SIM_COUNT("even_threads_twice", 2);
}
