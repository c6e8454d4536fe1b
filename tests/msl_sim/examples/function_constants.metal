// Function constants (bool/int/float, defined or not, and constants computed from them), a
// buffer that exists only when a function constant says so, and host_name instantiations.
#include <metal_stdlib>
using namespace metal;

constant bool use_scale [[function_constant(0)]];
constant int repeat_count [[function_constant(1)]];
constant float scale_value [[function_constant(2)]];
constant bool has_bias [[function_constant(3)]];
constant bool scale_given = is_function_constant_defined(scale_value);
constant int twice_repeat = repeat_count * 2;

template <typename T>
kernel void affine(device T* x [[buffer(0)]],
                   const device T* bias [[buffer(1), function_constant(has_bias)]],
                   constant uint& n [[buffer(2)]],
                   uint gid [[thread_position_in_grid]]) {
  if (gid >= n) {
    return;
  }
  float v = float(x[gid]);
  if (use_scale) {
    v *= scale_given ? scale_value : 2.0;
  }
  v += float(twice_repeat);
  if (has_bias) {
    v += float(bias[gid]);
  }
  x[gid] = T(v);
}

#define instantiate_affine(tname, type) \
  template [[host_name("affine_" #tname)]] [[kernel]] decltype(affine<type>) affine<type>;

instantiate_affine(float, float)
instantiate_affine(half, half)
instantiate_affine(bfloat, bfloat)
