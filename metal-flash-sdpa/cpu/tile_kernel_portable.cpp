// The portable tile kernel for any cpu, compiled for the baseline instruction set.
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "tile_job.h"

#include "portable_tile_kernel.h"

TileKernel portable_tile_kernel() { return {portable_scratch_bytes, run_portable}; }
