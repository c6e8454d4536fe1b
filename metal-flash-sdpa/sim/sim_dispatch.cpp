// sim_dispatch over the MSL simulator's dispatch API (tests/msl_sim/include/msl_sim/runtime.h).
//
// Environment knobs (tests and benchmarks):
//   MFS_SIM_SCHEDULE=inorder|reverse|random  fiber schedule (default inorder)
//   MFS_SIM_SEED=n                           seed of the random schedule
//   MFS_SIM_BOUNDS=0                         skip bounds checking (faster, no traffic counters,
//                                            no race detection)
//   MFS_SIM_RACES=0                          skip threadgroup-memory race detection (faster)
//   MFS_SIM_BANKS=1                          count threadgroup-memory bank conflicts (slower;
//                                            benchmarks/metal_traffic.py turns it on)
//   MFS_SIM_WORKERS=n                        OS threads running threadgroups (default 1)
//   MFS_SIM_TRACE=path                       append one JSON line per launch (its report)
//   MFS_SIM_RECORD=path                      append one JSON line per launch to path (kernel,
//                                            grid, constants, bytes, buffers) and each buffer's
//                                            contents before the launch to path.bin, so that
//                                            the launches can be replayed elsewhere
//                                            (tests/metal_cuda/: on an NVIDIA GPU)
#include "sim_dispatch.h"

#include <c10/util/Exception.h>

#include <cstdio>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "msl_sim/runtime.h"

namespace {

msl_sim::RunOptions options_from_environment() {
  msl_sim::RunOptions o;
  const char* schedule = std::getenv("MFS_SIM_SCHEDULE");
  if (schedule && std::strcmp(schedule, "reverse") == 0) o.schedule = msl_sim::Schedule::Reverse;
  if (schedule && std::strcmp(schedule, "random") == 0) o.schedule = msl_sim::Schedule::Random;
  if (const char* seed = std::getenv("MFS_SIM_SEED")) o.seed = std::strtoull(seed, nullptr, 10);
  if (const char* bounds = std::getenv("MFS_SIM_BOUNDS")) o.check_bounds = std::atoi(bounds) != 0;
  if (const char* races = std::getenv("MFS_SIM_RACES")) o.check_races = std::atoi(races) != 0;
  if (const char* banks = std::getenv("MFS_SIM_BANKS")) o.count_bank_conflicts = std::atoi(banks) != 0;
  const char* workers = std::getenv("MFS_SIM_WORKERS");
  o.workers = workers ? std::max(1, std::atoi(workers)) : 1;
  return o;
}

void trace(const msl_sim::LaunchReport& report) {
  const char* path = std::getenv("MFS_SIM_TRACE");
  if (!path || !*path) return;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  if (FILE* f = std::fopen(path, "a")) {
    const std::string json = report.to_json();
    std::fprintf(f, "%s\n", json.c_str());
    std::fclose(f);
  }
}

std::string hex(const void* data, size_t n) {
  static const char digits[] = "0123456789abcdef";
  std::string s;
  s.reserve(2 * n);
  for (size_t i = 0; i < n; ++i) {
    const uint8_t b = static_cast<const uint8_t*>(data)[i];
    s += digits[b >> 4];
    s += digits[b & 15];
  }
  return s;
}

void record(const SimLaunch& launch) {
  const char* path = std::getenv("MFS_SIM_RECORD");
  if (!path || !*path) return;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  FILE* bin = std::fopen((std::string(path) + ".bin").c_str(), "ab");
  FILE* f = std::fopen(path, "a");
  if (!bin || !f) {
    if (bin) std::fclose(bin);
    if (f) std::fclose(f);
    TORCH_CHECK(false, "MFS_SIM_RECORD: cannot append to ", path);
  }
  std::fseek(bin, 0, SEEK_END);
  std::fprintf(f, "{\"kernel\": \"%s\", \"grid\": [%u, %u, %u], \"threads\": [%u, %u, %u], \"constants\": {",
               launch.kernel.c_str(), launch.threadgroups[0], launch.threadgroups[1],
               launch.threadgroups[2], launch.threads_per_threadgroup[0],
               launch.threads_per_threadgroup[1], launch.threads_per_threadgroup[2]);
  for (size_t i = 0; i < launch.constants.size(); ++i) {
    std::fprintf(f, "%s\"%d\": %d", i ? ", " : "", launch.constants[i].index,
                 launch.constants[i].int_value);
  }
  std::fprintf(f, "}, \"bytes\": {");
  for (size_t i = 0; i < launch.bytes.size(); ++i) {
    const std::string h = hex(launch.bytes[i].bytes.data(), launch.bytes[i].bytes.size());
    std::fprintf(f, "%s\"%d\": \"%s\"", i ? ", " : "", launch.bytes[i].index, h.c_str());
  }
  std::fprintf(f, "}, \"buffers\": [");
  for (size_t i = 0; i < launch.buffers.size(); ++i) {
    const SimBuffer& b = launch.buffers[i];
    const long offset = std::ftell(bin);
    std::fwrite(b.data, 1, b.bytes, bin);
    std::fprintf(f, "%s{\"index\": %d, \"name\": \"%s\", \"address\": %llu, \"bytes\": %zu, \"at\": %ld}",
                 i ? ", " : "", b.index, b.name,
                 static_cast<unsigned long long>(reinterpret_cast<uintptr_t>(b.data)), b.bytes,
                 offset);
  }
  std::fprintf(f, "]}\n");
  std::fclose(f);
  std::fclose(bin);
}

}  // namespace

void sim_dispatch(const SimLaunch& launch) {
  msl_sim::Dispatch d;
  d.kernel = launch.kernel;
  for (int i = 0; i < 3; ++i) {
    d.threadgroups[i] = launch.threadgroups[i];
    d.threads_per_threadgroup[i] = launch.threads_per_threadgroup[i];
  }
  for (const SimBuffer& b : launch.buffers) {
    msl_sim::DeviceBuffer buffer;
    buffer.data = b.data;
    buffer.bytes = b.bytes;
    buffer.name = b.name;
    d.buffers[b.index] = buffer;
  }
  for (const SimBytes& b : launch.bytes) d.bytes[b.index] = b.bytes;
  for (const PlanFunctionConstant& fc : launch.constants) {
    msl_sim::FunctionConstant value;
    value.type = static_cast<msl_sim::FunctionConstant::Type>(static_cast<int>(fc.type));
    value.int_value = fc.int_value;
    value.float_value = fc.float_value;
    d.function_constants[fc.index] = value;
  }
  record(launch);
  try {
    trace(msl_sim::run(d, options_from_environment()));
  } catch (const msl_sim::Error& e) {
    trace(e.report);
    TORCH_CHECK(false, "metal-flash-sdpa (simulated Metal): kernel ", e.kernel, " failed (",
                msl_sim::kind_name(e.kind), "): ", e.what());
  }
}
