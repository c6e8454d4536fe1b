// Shared by shared_header_a.metal and shared_header_b.metal: a function constant and a helper
// that reads it. Each file has its own constant; the helper, an inline function defined in both
// files, must read the constant of the file whose kernel calls it.
#pragma once
#include <metal_stdlib>
using namespace metal;

constant int shared_bias [[function_constant(20)]];

// noinline: an out-of-line copy is what the linker could merge across files.
inline __attribute__((noinline)) int read_shared_bias() {
  return shared_bias;
}
