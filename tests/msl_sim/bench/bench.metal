// Micro-benchmarks of the simulator's rendezvous points (run by bench.py).
#include <metal_stdlib>
using namespace metal;

kernel void bench_simd_sum(device float* out [[buffer(0)]], constant uint& iters [[buffer(1)]],
                           uint tid [[thread_index_in_threadgroup]]) {
  float x = float(tid);
  for (uint i = 0; i < iters; ++i) {
    x = simd_sum(x) * 0.03125;
  }
  out[tid] = x;
}

kernel void bench_shuffle_xor(device float* out [[buffer(0)]], constant uint& iters [[buffer(1)]],
                              uint tid [[thread_index_in_threadgroup]]) {
  float x = float(tid);
  for (uint i = 0; i < iters; ++i) {
    x += simd_shuffle_xor(x, 1u + i % 16u);
  }
  out[tid] = x;
}

kernel void bench_barrier(device float* out [[buffer(0)]], constant uint& iters [[buffer(1)]],
                          uint tid [[thread_index_in_threadgroup]]) {
  for (uint i = 0; i < iters; ++i) {
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  out[tid] = 1.0;
}

kernel void bench_mma(device float* out [[buffer(0)]], constant uint& iters [[buffer(1)]],
                      uint lane [[thread_index_in_simdgroup]]) {
  simdgroup_matrix<float, 8, 8> a = make_filled_simdgroup_matrix<float, 8, 8>(0.01f);
  simdgroup_matrix<float, 8, 8> c = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  for (uint i = 0; i < iters; ++i) {
    simdgroup_multiply_accumulate(c, a, a, c);
  }
  simdgroup_store(c, out, 8);
}
