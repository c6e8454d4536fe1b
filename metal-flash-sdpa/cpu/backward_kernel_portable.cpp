// The backward tile kernel for any cpu, compiled for the baseline instruction set.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "backward_job.h"

// Register block of the products: 4 rows x 8 columns: 8 of the 16 SSE registers.
#define MFS_VEC_LANES 4
#define MFS_GEMM_ROWS 4
#define MFS_GEMM_VECS 2
#include "backward_tile_kernel.h"

BackwardKernel portable_backward_kernel() { return {bwd_scratch_bytes, bwd_key_tile}; }
