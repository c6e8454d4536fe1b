#include "fiber.h"

#include <sys/mman.h>

#include <cstdint>
#include <mutex>
#include <new>
#include <vector>

// Saves the callee-saved registers on the current stack, stores sp in *save_sp, loads load_sp
// and pops the target's registers. MXCSR and the x87 control word are shared: kernels don't
// change them.
asm(R"(
    .text
    .globl msl_sim_fiber_switch
    .hidden msl_sim_fiber_switch
    .type msl_sim_fiber_switch, @function
msl_sim_fiber_switch:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size msl_sim_fiber_switch, .-msl_sim_fiber_switch

    .globl msl_sim_fiber_start
    .hidden msl_sim_fiber_start
    .type msl_sim_fiber_start, @function
msl_sim_fiber_start:
    .cfi_startproc
    .cfi_undefined rip
    movq %r12, %rdi
    callq *%r13
    ud2
    .cfi_endproc
    .size msl_sim_fiber_start, .-msl_sim_fiber_start
)");

extern "C" void msl_sim_fiber_start();

namespace msl_sim::fiber {

void* init_stack(char* stack_top, void (*entry)(void*), void* arg) {
  uintptr_t top = reinterpret_cast<uintptr_t>(stack_top) & ~uintptr_t(15);
  // After the six pops and `ret`, sp = top - 16: 16-byte aligned before msl_sim_fiber_start's call.
  auto* sp = reinterpret_cast<uintptr_t*>(top - 72);
  sp[0] = 0;                                                   // r15
  sp[1] = 0;                                                   // r14
  sp[2] = reinterpret_cast<uintptr_t>(entry);                  // r13
  sp[3] = reinterpret_cast<uintptr_t>(arg);                    // r12
  sp[4] = 0;                                                   // rbx
  sp[5] = 0;                                                   // rbp
  sp[6] = reinterpret_cast<uintptr_t>(&msl_sim_fiber_start);  // return address
  return sp;
}

namespace {
std::mutex g_pool_mutex;
std::vector<StackArena>* g_pool = new std::vector<StackArena>;  // never freed: safe at unload
}  // namespace

StackArena acquire_stacks(size_t count, size_t stack_bytes) {
  stack_bytes = (stack_bytes + 4095) & ~size_t(4095);
  {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    for (size_t i = 0; i < g_pool->size(); ++i) {
      StackArena a = (*g_pool)[i];
      if (a.count >= count && a.stack_bytes == stack_bytes) {
        g_pool->erase(g_pool->begin() + long(i));
        return a;
      }
    }
  }
  StackArena a;
  a.count = count;
  a.stack_bytes = stack_bytes;
  a.map_bytes = count * (stack_bytes + StackArena::kGuard);
  void* p = mmap(nullptr, a.map_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  a.base = static_cast<char*>(p);
  for (size_t i = 0; i < count; ++i) mprotect(a.base + i * (stack_bytes + StackArena::kGuard), StackArena::kGuard, PROT_NONE);
  return a;
}

void release_stacks(StackArena arena) {
  if (!arena.base) return;
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  if (g_pool->size() < 4) {
    g_pool->push_back(arena);
    return;
  }
  munmap(arena.base, arena.map_bytes);
}

}  // namespace msl_sim::fiber
