// Data-race detection on threadgroup memory, by happens-before (not by interleaving luck).
//
// Inside one threadgroup the only orderings between two threads are program order (same
// thread), a threadgroup_barrier whose flags include mem_threadgroup (all threads), and a
// simdgroup_barrier with mem_threadgroup (the lanes of one SIMD-group). So a vector clock
// reduces to two counters: the threadgroup's barrier epoch and each SIMD-group's barrier epoch.
// Two accesses by different threads to one byte, at least one a write, are ordered iff a
// threadgroup barrier completed between them (different epochs), or they are lanes of one
// SIMD-group and a simdgroup_barrier completed between them. SIMD-group collectives
// (simd_shuffle, simd_sum, MMAs, ...) exchange registers and order no memory: they are not
// synchronisation here (Metal's memory model; the compiler may move loads and stores across
// them).
//
// Shadow state per byte of threadgroup memory (one Shadow per worker, reused by its
// threadgroups: epochs only grow, so a new threadgroup is a new epoch and needs no reset): the
// last write, and the reads since it in the current epoch as three records (the last reader,
// the last reader of another thread, the last reader of another SIMD-group), which is enough to
// find, for any later write, a racing read if there is one (FastTrack-style).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "msl_sim/abi.h"

namespace msl_sim::race {

constexpr uint16_t kNoThread = 0xFFFF;

struct Access {
  void* pc = nullptr;      // code address of the load/store (symbolised only when reported)
  uint32_t sepoch = 0;     // the accessing thread's SIMD-group barrier epoch at the access
  uint16_t thread = kNoThread;
};

struct Cell {
  uint32_t w_epoch = 0;  // threadgroup epoch of the last write (0: none)
  uint32_t r_epoch = 0;  // threadgroup epoch of the reads recorded below
  Access w;              // the last write
  Access r;              // the last read
  Access r_other;        // the last read by a thread other than r.thread
  Access r_simd;         // the last read by a thread of a SIMD-group other than r.thread's
};

enum class Kind : uint8_t { ReadAfterWrite, WriteAfterRead, WriteAfterWrite };

struct Record {
  Kind kind;
  uint32_t offset;   // byte offset in threadgroup memory
  uint32_t size;     // of the second access
  Access first;      // the earlier access in the simulated run
  Access second;     // the access that found it unordered
  uint32_t tgid[3];
};

class Shadow {
 public:
  explicit Shadow(size_t max_reports);
  ~Shadow();
  Shadow(const Shadow&) = delete;
  Shadow& operator=(const Shadow&) = delete;

  // A new threadgroup starts: nothing it does is ordered with the previous one's accesses,
  // which is what a fresh epoch says (its threads never race with those).
  void begin_group(const uint32_t tgid[3]);
  // A threadgroup_barrier / simdgroup_barrier of SIMD-group `simd` completed (flags: mem_flags).
  void threadgroup_barrier(unsigned flags);
  void simdgroup_barrier(uint32_t simd, unsigned flags);
  // A load or store of n bytes at `offset` of threadgroup memory by the current GPU thread.
  void access(uint32_t offset, size_t n, bool write, void* pc, const rt::Thread& t);

  const std::vector<Record>& records() const { return records_; }
  uint64_t total() const { return total_; }

 private:
  void report(Kind kind, uint32_t offset, size_t n, const Access& first, const Access& second);

  Cell* cells_;
  uint32_t epoch_ = 1;
  uint32_t sepoch_[1024 / kSimdWidth] = {};  // per SIMD-group (at most 1024 threads)
  uint32_t tgid_[3] = {};
  std::vector<Record> records_;
  uint64_t total_ = 0;
  size_t max_reports_;
};

// "thread 5 (simdgroup 0, lane 5) at file.metal:12 (in f)", given where = describe_pc(a.pc)
std::string describe_access(const Access& a, const std::string& where);
const char* kind_name(Kind kind);

}  // namespace msl_sim::race
