// BUG (on purpose): writes a function-constant-guarded parameter without testing its constant.
// With the constant off Metal binds nothing there; the simulator reports the access.
#include <metal_stdlib>
using namespace metal;

constant bool write_extra [[function_constant(0)]];

kernel void guarded_write_when_off(device float* out [[buffer(0)]],
                                   device float* extra [[buffer(1), function_constant(write_extra)]],
                                   uint gid [[thread_position_in_grid]]) {
  out[gid] = 1.0f;
  extra[gid] = 2.0f;  // the bug: `if (write_extra)` is missing
}
