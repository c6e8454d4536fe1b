// The portable tile kernel compiled for AVX2 + FMA + F16C (x86 cpus without AVX-512), by the
// target pragma below (no compiler flags needed); the driver calls it only when the cpu has them.
#include "tile_job.h"

#ifdef MFS_HAVE_X86_KERNELS

// Everything included before isa_target_push.h is compiled for the baseline ISA.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#define MFS_ISA_TARGET "avx2,fma,f16c"
#include "isa_target_push.h"

// Register block of the products: 6 rows x 16 columns: 12 of the 16 ymm registers.
#define MFS_VEC_LANES 8
#define MFS_GEMM_ROWS 6
#define MFS_GEMM_VECS 2
#include "portable_tile_kernel.h"

#include "isa_target_pop.h"

TileKernel avx2_tile_kernel() { return {portable_scratch_bytes, run_portable}; }

#endif  // MFS_HAVE_X86_KERNELS
