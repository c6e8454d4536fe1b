// Source-step corner cases: overloads that differ only by address space (kept once), half
// literals, a kernel inside a namespace with [[host_name]], constants derived from function
// constants inside a namespace, and a parameter struct read through `constant T&`.
#include <metal_stdlib>
using namespace metal;

namespace sim_example {

struct Params {
  float scale;
  uint n;
};

constant int mode [[function_constant(10)]];
constant bool mode_is_two = mode == 2;

template <typename T>
inline float load_scaled(const device T* p, uint i, float s) {
  return float(p[i]) * s;
}
template <typename T>
inline float load_scaled(const threadgroup T* p, uint i, float s) {
  return float(p[i]) * s;
}

[[host_name("scaled_copy")]] kernel void scaled_copy_impl(const device half* in [[buffer(0)]],
                                                          device float* out [[buffer(1)]],
                                                          constant Params& params [[buffer(2)]],
                                                          uint gid [[thread_position_in_grid]]) {
  if (gid >= params.n) {
    return;
  }
  half bump = 0.5h;
  float v = load_scaled(in, gid, params.scale) + float(bump);
  out[gid] = mode_is_two ? -v : v;
}

}  // namespace sim_example
