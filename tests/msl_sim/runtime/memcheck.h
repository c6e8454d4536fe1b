// Bounds checking and traffic counting of device buffers.
//
// Translated kernels are compiled with -fsanitize=thread (and no function entry/exit hooks), so
// every load and store calls __tsan_{read,write}N(addr). We define those callbacks here (and no
// ThreadSanitizer runtime is linked):
// during a launch, each bound buffer (and setBytes block, and each worker's threadgroup memory)
// is staged inside one big reserved arena with 64 MiB red zones around it. An access inside the
// arena is counted against its binding or, if it lands in a red zone, recorded as out of bounds.
// Accesses outside the arena (stacks, runtime data) return after one compare.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace msl_sim::race {
class Shadow;
}
namespace msl_sim::bank {
class Model;
}

namespace msl_sim::mem {

// Load widths counted separately: 1, 2, 4, 8, 16 bytes and anything else (memcpy ranges).
constexpr int kLoadWidths = 6;
// Loads of at least this many bytes are "wide" (their bytes are counted apart: the share of a
// buffer's bytes that arrive by 16-byte vector loads).
constexpr size_t kWideLoadBytes = 16;
inline int load_width_slot(size_t n) {
  return n == 1 ? 0 : n == 2 ? 1 : n == 4 ? 2 : n == 8 ? 3 : n == 16 ? 4 : 5;
}

struct Binding {
  uintptr_t begin = 0;
  uintptr_t end = 0;  // threadgroup memory grows as function-scope variables are placed
  std::string name;
  int index = -1;     // [[buffer(index)]], -1 for threadgroup memory
  bool set_bytes = false;
  bool threadgroup = false;
  size_t size = 0;    // as bound
};

struct OobRecord {
  int binding;
  int64_t offset;  // from the binding's start (negative: before it)
  uint32_t size;
  bool write;
  void* pc;
  uint32_t tid[3], tgid[3];
};

// Per worker thread.
struct ThreadCounters {
  std::vector<uint64_t> read, written;  // per binding
  // Load instructions per binding, by access width: 1, 2, 4, 8, 16 bytes, other (ranges).
  std::vector<std::array<uint64_t, kLoadWidths>> loads;
  std::vector<uint64_t> wide_read;  // per binding: bytes read by loads of >= kWideLoadBytes
  std::vector<OobRecord> oob;
  uint64_t oob_total = 0;
  size_t max_reports = 16;
  race::Shadow* races = nullptr;  // threadgroup-memory race detection (racecheck.h), if on
  bank::Model* banks = nullptr;   // threadgroup-memory bank conflicts (bankcheck.h), if on
};

// One staged region: external memory copied in before and (if written) out after the launch.
struct Region {
  void* external = nullptr;
  size_t bytes = 0;
  char* staged = nullptr;
};

class Arena {
 public:
  // Reserve a region of `bytes`; returns its id. Call before map().
  int add_region(void* external, size_t bytes);
  void map();                       // reserves the arena and copies external memory in
  char* staged(int region) const { return regions_[region].staged; }
  void add_binding(Binding b) { bindings_.push_back(std::move(b)); }
  // Makes the callbacks check against this arena (bindings sorted by address).
  void activate();
  void deactivate();
  // Copies every region back. Not only the ones whose writes were counted: a store the
  // instrumentation did not see (see build.py on wide vector accesses) must still land.
  void copy_back();
  std::vector<Binding>& bindings() { return bindings_; }
  const std::vector<Region>& regions() const { return regions_; }
  ~Arena();

 private:
  std::vector<Region> regions_;
  std::vector<Binding> bindings_;
  char* base_ = nullptr;
  size_t span_ = 0;
};

// Set on each worker thread for the duration of a launch.
void set_thread_counters(ThreadCounters* counters);
// Threadgroup memory of a worker grew to `end` (bindings()[binding]).
void set_binding_end(Binding& b, uintptr_t end);
// "file.metal:12 (in function)" for a code address in a translated kernel, best effort.
std::string describe_pc(void* pc);
// Every inlined frame outside the compat header, innermost first, as file name and line:
// "attention_tiles.h:25 <- attention_prefill.metal:210".
std::string describe_pc_chain(void* pc);

}  // namespace msl_sim::mem
