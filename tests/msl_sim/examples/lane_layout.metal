// Exposes the simdgroup_matrix lane layout through thread_elements(): `loaded` gets, per lane, the
// two elements a simdgroup_load gave it; `stored` is the matrix a simdgroup_store writes when each
// lane's elements are (2 * lane, 2 * lane + 1).
#include <metal_stdlib>
using namespace metal;

kernel void lane_layout(const device float* matrix [[buffer(0)]],
                        device float* loaded [[buffer(1)]],
                        device float* stored [[buffer(2)]],
                        ushort lane [[thread_index_in_simdgroup]]) {
  simdgroup_matrix<float, 8, 8> m;
  simdgroup_load(m, matrix, 8);
  float2 e = m.thread_elements();
  loaded[2 * lane] = e.x;
  loaded[2 * lane + 1] = e.y;

  simdgroup_matrix<float, 8, 8> s;
  s.thread_elements()[0] = float(2 * lane);
  s.thread_elements()[1] = float(2 * lane + 1);
  simdgroup_store(s, stored, 8);
}
