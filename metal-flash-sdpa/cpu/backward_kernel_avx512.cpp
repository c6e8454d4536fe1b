// The backward tile kernel compiled for AVX-512 F/BW/VL/DQ with 512-bit vectors by the target
// pragma below (no compiler flags needed); the driver calls them only when the cpu has those.
#include "backward_job.h"

#ifdef MFS_HAVE_X86_KERNELS

// Everything included before isa_target_push.h is compiled for the baseline ISA.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#define MFS_ISA_TARGET "avx512f,avx512bw,avx512vl,avx512dq,fma,f16c,prefer-vector-width=512"
#include "isa_target_push.h"

// Register block of the products: 6 rows x 64 columns: 24 of the 32 zmm registers (8 were
// too few accumulators to keep both FMA pipes busy over the short sums of a 64-key tile).
#define MFS_VEC_LANES 16
#define MFS_GEMM_ROWS 6
#define MFS_GEMM_VECS 4
#include "backward_tile_kernel.h"

#include "isa_target_pop.h"

BackwardKernel avx512_backward_kernel() { return {bwd_scratch_bytes, bwd_key_tile}; }

#endif  // MFS_HAVE_X86_KERNELS
