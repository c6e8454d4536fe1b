// The compatibility header that translated .metal sources include instead of <metal_stdlib>.
// Address-space keywords become empty macros; this header must be included before anything
// else in a translated file (it pulls in the few std headers it needs first).
#pragma once

#include "abi.h"
#include "function_constant.h"
#include "kernel.h"
#include "math.h"
#include "matrix.h"
#include "scalar.h"
#include "simd.h"
#include "traits.h"
#include "vec.h"

#define device
#define constant
#define threadgroup
#define thread
#define threadgroup_imageblock
#define ray_data
#define object_data

namespace metal {
using ::bfloat; using ::uint; using ::ushort; using ::uchar; using ::ulong;  // half is a builtin type (no metal::half)
}  // namespace metal
