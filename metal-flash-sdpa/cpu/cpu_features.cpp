#include "cpu_features.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>

#if (defined(__x86_64__) || defined(_M_X64)) && defined(__GNUC__)
#include <cpuid.h>
#define MFS_DETECT_X86 1
#endif

namespace {

#ifdef MFS_DETECT_X86
CpuIsa probe_x86() {
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return CpuIsa::kPortable;
  const bool osxsave = ecx & (1u << 27), fma = ecx & (1u << 12), f16c = ecx & (1u << 29);
  if (!osxsave || !fma || !f16c) return CpuIsa::kPortable;
  // The OS must save the registers: XCR0 bits 1, 2 (SSE, AVX) and 5, 6, 7 (opmask, all zmm).
  unsigned xcr0_lo, xcr0_hi;
  __asm__ volatile("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0x6u) != 0x6u) return CpuIsa::kPortable;
  if (!__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) return CpuIsa::kPortable;
  if (!(ebx & (1u << 5))) return CpuIsa::kPortable;  // AVX2
  const bool f = ebx & (1u << 16), dq = ebx & (1u << 17), bw = ebx & (1u << 30),
             vl = ebx & (1u << 31);
  if (!(f && dq && bw && vl) || (xcr0_lo & 0xe6u) != 0xe6u) return CpuIsa::kAvx2;
  if (__get_cpuid_count(7, 1, &eax, &ebx, &ecx, &edx) && (eax & (1u << 5))) {
    return CpuIsa::kAvx512Bf16;
  }
  return CpuIsa::kAvx512;
}
#endif

CpuIsa probe() {
#ifdef MFS_DETECT_X86
  CpuIsa isa = probe_x86();
#else
  CpuIsa isa = CpuIsa::kPortable;
#endif
  if (const char* cap = std::getenv("MFS_CPU_ISA")) {
    CpuIsa limit = isa;
    if (std::strcmp(cap, "portable") == 0) limit = CpuIsa::kPortable;
    if (std::strcmp(cap, "avx2") == 0) limit = CpuIsa::kAvx2;
    if (std::strcmp(cap, "avx512") == 0) limit = CpuIsa::kAvx512;
    if (std::strcmp(cap, "avx512_bf16") == 0) limit = CpuIsa::kAvx512Bf16;
    if (static_cast<int>(limit) < static_cast<int>(isa)) isa = limit;
    // The override only lowers the choice: say what runs, so that a test asking for an
    // instruction set this cpu lacks can tell it got a lower one.
    static const char* const names[] = {"portable", "avx2", "avx512", "avx512_bf16"};
    std::fprintf(stderr, "metal-flash-sdpa: MFS_CPU_ISA=%s: cpu kernels: %s\n", cap,
                 names[static_cast<int>(isa)]);
  }
  return isa;
}

}  // namespace

CpuIsa detected_cpu_isa() {
  static const CpuIsa isa = probe();
  return isa;
}
