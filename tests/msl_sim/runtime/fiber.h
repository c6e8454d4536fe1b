// Cooperative fibers for GPU threads: a hand-written context switch (fiber_switch.cpp: x86-64
// Linux, arm64 Linux and macOS; ucontext is 5-10x slower because it saves the signal mask with
// a system call) and cached stack arenas (fiber.cpp).
#pragma once

#include <cstddef>

extern "C" void msl_sim_fiber_switch(void** save_sp, void* load_sp);

namespace msl_sim::fiber {

// Prepares a fresh stack so that switching to the returned sp calls entry(arg) on it.
// entry must never return (it switches away for good).
void* init_stack(char* stack_top, void (*entry)(void*), void* arg);

// `count` stacks of `stack_bytes`, each with an inaccessible guard page below it.
struct StackArena {
  char* base = nullptr;
  size_t count = 0;
  size_t stack_bytes = 0;
  size_t map_bytes = 0;
  char* top(size_t i) const { return base + (i + 1) * (stack_bytes + kGuard); }
  static constexpr size_t kGuard = 4096;
};
StackArena acquire_stacks(size_t count, size_t stack_bytes);
void release_stacks(StackArena arena);

}  // namespace msl_sim::fiber
