// The AVX-512 tile kernel for every dtype, computing in fp32 (fp16/bf16 converted per block).
// Compiled for AVX-512 F/BW/VL/DQ by the target pragma below (no compiler flags needed); the
// driver calls it only when the cpu has those (cpu_features.cpp).
// attention_semantics.h's rule templates are instantiated here with __m512 and always inlined
// into this file's AVX-512 functions; GCC's note that passing __m512 to a function compiled
// without AVX-512 changes the ABI concerns no call that exists.
#pragma GCC diagnostic ignored "-Wpsabi"
#include "tile_job.h"

#ifdef MFS_HAVE_X86_KERNELS

// Everything included before isa_target_push.h is compiled for the baseline ISA.
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cmath>
#include <cstring>

#define MFS_ISA_TARGET "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c"
#include "isa_target_push.h"

#include "avx512_tile_kernel.h"

namespace {

void run_avx512(const TileJob& job, void* scratch) {
  switch (job.dtype) {
    case ElementType::kFloat32: return run_any_tile<ElementType::kFloat32, false>(job, scratch);
    case ElementType::kFloat16: return run_any_tile<ElementType::kFloat16, false>(job, scratch);
    case ElementType::kBFloat16: return run_any_tile<ElementType::kBFloat16, false>(job, scratch);
  }
}

}  // namespace

#include "isa_target_pop.h"

TileKernel avx512_tile_kernel() { return {scratch_bytes, run_avx512}; }

#endif  // MFS_HAVE_X86_KERNELS
