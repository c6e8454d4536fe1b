#include "memcheck.h"

#include <dlfcn.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <new>

#include "msl_sim/abi.h"
#include "bankcheck.h"
#include "racecheck.h"

namespace msl_sim::mem {
namespace {

constexpr size_t kRedZone = size_t(64) << 20;  // virtual only: untouched pages cost nothing
constexpr size_t kPage = 4096;

// The active launch's arena (written only while no kernel runs: under the dispatch mutex,
// before workers start and after they are joined).
uintptr_t g_lo = 0;
uintptr_t g_span = 0;
Binding* g_bindings = nullptr;
size_t g_binding_count = 0;

thread_local ThreadCounters* t_counters __attribute__((tls_model("initial-exec"))) = nullptr;

size_t round_page(size_t n) { return (n + kPage - 1) & ~(kPage - 1); }

__attribute__((noinline)) void slow_path(uintptr_t a, size_t n, bool write, void* pc) {
  ThreadCounters* c = t_counters;
  if (!c) return;
  Binding* b = g_bindings;
  size_t count = g_binding_count;
  // Last binding starting at or before a; views may overlap (aliased buffers), so look back.
  size_t hi = std::upper_bound(b, b + count, a, [](uintptr_t x, const Binding& y) { return x < y.begin; }) - b;
  for (size_t i = hi; i-- > 0;) {
    uintptr_t end = __atomic_load_n(&b[i].end, __ATOMIC_RELAXED);
    if (a >= b[i].begin && a + n <= end) {
      if (b[i].threadgroup && rt::t_thread) {
        if (c->races) c->races->access(uint32_t(a - b[i].begin), n, write, pc, *rt::t_thread);
        if (c->banks) c->banks->access(uint32_t(a - b[i].begin), n, write, pc, *rt::t_thread);
      }
      if (write) {
        c->written[i] += n;
      } else {
        c->read[i] += n;
        c->loads[i][load_width_slot(n)]++;
        if (n >= kWideLoadBytes) c->wide_read[i] += n;
      }
      return;
    }
    if (hi - i > 4) break;
  }
  // Out of bounds: attribute to the nearer of the previous binding's end and the next one's start.
  int best = -1;
  uint64_t best_distance = ~uint64_t(0);
  if (hi > 0) {
    uintptr_t end = __atomic_load_n(&b[hi - 1].end, __ATOMIC_RELAXED);
    uint64_t d = a + n > end ? a + n - end : 0;
    best = int(hi - 1);
    best_distance = d;
  }
  if (hi < count && b[hi].begin - a < best_distance) best = int(hi);
  if (best < 0) return;
  ++c->oob_total;
  for (const OobRecord& r : c->oob)
    if (r.pc == pc && r.binding == best && r.write == write) return;  // one report per site
  if (c->oob.size() >= c->max_reports) return;
  OobRecord r{};
  r.binding = best;
  r.offset = int64_t(a) - int64_t(b[best].begin);
  r.size = uint32_t(n);
  r.write = write;
  r.pc = pc;
  if (const rt::Thread* t = rt::t_thread) {
    std::memcpy(r.tid, t->tid, sizeof r.tid);
    std::memcpy(r.tgid, t->tgid, sizeof r.tgid);
  }
  c->oob.push_back(r);
}

inline void check(uintptr_t a, size_t n, bool write, void* pc) {
  if (a - g_lo >= g_span) return;
  slow_path(a, n, write, pc);
}

}  // namespace

int Arena::add_region(void* external, size_t bytes) {
  regions_.push_back(Region{external, bytes, nullptr});
  return int(regions_.size()) - 1;
}

void Arena::map() {
  span_ = kRedZone;
  for (const Region& r : regions_) span_ += round_page(std::max<size_t>(r.bytes, 1)) + kRedZone;
  void* p = mmap(nullptr, span_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (p == MAP_FAILED) throw std::bad_alloc();
  base_ = static_cast<char*>(p);
  size_t offset = kRedZone;
  for (Region& r : regions_) {
    r.staged = base_ + offset;
    if (r.external && r.bytes) std::memcpy(r.staged, r.external, r.bytes);
    offset += round_page(std::max<size_t>(r.bytes, 1)) + kRedZone;
  }
}

void Arena::activate() {
  std::stable_sort(bindings_.begin(), bindings_.end(),
                   [](const Binding& x, const Binding& y) { return x.begin < y.begin; });
  g_bindings = bindings_.data();
  g_binding_count = bindings_.size();
  g_lo = reinterpret_cast<uintptr_t>(base_);
  g_span = span_;
}

void Arena::deactivate() {
  g_lo = 0;
  g_span = 0;
  g_bindings = nullptr;
  g_binding_count = 0;
}

void Arena::copy_back() {
  for (const Region& r : regions_)
    if (r.external && r.bytes) std::memcpy(r.external, r.staged, r.bytes);
}

Arena::~Arena() {
  if (base_) munmap(base_, span_);
}

void set_thread_counters(ThreadCounters* counters) { t_counters = counters; }

void set_binding_end(Binding& b, uintptr_t end) { __atomic_store_n(&b.end, end, __ATOMIC_RELAXED); }

namespace {

struct Frame {
  std::string where;     // file:line
  std::string function;  // as written (no unnamed namespace), shortened
};

// addr2line -i: (function, file:line) pairs from the innermost inlined frame outwards.
std::vector<Frame> inline_frames(void* pc) {
  std::vector<Frame> frames;
  Dl_info info{};
  if (!pc || !dladdr(pc, &info) || !info.dli_fname) return frames;
  uintptr_t offset = reinterpret_cast<uintptr_t>(pc) - reinterpret_cast<uintptr_t>(info.dli_fbase) - 1;
  char cmd[4096];
  std::snprintf(cmd, sizeof cmd, "addr2line -C -f -i -e '%s' 0x%lx 2>/dev/null", info.dli_fname,
                static_cast<unsigned long>(offset));
  FILE* f = popen(cmd, "r");
  if (!f) return frames;
  std::vector<std::string> lines;
  char buf[2048];
  while (std::fgets(buf, sizeof buf, f)) {
    std::string s(buf);
    while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
    lines.push_back(s);
  }
  pclose(f);
  for (size_t i = 0; i + 1 < lines.size(); i += 2) {
    Frame fr{lines[i + 1], lines[i]};
    auto disc = fr.where.find(" (discriminator");
    if (disc != std::string::npos) fr.where.resize(disc);
    // Translated code sits in an unnamed namespace (translate.py); report the name as written.
    const std::string unnamed = "(anonymous namespace)::";
    if (fr.function.compare(0, unnamed.size(), unnamed) == 0) fr.function.erase(0, unnamed.size());
    if (fr.function.size() > 60) fr.function = fr.function.substr(0, 57) + "...";
    frames.push_back(fr);
  }
  return frames;
}

bool in_kernel_source(const Frame& f) {
  return f.where.find("/msl_sim/include/") == std::string::npos && f.where.find("??") == std::string::npos;
}

}  // namespace

std::string describe_pc(void* pc) {
  // The first frame that is not in the compat header.
  const std::vector<Frame> frames = inline_frames(pc);
  for (const Frame& f : frames)
    if (in_kernel_source(f)) return f.where + " (in " + f.function + ")";
  return frames.empty() ? "" : frames[0].where;
}

std::string describe_pc_chain(void* pc) {
  const std::vector<Frame> frames = inline_frames(pc);
  std::string out;
  for (const Frame& f : frames) {
    if (!in_kernel_source(f)) continue;
    const size_t slash = f.where.rfind('/');
    out += (out.empty() ? "" : " <- ") + (slash == std::string::npos ? f.where : f.where.substr(slash + 1));
  }
  return out.empty() && !frames.empty() ? frames[0].where : out;
}

}  // namespace msl_sim::mem

// The callbacks that instrumented kernel code calls for every memory access. Kernels are compiled
// with -fsanitize=thread (not kernel-address: GCC's ASan pass skips the check of a store that
// follows a load of the same address in a basic block, which would lose written bytes), and we
// provide the entry points ThreadSanitizer's runtime would.
#define MSL_SIM_TSAN_CB(N)                                                                          \
  extern "C" void __tsan_read##N(uintptr_t a) { msl_sim::mem::check(a, N, false, __builtin_return_address(0)); } \
  extern "C" void __tsan_write##N(uintptr_t a) { msl_sim::mem::check(a, N, true, __builtin_return_address(0)); } \
  extern "C" void __tsan_unaligned_read##N(uintptr_t a) {                                         \
    msl_sim::mem::check(a, N, false, __builtin_return_address(0));                               \
  }                                                                                              \
  extern "C" void __tsan_unaligned_write##N(uintptr_t a) {                                        \
    msl_sim::mem::check(a, N, true, __builtin_return_address(0));                                \
  }                                                                                              \
  extern "C" void __tsan_volatile_read##N(uintptr_t a) {                                          \
    msl_sim::mem::check(a, N, false, __builtin_return_address(0));                               \
  }                                                                                              \
  extern "C" void __tsan_volatile_write##N(uintptr_t a) {                                         \
    msl_sim::mem::check(a, N, true, __builtin_return_address(0));                                \
  }
MSL_SIM_TSAN_CB(1)
MSL_SIM_TSAN_CB(2)
MSL_SIM_TSAN_CB(4)
MSL_SIM_TSAN_CB(8)
MSL_SIM_TSAN_CB(16)
#undef MSL_SIM_TSAN_CB
extern "C" void __tsan_read_range(uintptr_t a, size_t n) {
  msl_sim::mem::check(a, n, false, __builtin_return_address(0));
}
extern "C" void __tsan_write_range(uintptr_t a, size_t n) {
  msl_sim::mem::check(a, n, true, __builtin_return_address(0));
}
// clang's ThreadSanitizer pass turns a kernel's memcpy/memset/memmove into these calls.
extern "C" void* __tsan_memcpy(void* dst, const void* src, size_t n) {
  msl_sim::mem::check(reinterpret_cast<uintptr_t>(src), n, false, __builtin_return_address(0));
  msl_sim::mem::check(reinterpret_cast<uintptr_t>(dst), n, true, __builtin_return_address(0));
  return std::memcpy(dst, src, n);
}
extern "C" void* __tsan_memmove(void* dst, const void* src, size_t n) {
  msl_sim::mem::check(reinterpret_cast<uintptr_t>(src), n, false, __builtin_return_address(0));
  msl_sim::mem::check(reinterpret_cast<uintptr_t>(dst), n, true, __builtin_return_address(0));
  return std::memmove(dst, src, n);
}
extern "C" void* __tsan_memset(void* dst, int value, size_t n) {
  msl_sim::mem::check(reinterpret_cast<uintptr_t>(dst), n, true, __builtin_return_address(0));
  return std::memset(dst, value, n);
}
// Called by each instrumented file's constructor, and around functions when entry/exit
// instrumentation is on (build.py turns it off); nothing to do for us.
extern "C" void __tsan_init() {}
extern "C" void __tsan_func_entry(void*) {}
extern "C" void __tsan_func_exit() {}
extern "C" void __tsan_vptr_update(void*, void*) {}
extern "C" void __tsan_vptr_read(void*) {}
