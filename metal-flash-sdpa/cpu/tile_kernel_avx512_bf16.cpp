// The AVX-512 tile kernel for bf16 inputs with native bf16 dot products (vdpbf16ps, fp32
// accumulation). Compiled for AVX-512 F/BW/VL/DQ + AVX512_BF16 by the target pragma below; the
// driver calls it only for bf16 tensors on a cpu that has AVX512_BF16 (cpu_features.cpp).
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

#define MFS_ISA_TARGET "avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,f16c"
#include "isa_target_push.h"

#define MFS_AVX512_BF16_DOT 1
#include "avx512_tile_kernel.h"

namespace {

void run_avx512_bf16(const TileJob& job, void* scratch) {
  run_any_tile<ElementType::kBFloat16, true>(job, scratch);
}

}  // namespace

#include "isa_target_pop.h"

TileKernel avx512_bf16_tile_kernel() { return {scratch_bytes, run_avx512_bf16}; }

#endif  // MFS_HAVE_X86_KERNELS
