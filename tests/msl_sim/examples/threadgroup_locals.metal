// Function-scope threadgroup variables in every form the source step accepts: several
// declarations, several declarators in one declaration (arrays, a scalar and a per-thread
// pointer), a template type whose arguments hold commas, and a 2-D array. Each thread writes its
// slot, then reads another thread's: per-thread copies would read poison or stale values.
#include <metal_stdlib>
using namespace metal;

template <typename T>
kernel void threadgroup_locals(device float* out [[buffer(0)]],
                               uint i [[thread_index_in_threadgroup]]) {
  threadgroup T a[32];
  threadgroup T b[32];
  threadgroup float c[32], total, *c_ptr = c;
  threadgroup vec<T, 2> pairs[32];
  threadgroup float grid[4][8];
  a[i] = T(i);
  b[i] = T(2 * i);
  c_ptr[i] = 3.0 * i;
  pairs[i] = vec<T, 2>(T(4 * i), T(5 * i));
  grid[i / 8][i % 8] = 6.0 * i;
  if (i == 0) {
    total = 1000.0;
  }
  threadgroup_barrier(mem_flags::mem_threadgroup);
  uint j = 31 - i;
  out[i] = float(a[j]) + float(b[j]) + c[j] + float(pairs[j].x + pairs[j].y) + grid[j / 8][j % 8] + total;
}

template [[host_name("threadgroup_locals")]] kernel void threadgroup_locals<float>(device float*, uint);
