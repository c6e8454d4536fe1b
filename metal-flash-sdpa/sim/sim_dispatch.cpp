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
//   MFS_SIM_RECORD=dir                       append one JSON line per launch to dir/launches.jsonl
//                                            (kernel, grid, constants, bytes, buffers, test) and
//                                            the memory it binds, before and after the launch,
//                                            to dir/blobs/ (by content), so that each launch can
//                                            be replayed elsewhere and its outputs compared
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

std::string json_string(const char* text) {
  std::string s = "\"";
  for (const char* c = text ? text : ""; *c; ++c) {
    if (*c == '"' || *c == '\\') s += '\\';
    if (static_cast<unsigned char>(*c) < 0x20) {
      s += ' ';
      continue;
    }
    s += *c;
  }
  return s + "\"";
}

// ---- MFS_SIM_RECORD --------------------------------------------------------------------------
// A launch's memory as the replay needs it: the buffers' address ranges merged where they overlap
// (q, k and v of one packed tensor; each binding runs to the end of its storage), each range a
// region stored by content before and after the launch. A region's blob is named by a 64-bit
// hash of its bytes and its size, so identical contents (an input every launch of a call binds,
// a read-only buffer's "after") are written once.
struct RecordedRegion {
  const uint8_t* begin;
  size_t bytes;
  std::string before;
};

struct Recording {
  std::vector<RecordedRegion> regions;
  std::vector<size_t> region_of;  // per launch.buffers entry
};

std::string content_name(const uint8_t* data, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ n;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t w;
    std::memcpy(&w, data + i, 8);
    h = (h ^ w) * 0xFF51AFD7ED558CCDull;
    h ^= h >> 32;
  }
  for (; i < n; ++i) h = (h ^ data[i]) * 0x100000001B3ull;
  h ^= h >> 29;
  h *= 0xC4CEB9FE1A85EC53ull;
  h ^= h >> 32;
  char name[48];
  std::snprintf(name, sizeof name, "%016llx-%zu", static_cast<unsigned long long>(h), n);
  return name;
}

std::string store_blob(const std::string& dir, const uint8_t* data, size_t n) {
  const std::string name = content_name(data, n);
  const std::string path = dir + "/blobs/" + name;
  if (FILE* existing = std::fopen(path.c_str(), "rb")) {
    std::fclose(existing);
    return name;
  }
  const std::string partial = path + ".partial";
  FILE* f = std::fopen(partial.c_str(), "wb");
  TORCH_CHECK(f, "MFS_SIM_RECORD: cannot write ", partial, " (does ", dir, "/blobs exist?)");
  const bool ok = std::fwrite(data, 1, n, f) == n;
  std::fclose(f);
  TORCH_CHECK(ok && std::rename(partial.c_str(), path.c_str()) == 0, "MFS_SIM_RECORD: cannot write ",
              path);
  return name;
}

const char* record_dir() {
  const char* dir = std::getenv("MFS_SIM_RECORD");
  return dir && *dir ? dir : nullptr;
}

Recording record_before(const SimLaunch& launch) {
  Recording rec;
  const char* dir = record_dir();
  if (!dir) return rec;
  std::vector<size_t> order(launch.buffers.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  const auto begin_of = [&](size_t i) { return static_cast<const uint8_t*>(launch.buffers[i].data); };
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return begin_of(a) < begin_of(b); });
  rec.region_of.resize(order.size());
  std::vector<RecordedRegion>& regions = rec.regions;
  for (size_t i : order) {
    const uint8_t* begin = begin_of(i);
    const size_t bytes = launch.buffers[i].bytes;
    if (!regions.empty() && bytes && regions.back().bytes &&
        begin <= regions.back().begin + regions.back().bytes) {
      RecordedRegion& r = regions.back();
      r.bytes = std::max(r.bytes, static_cast<size_t>(begin + bytes - r.begin));
    } else {
      regions.push_back({begin, bytes, ""});
    }
    rec.region_of[i] = regions.size() - 1;
  }
  for (RecordedRegion& r : regions) r.before = store_blob(dir, r.begin, r.bytes);
  return rec;
}

// One line per launch: kernel, grid, constants, bytes, regions (before and after) and buffers
// (index, name, dtype, region, offset, bytes), the pytest test that ran it
// (PYTEST_CURRENT_TEST), and the simulator's error if the launch failed there.
void record_after(const SimLaunch& launch, const Recording& recording, const char* fault) {
  const char* dir = record_dir();
  if (!dir) return;
  const std::vector<RecordedRegion>& regions = recording.regions;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  std::string line = "{\"kernel\": " + json_string(launch.kernel.c_str());
  char numbers[160];
  std::snprintf(numbers, sizeof numbers, ", \"grid\": [%u, %u, %u], \"threads\": [%u, %u, %u]",
                launch.threadgroups[0], launch.threadgroups[1], launch.threadgroups[2],
                launch.threads_per_threadgroup[0], launch.threads_per_threadgroup[1],
                launch.threads_per_threadgroup[2]);
  line += numbers;
  line += ", \"constants\": {";
  for (size_t i = 0; i < launch.constants.size(); ++i) {
    line += (i ? ", \"" : "\"") + std::to_string(launch.constants[i].index) + "\": " +
            std::to_string(launch.constants[i].int_value);
  }
  line += "}, \"bytes\": {";
  for (size_t i = 0; i < launch.bytes.size(); ++i) {
    line += (i ? ", \"" : "\"") + std::to_string(launch.bytes[i].index) + "\": \"" +
            hex(launch.bytes[i].bytes.data(), launch.bytes[i].bytes.size()) + "\"";
  }
  line += "}, \"regions\": [";
  for (size_t i = 0; i < regions.size(); ++i) {
    const RecordedRegion& r = regions[i];
    line += std::string(i ? ", " : "") + "{\"bytes\": " + std::to_string(r.bytes) +
            ", \"before\": \"" + r.before + "\"";
    if (!fault) line += ", \"after\": \"" + store_blob(dir, r.begin, r.bytes) + "\"";
    line += "}";
  }
  line += "], \"buffers\": [";
  for (size_t i = 0; i < launch.buffers.size(); ++i) {
    const SimBuffer& b = launch.buffers[i];
    const uint8_t* begin = static_cast<const uint8_t*>(b.data);
    const size_t region = recording.region_of[i];
    line += std::string(i ? ", " : "") + "{\"index\": " + std::to_string(b.index) +
            ", \"name\": " + json_string(b.name) + ", \"dtype\": " + json_string(b.dtype) +
            ", \"region\": " + std::to_string(region) +
            ", \"offset\": " + std::to_string(begin - regions[region].begin) +
            ", \"bytes\": " + std::to_string(b.bytes) + "}";
  }
  line += "], \"test\": " + json_string(std::getenv("PYTEST_CURRENT_TEST"));
  if (fault) line += ", \"fault\": " + json_string(fault);
  line += "}\n";
  const std::string path = std::string(dir) + "/launches.jsonl";
  FILE* f = std::fopen(path.c_str(), "a");
  TORCH_CHECK(f, "MFS_SIM_RECORD: cannot append to ", path);
  std::fputs(line.c_str(), f);
  std::fclose(f);
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
  const Recording recording = record_before(launch);
  try {
    trace(msl_sim::run(d, options_from_environment()));
    record_after(launch, recording, nullptr);
  } catch (const msl_sim::Error& e) {
    record_after(launch, recording, e.what());
    trace(e.report);
    TORCH_CHECK(false, "metal-flash-sdpa (simulated Metal): kernel ", e.kernel, " failed (",
                msl_sim::kind_name(e.kind), "): ", e.what());
  }
}
