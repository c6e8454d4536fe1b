// A worker: one OS thread that runs threadgroups one after another. Each threadgroup's GPU
// threads are fibers on this thread; barriers and SIMD-group collectives are rendezvous points
// that block a fiber until every live thread (or lane) has arrived.
#pragma once

#include <atomic>
#include <memory>
#include <cstdint>
#include <optional>
#include <source_location>
#include <string>
#include <vector>

#include "bankcheck.h"
#include "fiber.h"
#include "memcheck.h"
#include "racecheck.h"
#include "msl_sim/abi.h"
#include "msl_sim/kernel.h"
#include "msl_sim/runtime.h"

namespace msl_sim {

// Everything a worker needs to know about the dispatch (shared, read-only while running).
struct Launch {
  const KernelRegistration* kernel = nullptr;
  rt::Geometry geometry{};
  void* buffers[32] = {};
  uint32_t tg_offsets[32] = {};    // [[threadgroup(i)]] offsets in threadgroup memory
  uint32_t tg_dynamic_bytes = 0;   // total of the [[threadgroup(i)]] blocks
  uint32_t tg_bound = 0;           // bit i: [[threadgroup(i)]] is bound
  RunOptions options;
  uint32_t threads_per_group = 0;
  uint64_t total_groups = 0;
  std::atomic<uint64_t> next_group{0};
  std::atomic<bool> stop{false};
};

struct Counters {
  uint64_t mma = 0, barriers = 0, collectives = 0, threadgroups = 0, threads = 0;
  uint64_t events[rt::kMaxEvents] = {};  // MSL_SIM_COUNT, by event_id
  double dead_mma = 0, dead_collectives = 0;  // MSL_SIM_DEAD_WORK lanes' share (DeadWork)
};
// The name of an interned event id (event_names().size() ids exist).
std::vector<std::string> event_names();

struct Failure {
  Error::Kind kind;
  std::string message;
};

class Worker;

struct Fiber {
  enum class State : uint8_t { Ready, Running, Waiting, Done };
  enum class Wait : uint8_t { None, Barrier, Simd };
  rt::Thread t{};
  Worker* w = nullptr;
  void* sp = nullptr;
  State state = State::Done;
  Wait wait = Wait::None;
  int wait_op = 0;
  std::source_location wait_site;
};

class Worker {
 public:
  // tg_memory: kMaxThreadgroupMemory bytes (staged in the arena when bounds are checked).
  Worker(Launch& launch, char* tg_memory);
  ~Worker();
  Worker(const Worker&) = delete;
  Worker& operator=(const Worker&) = delete;

  // Runs threadgroups until none are left, or any worker failed.
  void run();

  Counters counters;
  std::optional<Failure> failure;
  uint32_t tg_used_max = 0;
  mem::ThreadCounters mem_counters;
  mem::Binding* tg_binding = nullptr;  // set when bounds are checked
  std::unique_ptr<race::Shadow> races;  // set when races are checked
  std::unique_ptr<bank::Model> banks;   // set when bank conflicts are counted
  // "`tile` (threadgroup variable at k.metal:9), byte 12" for a threadgroup-memory offset.
  std::string describe_threadgroup_offset(uint32_t offset) const;

  // Entry points for the rt:: functions (called on a fiber of this worker).
  void simd_collective(Fiber* f, int op, rt::ComputeFn fn, const std::source_location& site,
                       unsigned barrier_flags = 0);
  void threadgroup_barrier(Fiber* f, unsigned flags, const std::source_location& site);
  void* threadgroup_static(Fiber* f, const rt::TgSite& site, size_t bytes, size_t align);
  [[noreturn]] void fail(Fiber* f, Error::Kind kind, const std::string& message);
  [[noreturn]] void exit_fiber(Fiber* f);
  const Launch& launch() const { return launch_; }

 private:
  bool run_group(uint64_t linear);
  void block(Fiber* f);
  void wake(std::vector<Fiber*>& fibers);
  void push(Fiber* f);
  Fiber* pop();
  void complete_simd(rt::SimdGroup& g, Fiber* self);
  void complete_barrier(Fiber* self);
  std::string where() const;  // "kernel 'k', threadgroup (x, y, z)"
  std::string deadlock_report() const;

  Launch& launch_;
  char* tg_base_;
  uint32_t tg_used_;
  struct Static {
    const rt::TgSite* site;
    uint32_t offset, bytes;
  };
  std::vector<Static> statics_;
  void* tg_ptrs_[32] = {};
  fiber::StackArena stacks_;
  std::vector<Fiber> fibers_;
  std::vector<rt::SimdGroup> sgs_;
  std::vector<Fiber*> queue_;
  size_t q_head_ = 0, q_size_ = 0;
  void* sched_sp_ = nullptr;
  uint32_t live_ = 0;
  uint32_t bar_arrived_ = 0;
  unsigned bar_flags_ = 0;            // mem_flags of the pending threadgroup barrier's arrivals
  std::vector<unsigned> simd_flags_;  // same, per SIMD-group's pending simdgroup_barrier
  std::source_location bar_site_;
  uint32_t tgid_[3] = {};
  uint64_t rng_ = 0;
  std::vector<Fiber*> scratch_;
};

}  // namespace msl_sim
