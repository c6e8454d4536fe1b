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
