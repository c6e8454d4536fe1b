// A C interface over msl_sim::run for ctypes (the self-tests drive kernels from Python with it).
#include <cstdlib>
#include <cstring>
#include <string>

#include "msl_sim/runtime.h"

namespace {

char* dup(const std::string& s) {
  char* p = static_cast<char*>(std::malloc(s.size() + 1));
  std::memcpy(p, s.c_str(), s.size() + 1);
  return p;
}

}  // namespace

extern "C" {

void* msl_sim_dispatch_new(const char* kernel, const uint32_t* threadgroups, const uint32_t* threads) {
  auto* d = new msl_sim::Dispatch;
  d->kernel = kernel;
  for (int i = 0; i < 3; ++i) {
    d->threadgroups[i] = threadgroups[i];
    d->threads_per_threadgroup[i] = threads[i];
  }
  return d;
}

void msl_sim_dispatch_free(void* d) { delete static_cast<msl_sim::Dispatch*>(d); }

void msl_sim_dispatch_buffer(void* d, int index, void* data, size_t bytes, const char* name) {
  static_cast<msl_sim::Dispatch*>(d)->buffers[index] = msl_sim::DeviceBuffer{data, bytes, name ? name : ""};
}

void msl_sim_dispatch_bytes(void* d, int index, const void* data, size_t bytes) {
  auto p = static_cast<const uint8_t*>(data);
  static_cast<msl_sim::Dispatch*>(d)->bytes[index] = std::vector<uint8_t>(p, p + bytes);
}

void msl_sim_dispatch_threadgroup_memory(void* d, int index, uint32_t bytes) {
  static_cast<msl_sim::Dispatch*>(d)->threadgroup_memory[index] = bytes;
}

// type: 0 bool, 1 int, 2 float
void msl_sim_dispatch_constant(void* d, int index, int type, int32_t int_value, float float_value) {
  msl_sim::FunctionConstant c;
  c.type = static_cast<msl_sim::FunctionConstant::Type>(type);
  c.int_value = int_value;
  c.float_value = float_value;
  static_cast<msl_sim::Dispatch*>(d)->function_constants[index] = c;
}

// Returns 0 and the report as JSON in *out, or 1 + the error kind and "Kind: message" in *out.
// schedule: 0 in order, 1 reverse, 2 random.
int msl_sim_dispatch_run(void* d, int workers, int schedule, uint64_t seed, int check_bounds, int poison,
                         int check_races, int count_bank_conflicts, char** out) {
  msl_sim::RunOptions o;
  o.workers = workers;
  o.schedule = static_cast<msl_sim::Schedule>(schedule);
  o.seed = seed;
  o.check_bounds = check_bounds != 0;
  o.poison_threadgroup_memory = poison != 0;
  o.check_races = check_races != 0;
  o.count_bank_conflicts = count_bank_conflicts != 0;
  try {
    *out = dup(msl_sim::run(*static_cast<msl_sim::Dispatch*>(d), o).to_json());
    return 0;
  } catch (const msl_sim::Error& e) {
    *out = dup(std::string(msl_sim::kind_name(e.kind)) + ": " + e.what());
    return 1 + static_cast<int>(e.kind);
  } catch (const std::exception& e) {
    *out = dup(std::string("Exception: ") + e.what());
    return 100;
  }
}

void msl_sim_free_string(char* s) { std::free(s); }

char* msl_sim_kernel_names() {
  std::string all;
  for (const std::string& n : msl_sim::kernel_names()) all += n + "\n";
  return dup(all);
}

}  // extern "C"
