// Tiled GEMM with simdgroup_matrix: C[M, N] = A[M, K] * B (float accumulation).
// B is [K, N], or [N, K] read through transposed simdgroup_loads when TransB.
// A threadgroup (4 SIMD-groups) computes a 32x32 tile of C; each SIMD-group a 16x16 quarter as
// 2x2 8x8 fragments. M, N must be multiples of 32 and K of 16.
#include <metal_stdlib>
using namespace metal;

constant constexpr int BM = 32, BN = 32, BK = 16;

template <typename T, bool TransB>
kernel void gemm(const device T* A [[buffer(0)]],
                 const device T* B [[buffer(1)]],
                 device float* C [[buffer(2)]],
                 constant uint3& mnk [[buffer(3)]],
                 uint2 tg [[threadgroup_position_in_grid]],
                 uint tid [[thread_index_in_threadgroup]],
                 uint sg [[simdgroup_index_in_threadgroup]]) {
  threadgroup T As[BM * BK];
  threadgroup T Bs[BK * BN];
  const uint N = mnk.y, K = mnk.z;
  const uint row0 = tg.y * BM, col0 = tg.x * BN;
  const uint sg_row = (sg / 2) * 16, sg_col = (sg % 2) * 16;

  simdgroup_matrix<float, 8, 8> acc[2][2];
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      acc[i][j] = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
    }
  }
  for (uint k0 = 0; k0 < K; k0 += BK) {
    for (uint i = tid; i < BM * BK; i += 128) {
      As[i] = A[(row0 + i / BK) * K + k0 + i % BK];
    }
    for (uint i = tid; i < BK * BN; i += 128) {
      if (TransB) {
        Bs[i] = B[(col0 + i / BK) * K + k0 + i % BK];  // Bs is [BN][BK]
      } else {
        Bs[i] = B[(k0 + i / BN) * N + col0 + i % BN];  // Bs is [BK][BN]
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (uint kk = 0; kk < BK; kk += 8) {
      simdgroup_matrix<T, 8, 8> a[2];
      simdgroup_matrix<T, 8, 8> b[2];
      for (int i = 0; i < 2; ++i) {
        simdgroup_load(a[i], As + (sg_row + i * 8) * BK + kk, BK);
      }
      for (int j = 0; j < 2; ++j) {
        if (TransB) {
          simdgroup_load(b[j], Bs + (sg_col + j * 8) * BK + kk, BK, ulong2(0, 0), true);
        } else {
          simdgroup_load(b[j], Bs + kk * BN + sg_col + j * 8, BN);
        }
      }
      for (int i = 0; i < 2; ++i) {
        for (int j = 0; j < 2; ++j) {
          simdgroup_multiply_accumulate(acc[i][j], a[i], b[j], acc[i][j]);
        }
      }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);
  }
  for (int i = 0; i < 2; ++i) {
    for (int j = 0; j < 2; ++j) {
      simdgroup_store(acc[i][j], C + (row0 + sg_row + i * 8) * N + col0 + sg_col + j * 8, N);
    }
  }
}

#define instantiate_gemm(tname, type, trans, tsuffix)                 \
  template [[host_name("gemm_" #tname #tsuffix)]] [[kernel]]          \
  decltype(gemm<type, trans>) gemm<type, trans>;

instantiate_gemm(float, float, false, )
instantiate_gemm(half, half, false, )
instantiate_gemm(bfloat, bfloat, false, )
instantiate_gemm(float, float, true, _bt)
instantiate_gemm(half, half, true, _bt)
