// The simulator's dispatch API, used by executors (the torch extension's sim executor, the
// self-test C API). Plain C++: no compat header macros, so it can sit next to std/torch headers.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "function_constant.h"

namespace msl_sim {

// External memory bound as [[buffer(i)]], e.g. a tensor's storage from its offset to its end.
struct DeviceBuffer {
  void* data = nullptr;
  size_t bytes = 0;
  std::string name;  // for reports ("q", "k", ...)
};

struct Dispatch {
  std::string kernel;  // [[host_name]] or function name
  uint32_t threadgroups[3] = {1, 1, 1};
  uint32_t threads_per_threadgroup[3] = {1, 1, 1};
  std::map<int, DeviceBuffer> buffers;               // [[buffer(i)]] device memory
  std::map<int, std::vector<uint8_t>> bytes;         // [[buffer(i)]] bound with setBytes
  std::map<int, uint32_t> threadgroup_memory;        // [[threadgroup(i)]] lengths in bytes
  std::map<int, FunctionConstant> function_constants;
};

// Order in which a threadgroup's runnable threads are resumed (a missing barrier shows up as a
// wrong result under at least one of them).
enum class Schedule { InOrder, Reverse, Random };

struct RunOptions {
  int workers = 2;                        // OS threads running threadgroups
  Schedule schedule = Schedule::InOrder;
  uint64_t seed = 1;                      // for Schedule::Random
  bool check_bounds = true;               // stage buffers between red zones, count traffic
  bool check_races = true;                // threadgroup-memory data races (needs check_bounds)
  bool poison_threadgroup_memory = true;  // fill with 0xFF (NaN for float/half/bfloat) per group
  size_t stack_bytes = 256 * 1024;        // per GPU thread (virtual; touched pages only)
  int max_reports = 16;                   // out-of-bounds accesses listed in an error
  // Threadgroup-memory bank conflicts (32 banks x 4 bytes, runtime/bankcheck.h; needs
  // check_bounds). Off by default: it groups every threadgroup access into SIMD-group
  // instructions, which costs time the test suite need not spend.
  bool count_bank_conflicts = false;
};

struct BufferTraffic {
  int index = -1;          // [[buffer(index)]], or -1 for threadgroup memory
  std::string name;
  bool set_bytes = false;  // bound with setBytes
  uint64_t size = 0;
  uint64_t bytes_read = 0;
  uint64_t bytes_written = 0;
  // Load instructions by width: 1, 2, 4, 8, 16 bytes, other (bytes_read / their sum = the
  // average load width, the thing wide vector loads improve).
  uint64_t loads_by_width[6] = {};
  uint64_t bytes_read_wide = 0;  // bytes read by loads of 16 bytes or more
};

// Bank conflicts of one code site (a load or store of the compiled kernel; unrolled copies of
// one source access are merged by their location).
struct BankConflictSite {
  std::string where;  // "attention_tiles.h:25 <- attention_prefill.metal:210" (inlined frames)
  bool write = false;
  uint32_t width = 0;         // bytes per lane
  uint64_t instructions = 0;  // SIMD-group instructions
  uint64_t ways_sum = 0;
  uint32_t worst = 0;
};

struct BankConflicts {
  bool counted = false;        // RunOptions::count_bank_conflicts was on
  uint64_t instructions = 0;   // threadgroup-memory instructions of all SIMD-groups
  uint64_t ways_sum = 0;       // mean ways = ways_sum / instructions
  uint32_t worst = 0;
  std::string worst_site;      // where the worst instruction is (the most executed if tied)
  std::vector<BankConflictSite> sites;  // the sites with conflicts, most excess ways first (<= 12)
};

// Dead work: SIMD-group operations done for lanes that the kernel declared discarded with
// MSL_SIM_DEAD_WORK(true) (include/stub/metal_stdlib), weighted by the share of the operation's
// lanes that were: an MMA whose 32 lanes are all discarded counts 1, a shuffle with 16 of 32, 0.5.
struct DeadWork {
  double mma = 0;          // of simdgroup_mma
  double collectives = 0;  // of simd_collectives other than simdgroup_barrier
};

struct LaunchReport {
  std::string kernel;
  uint64_t threadgroups = 0;        // threadgroups run
  uint64_t threads = 0;
  uint64_t simdgroup_mma = 0;       // 8x8x8 multiply-accumulates (per SIMD-group)
  uint64_t threadgroup_barriers = 0;
  uint64_t simd_collectives = 0;    // simd_* reductions, shuffles, ballots, simdgroup_barrier
  uint32_t threadgroup_memory_bytes = 0;  // dynamic + function-scope
  bool bounds_checked = false;      // traffic counters are only valid when true
  std::vector<BufferTraffic> buffers;     // device buffers, setBytes blocks, threadgroup memory
  // MSL_SIM_COUNT(name, n) totals of the launch (kernel-defined events, e.g. mask evaluations).
  std::map<std::string, uint64_t> events;
  BankConflicts bank_conflicts;
  DeadWork dead_work;
  double seconds = 0.0;

  const BufferTraffic* buffer(int index) const;
  std::string to_string() const;
  std::string to_json() const;
};

class Error : public std::runtime_error {
 public:
  enum class Kind {
    KernelNotFound,
    InvalidDispatch,
    ThreadgroupMemoryLimit,
    Divergence,
    Deadlock,
    OutOfBounds,
    KernelFailure,
    DataRace,
  };
  Error(Kind kind, std::string kernel, const std::string& message, LaunchReport report = {})
      : std::runtime_error(message), kind(kind), kernel(std::move(kernel)), report(std::move(report)) {}
  Kind kind;
  std::string kernel;
  LaunchReport report;  // counters up to the failure
};
const char* kind_name(Error::Kind kind);

// Runs one dispatch to completion (dispatches are serialised process-wide). Throws Error.
LaunchReport run(const Dispatch& dispatch, const RunOptions& options = {});

// Names of all registered kernels (from every loaded translated source).
std::vector<std::string> kernel_names();

}  // namespace msl_sim
