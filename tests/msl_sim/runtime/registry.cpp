#include "registry.h"

#include <algorithm>
#include <cstring>
#include <mutex>

#include "msl_sim/runtime.h"

namespace msl_sim {
namespace {

struct Registry {
  std::mutex mutex;
  std::vector<const KernelRegistration*> entries;
};

// Leaked on purpose: registrations in other shared objects may unregister after our statics die.
Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

}  // namespace

KernelRegistration::KernelRegistration(const char* name, KernelThunk thunk, const ParamDesc* params,
                                       int param_count, TuConstants* constants, const char* file,
                                       unsigned line)
    : name(name), thunk(thunk), params(params), param_count(param_count), constants(constants),
      file(file), line(line) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.entries.push_back(this);
}

KernelRegistration::~KernelRegistration() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  r.entries.erase(std::remove(r.entries.begin(), r.entries.end(), this), r.entries.end());
}

std::vector<const KernelRegistration*> find_kernels(const std::string& name) {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<const KernelRegistration*> found;
  for (const KernelRegistration* k : r.entries) {
    if (name != k->name) continue;
    bool same_site = false;
    for (const KernelRegistration* f : found)
      same_site |= f->line == k->line && std::strcmp(f->file, k->file) == 0;
    if (!same_site) found.push_back(k);
  }
  return found;
}

std::vector<std::string> kernel_names() {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mutex);
  std::vector<std::string> names;
  for (const KernelRegistration* k : r.entries) names.push_back(k->name);
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

}  // namespace msl_sim
