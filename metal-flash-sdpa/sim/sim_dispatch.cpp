// sim_dispatch over the MSL simulator's dispatch API (tests/msl_sim/include/msl_sim/runtime.h).
//
// Environment knobs (tests and benchmarks):
//   MFS_SIM_SCHEDULE=inorder|reverse|random  fiber schedule (default inorder)
//   MFS_SIM_SEED=n                           seed of the random schedule
//   MFS_SIM_BOUNDS=0                         skip bounds checking (faster, no traffic counters,
//                                            no race detection)
//   MFS_SIM_RACES=0                          skip threadgroup-memory race detection (faster)
//   MFS_SIM_WORKERS=n                        OS threads running threadgroups (default 1)
//   MFS_SIM_TRACE=path                       append one JSON line per launch (its report)
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
  try {
    trace(msl_sim::run(d, options_from_environment()));
  } catch (const msl_sim::Error& e) {
    trace(e.report);
    TORCH_CHECK(false, "metal-flash-sdpa (simulated Metal): kernel ", e.kernel, " failed (",
                msl_sim::kind_name(e.kind), "): ", e.what());
  }
}
