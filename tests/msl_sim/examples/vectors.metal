// Vector types, swizzles (read and assigned), conversions and element-wise math.
#include <metal_stdlib>
using namespace metal;

kernel void swizzles(const device float4* in [[buffer(0)]],
                     device float4* out [[buffer(1)]],
                     device half4* out_half [[buffer(2)]],
                     uint gid [[thread_position_in_grid]]) {
  float4 v = in[gid];
  float4 r = 0.0;
  r.xy = v.yx;            // swizzle assignment
  r.zw = v.xy * 2.0;
  r.x += v.w;
  float3 c = float3(v.xy, 1.0);
  r.w = r.w + dot(c, float3(1.0, 1.0, 1.0));
  float2 m = max(v.zw, v.wz);
  r.z += m.x - m.y;        // |z - w| pattern: max(z,w) - max(w,z) = 0
  out[gid] = r;
  half4 h = half4(v.wzyx);
  h.yz = h.zy;
  out_half[gid] = h * 2.0h;
}
