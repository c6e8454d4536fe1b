// Which tile kernels this cpu can run.
#pragma once

enum class CpuIsa {
  kPortable,    // plain C++ (any cpu)
  kAvx2,        // AVX2 with FMA and F16C, enabled by the OS
  kAvx512,      // AVX-512 F/BW/VL/DQ with FMA and F16C, enabled by the OS
  kAvx512Bf16,  // the above plus AVX512_BF16
};

// Detected once. The environment variable MFS_CPU_ISA (portable | avx2 | avx512 | avx512_bf16) may lower
// it, never raise it: for testing the other kernels on one machine.
CpuIsa detected_cpu_isa();
