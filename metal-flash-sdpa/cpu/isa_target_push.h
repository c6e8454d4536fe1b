// Compiles every function from here to isa_target_pop.h for the instruction set named by
// MFS_ISA_TARGET (a target string, e.g. "avx2,fma,f16c"), without compiler flags, so one binary
// holds every x86 kernel and cpu_features.cpp picks the one the cpu can run.
//
// The including file defines MFS_ISA_TARGET first and includes every standard and c10 header
// before this one: what is included inside the push is compiled for the target too, and an inline
// function compiled there could be merged into the baseline build. No include guard: each push is
// matched by its own pop.
#ifndef MFS_ISA_TARGET
#error "define MFS_ISA_TARGET (a target string) before including isa_target_push.h"
#endif

#ifndef MFS_PRAGMA
#define MFS_PRAGMA_STRING(...) _Pragma(#__VA_ARGS__)
#define MFS_PRAGMA(...) MFS_PRAGMA_STRING(__VA_ARGS__)  // expands MFS_ISA_TARGET first
#endif

#if defined(__clang__)
MFS_PRAGMA(clang attribute push(__attribute__((target(MFS_ISA_TARGET))), apply_to = function))
#elif defined(__GNUC__)
#pragma GCC push_options
MFS_PRAGMA(GCC target(MFS_ISA_TARGET))
#endif
