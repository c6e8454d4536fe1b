#include "fiber.h"

#include <sys/mman.h>

#include <mutex>
#include <new>
#include <vector>

namespace msl_sim::fiber {

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
