// msl_sim::run: validates a dispatch, binds (and stages) its memory, runs its threadgroups on
// workers and gathers the report.
#include <algorithm>
#include <map>
#include <chrono>
#include <memory>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "memcheck.h"
#include "msl_sim/runtime.h"
#include "registry.h"
#include "worker.h"

namespace msl_sim {
namespace {

std::mutex g_dispatch_mutex;  // one dispatch at a time: function constants are globals

const char* param_kind_name(ParamKind k) { return k == ParamKind::Buffer ? "buffer" : "threadgroup"; }

[[noreturn]] void invalid(const Dispatch& d, const std::string& msg) {
  throw Error(Error::Kind::InvalidDispatch, d.kernel, "kernel '" + d.kernel + "': " + msg);
}

const KernelRegistration* find_kernel(const Dispatch& d) {
  auto found = find_kernels(d.kernel);
  if (found.size() == 1) return found[0];
  std::ostringstream s;
  if (found.empty()) {
    s << "no kernel named '" << d.kernel << "' is registered; known kernels:";
    for (const std::string& n : kernel_names()) s << " " << n;
    throw Error(Error::Kind::KernelNotFound, d.kernel, s.str());
  }
  s << "kernel name '" << d.kernel << "' is registered more than once:";
  for (auto* k : found) s << " " << k->file << ":" << k->line;
  throw Error(Error::Kind::KernelNotFound, d.kernel, s.str());
}

void apply_constants(const KernelRegistration& k, const Dispatch& d) {
  if (!k.constants) return;
  FunctionConstantLookup lookup{&d.function_constants, [](const void* ctx, int index) -> const FunctionConstant* {
                                  auto& m = *static_cast<const std::map<int, FunctionConstant>*>(ctx);
                                  auto it = m.find(index);
                                  return it == m.end() ? nullptr : &it->second;
                                }};
  for (ConstantInit* c = k.constants->head; c; c = c->next) c->apply(*c, lookup);
}

// The launch's bank-conflict report from every worker's per-site statistics: totals, the worst
// site, and the sites with the most excess ways (ways beyond 1, summed), symbolised to their
// source lines and merged by line (unrolled copies of one access have their own addresses).
BankConflicts bank_conflicts(const std::vector<std::unique_ptr<Worker>>& workers) {
  constexpr size_t kListed = 12;
  std::map<void*, bank::SiteStats> by_pc;
  for (auto& w : workers)
    for (const bank::SiteStats& s : w->banks->sites()) {
      bank::SiteStats& m = by_pc.try_emplace(s.pc, bank::SiteStats{s.pc, s.write, s.width}).first->second;
      m.width = std::max(m.width, s.width);
      m.instructions += s.instructions;
      m.ways_sum += s.ways_sum;
      m.worst = std::max(m.worst, s.worst);
    }
  BankConflicts r;
  r.counted = true;
  std::vector<bank::SiteStats> sites;
  const bank::SiteStats* worst = nullptr;
  for (auto& [pc, s] : by_pc) {
    r.instructions += s.instructions;
    r.ways_sum += s.ways_sum;
    if (!worst || s.worst > worst->worst || (s.worst == worst->worst && s.instructions > worst->instructions))
      worst = &s;
    if (s.worst > 1) sites.push_back(s);
  }
  if (worst) {
    r.worst = worst->worst;
    r.worst_site = mem::describe_pc_chain(worst->pc);
  }
  std::sort(sites.begin(), sites.end(), [](const bank::SiteStats& a, const bank::SiteStats& b) {
    return a.ways_sum - a.instructions > b.ways_sum - b.instructions;
  });
  size_t symbolised = 0;  // addr2line per address is slow: the 32 worst addresses are listed
  for (const bank::SiteStats& s : sites) {
    if (++symbolised > 32) break;
    const std::string where = mem::describe_pc_chain(s.pc);
    auto same = std::find_if(r.sites.begin(), r.sites.end(), [&](const BankConflictSite& x) {
      return x.where == where && x.write == s.write;
    });
    if (same == r.sites.end()) {
      if (r.sites.size() >= kListed) continue;  // listed: the worst kListed lines
      r.sites.push_back(BankConflictSite{where, s.write, s.width, 0, 0, 0});
      same = r.sites.end() - 1;
    }
    same->width = std::max(same->width, s.width);
    same->instructions += s.instructions;
    same->ways_sum += s.ways_sum;
    same->worst = std::max(same->worst, s.worst);
  }
  return r;
}

// Checks every parameter the kernel declares against what the dispatch binds.
void check_bindings(const KernelRegistration& k, const Dispatch& d) {
  for (int i = 0; i < k.param_count; ++i) {
    const ParamDesc& p = k.params[i];
    if (p.kind != ParamKind::Buffer && p.kind != ParamKind::Threadgroup) continue;
    if (p.enabled && !p.enabled()) continue;
    if (p.index < 0 || p.index >= 32) invalid(d, "parameter index out of range");
    bool bound = p.kind == ParamKind::Buffer ? (d.buffers.count(p.index) || d.bytes.count(p.index))
                                            : d.threadgroup_memory.count(p.index) != 0;
    if (!bound)
      invalid(d, std::string("parameter '") + p.name + "' [[" + param_kind_name(p.kind) + "(" +
                     std::to_string(p.index) + ")]] is not bound (" + k.file + ":" + std::to_string(k.line) + ")");
  }
  for (auto& [i, b] : d.buffers)
    if (d.bytes.count(i)) invalid(d, "buffer(" + std::to_string(i) + ") is bound both as a buffer and as bytes");
}

}  // namespace

LaunchReport run(const Dispatch& d, const RunOptions& options) {
  std::lock_guard<std::mutex> lock(g_dispatch_mutex);
  auto t0 = std::chrono::steady_clock::now();
  const KernelRegistration* k = find_kernel(d);

  auto launch = std::make_unique<Launch>();
  launch->kernel = k;
  launch->options = options;
  uint64_t groups = 1;
  uint32_t threads = 1;
  for (int i = 0; i < 3; ++i) {
    if (d.threads_per_threadgroup[i] == 0) invalid(d, "threads_per_threadgroup has a zero dimension");
    launch->geometry.threadgroups[i] = d.threadgroups[i];
    launch->geometry.threads_per_threadgroup[i] = d.threads_per_threadgroup[i];
    groups *= d.threadgroups[i];
    threads *= d.threads_per_threadgroup[i];
  }
  if (threads > 1024) invalid(d, std::to_string(threads) + " threads per threadgroup (the limit is 1024)");
  launch->threads_per_group = threads;
  launch->geometry.simdgroups_per_threadgroup = (threads + kSimdWidth - 1) / kSimdWidth;
  launch->total_groups = groups;

  apply_constants(*k, d);
  check_bindings(*k, d);

  // Dynamic threadgroup memory, 16-byte aligned blocks in index order.
  uint32_t tg = 0;
  for (auto& [i, bytes] : d.threadgroup_memory) {
    if (i < 0 || i >= 32) invalid(d, "threadgroup index out of range");
    launch->tg_offsets[i] = tg;
    launch->tg_bound |= 1u << i;
    tg += (bytes + 15) / 16 * 16;
  }
  if (tg > kMaxThreadgroupMemory)
    throw Error(Error::Kind::ThreadgroupMemoryLimit, d.kernel,
                "kernel '" + d.kernel + "': [[threadgroup(i)]] arguments need " + std::to_string(tg) +
                    " bytes, over the " + std::to_string(kMaxThreadgroupMemory) + "-byte limit");
  launch->tg_dynamic_bytes = tg;

  int nworkers = int(std::max<uint64_t>(1, std::min<uint64_t>(uint64_t(std::max(1, options.workers)), groups)));

  // Memory: staged between red zones (bounds checked, counted) or bound directly.
  mem::Arena arena;
  std::vector<std::vector<uint8_t>> bytes_copies;  // direct mode: kernels get their own copy
  std::vector<std::unique_ptr<char[]>> tg_direct;
  std::vector<char*> tg_mem(size_t(nworkers), nullptr);
  std::vector<int> tg_regions;
  if (options.check_bounds) {
    // Aliased buffers (overlapping external ranges) share one staged region.
    struct Ext {
      int index;
      uintptr_t lo, hi;
    };
    std::vector<Ext> ext;
    for (auto& [i, b] : d.buffers) {
      if (i < 0 || i >= 32) invalid(d, "buffer index out of range");
      uintptr_t lo = reinterpret_cast<uintptr_t>(b.data);
      ext.push_back({i, lo, lo + b.bytes});
    }
    std::sort(ext.begin(), ext.end(), [](const Ext& a, const Ext& b) { return a.lo < b.lo; });
    std::vector<std::pair<int, uintptr_t>> placed(ext.size());  // (region, its external base)
    for (size_t j = 0; j < ext.size();) {
      size_t e = j + 1;
      uintptr_t hi = ext[j].hi;
      while (e < ext.size() && ext[e].lo < hi) hi = std::max(hi, ext[e++].hi);
      int region = arena.add_region(reinterpret_cast<void*>(ext[j].lo), hi - ext[j].lo);
      for (size_t q = j; q < e; ++q) placed[q] = {region, ext[j].lo};
      j = e;
    }
    std::vector<int> byte_regions;
    for (auto& [i, v] : d.bytes) byte_regions.push_back(arena.add_region(const_cast<uint8_t*>(v.data()), v.size()));
    for (int w = 0; w < nworkers; ++w) tg_regions.push_back(arena.add_region(nullptr, kMaxThreadgroupMemory));
    // A [[buffer(i), function_constant(c)]] parameter whose constant is off: Metal binds nothing
    // there and the kernel may not touch it. It points at an empty region between red zones, so
    // any access is reported out of bounds, naming the parameter.
    std::vector<std::pair<const ParamDesc*, int>> absent;
    for (int i = 0; i < k->param_count; ++i) {
      const ParamDesc& p = k->params[i];
      if (p.kind == ParamKind::Buffer && p.enabled && !p.enabled() && !d.buffers.count(p.index) &&
          !d.bytes.count(p.index))
        absent.push_back({&p, arena.add_region(nullptr, 0)});
    }
    arena.map();
    for (auto& [p, region] : absent) {
      char* at = arena.staged(region);
      launch->buffers[p->index] = at;
      mem::Binding bind;
      bind.begin = reinterpret_cast<uintptr_t>(at);
      bind.end = bind.begin;
      bind.name = std::string("absent parameter '") + p->name + "' (its function constant is off)";
      bind.index = p->index;
      bind.size = 0;
      arena.add_binding(bind);
    }
    for (size_t j = 0; j < ext.size(); ++j) {
      const DeviceBuffer& b = d.buffers.at(ext[j].index);
      char* p = arena.staged(placed[j].first) + (ext[j].lo - placed[j].second);
      launch->buffers[ext[j].index] = p;
      mem::Binding bind;
      bind.begin = reinterpret_cast<uintptr_t>(p);
      bind.end = bind.begin + b.bytes;
      bind.name = b.name.empty() ? "buffer(" + std::to_string(ext[j].index) + ")" : b.name;
      bind.index = ext[j].index;
      bind.size = b.bytes;
      arena.add_binding(bind);
    }
    size_t q = 0;
    for (auto& [i, v] : d.bytes) {
      if (i < 0 || i >= 32) invalid(d, "buffer index out of range");
      char* p = arena.staged(byte_regions[q++]);
      launch->buffers[i] = p;
      mem::Binding bind;
      bind.begin = reinterpret_cast<uintptr_t>(p);
      bind.end = bind.begin + v.size();
      bind.name = "bytes(" + std::to_string(i) + ")";
      bind.index = i;
      bind.set_bytes = true;
      bind.size = v.size();
      arena.add_binding(bind);
    }
    for (int w = 0; w < nworkers; ++w) {
      tg_mem[size_t(w)] = arena.staged(tg_regions[size_t(w)]);
      mem::Binding bind;
      bind.begin = reinterpret_cast<uintptr_t>(tg_mem[size_t(w)]);
      bind.end = bind.begin + tg;
      bind.name = "threadgroup memory";
      bind.threadgroup = true;
      bind.size = kMaxThreadgroupMemory;
      arena.add_binding(bind);
    }
  } else {
    for (auto& [i, b] : d.buffers) launch->buffers[i] = b.data;
    for (auto& [i, v] : d.bytes) {
      bytes_copies.push_back(v);
      launch->buffers[i] = bytes_copies.back().data();
    }
    for (int w = 0; w < nworkers; ++w) {
      tg_direct.emplace_back(new char[kMaxThreadgroupMemory]);
      tg_mem[size_t(w)] = tg_direct.back().get();
    }
  }

  std::vector<std::unique_ptr<Worker>> workers;
  for (int w = 0; w < nworkers; ++w) workers.emplace_back(new Worker(*launch, tg_mem[size_t(w)]));
  if (options.check_bounds) {
    arena.activate();  // sorts bindings: find each worker's threadgroup binding afterwards
    size_t nb = arena.bindings().size();
    for (auto& w : workers) {
      w->mem_counters.read.assign(nb, 0);
      w->mem_counters.written.assign(nb, 0);
      w->mem_counters.loads.assign(nb, {});
      w->mem_counters.wide_read.assign(nb, 0);
    }
    for (auto& b : arena.bindings())
      if (b.threadgroup)
        for (int w = 0; w < nworkers; ++w)
          if (reinterpret_cast<char*>(b.begin) == tg_mem[size_t(w)]) workers[size_t(w)]->tg_binding = &b;
  }

  auto body = [&](Worker* w) {
    mem::set_thread_counters(options.check_bounds ? &w->mem_counters : nullptr);
    w->run();
    mem::set_thread_counters(nullptr);
  };
  if (nworkers == 1) {
    body(workers[0].get());
  } else {
    std::vector<std::thread> threads_;
    for (auto& w : workers) threads_.emplace_back(body, w.get());
    for (auto& t : threads_) t.join();
  }
  if (options.check_bounds) arena.deactivate();

  // Report.
  LaunchReport r;
  r.kernel = d.kernel;
  r.bounds_checked = options.check_bounds;
  std::vector<uint64_t> read, written;
  std::vector<std::array<uint64_t, mem::kLoadWidths>> loads;
  std::vector<uint64_t> wide;
  const std::vector<std::string> event_names_now = event_names();
  for (auto& w : workers) {
    for (size_t e = 0; e < event_names_now.size() && e < size_t(rt::kMaxEvents); ++e)
      if (w->counters.events[e]) r.events[event_names_now[e]] += w->counters.events[e];
    r.threadgroups += w->counters.threadgroups;
    r.threads += w->counters.threads;
    r.simdgroup_mma += w->counters.mma;
    r.threadgroup_barriers += w->counters.barriers;
    r.simd_collectives += w->counters.collectives;
    r.dead_work.mma += w->counters.dead_mma;
    r.dead_work.collectives += w->counters.dead_collectives;
    r.threadgroup_memory_bytes = std::max(r.threadgroup_memory_bytes, w->tg_used_max);
    if (options.check_bounds) {
      read.resize(w->mem_counters.read.size());
      written.resize(read.size());
      loads.resize(read.size());
      wide.resize(read.size());
      for (size_t i = 0; i < read.size(); ++i) {
        wide[i] += w->mem_counters.wide_read[i];
        read[i] += w->mem_counters.read[i];
        written[i] += w->mem_counters.written[i];
        for (int k = 0; k < mem::kLoadWidths; ++k) loads[i][k] += w->mem_counters.loads[i][k];
      }
    }
  }
  if (options.check_bounds) {
    BufferTraffic tgt;
    tgt.name = "threadgroup memory";
    tgt.size = r.threadgroup_memory_bytes;
    auto& bs = arena.bindings();
    for (size_t i = 0; i < bs.size(); ++i) {
      if (bs[i].threadgroup) {
        tgt.bytes_read += read[i];
        tgt.bytes_written += written[i];
        continue;
      }
      BufferTraffic t;
      t.index = bs[i].index;
      t.name = bs[i].name;
      t.set_bytes = bs[i].set_bytes;
      t.size = bs[i].size;
      t.bytes_read = read[i];
      t.bytes_written = written[i];
      for (int k = 0; k < mem::kLoadWidths; ++k) t.loads_by_width[k] = loads[i][k];
      t.bytes_read_wide = wide[i];
      r.buffers.push_back(t);
    }
    std::sort(r.buffers.begin(), r.buffers.end(), [](auto& a, auto& b) { return a.index < b.index; });
    r.buffers.push_back(tgt);
    arena.copy_back();
    if (options.count_bank_conflicts) r.bank_conflicts = bank_conflicts(workers);
  } else {
    for (auto& [i, b] : d.buffers) r.buffers.push_back({i, b.name, false, b.bytes, 0, 0});
  }
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  // A race first: it can be the cause of any other failure (a garbage index, a divergence).
  if (options.check_bounds && options.check_races) {
    uint64_t total = 0;
    std::ostringstream s;
    size_t listed = 0;
    std::set<std::string> seen;  // unrolled copies of one access share its lines: list them once
    for (auto& w : workers) {
      total += w->races->total();
      for (const race::Record& rec : w->races->records()) {
        if (listed >= size_t(std::max(1, options.max_reports))) break;
        const std::string first = mem::describe_pc(rec.first.pc), second = mem::describe_pc(rec.second.pc);
        if (!seen.insert(std::string(race::kind_name(rec.kind)) + first + "|" + second).second) continue;
        ++listed;
        bool same_simd = rec.first.thread / kSimdWidth == rec.second.thread / kSimdWidth;
        s << "\n  " << race::kind_name(rec.kind) << " on " << w->describe_threadgroup_offset(rec.offset)
          << " in threadgroup (" << rec.tgid[0] << ", " << rec.tgid[1] << ", " << rec.tgid[2] << "): "
          << (rec.kind == race::Kind::ReadAfterWrite || rec.kind == race::Kind::WriteAfterWrite ? "write" : "read")
          << " by " << race::describe_access(rec.first, first) << ", then "
          << (rec.kind == race::Kind::ReadAfterWrite ? "read" : "write") << " of " << rec.size << " bytes by "
          << race::describe_access(rec.second, second) << ", with no threadgroup_barrier"
          << (same_simd ? " or simdgroup_barrier" : "") << " (mem_threadgroup) between them";
      }
    }
    if (total)
      throw Error(Error::Kind::DataRace, d.kernel,
                  "data race on threadgroup memory in kernel '" + d.kernel + "': " + std::to_string(total) +
                      " unordered access(es)" + s.str(),
                  r);
  }
  for (auto& w : workers)
    if (w->failure) throw Error(w->failure->kind, d.kernel, w->failure->message, r);

  if (options.check_bounds) {
    uint64_t total = 0;
    std::vector<mem::OobRecord> recs;
    for (auto& w : workers) {
      total += w->mem_counters.oob_total;
      for (auto& o : w->mem_counters.oob)
        if (recs.size() < size_t(std::max(1, options.max_reports))) recs.push_back(o);
    }
    if (total) {
      std::ostringstream s;
      s << "out-of-bounds memory access in kernel '" << d.kernel << "': " << total << " access(es)";
      for (auto& o : recs) {
        const mem::Binding& b = arena.bindings()[size_t(o.binding)];
        s << "\n  " << (o.write ? "write" : "read") << " of " << o.size << " bytes ";
        if (o.offset < 0) s << -o.offset << " bytes before the start of ";
        else s << "at byte " << o.offset << ", " << (o.offset + o.size - int64_t(b.end - b.begin)) << " bytes past the end of ";
        s << b.name;
        if (!b.threadgroup) s << " [[buffer(" << b.index << ")]]";
        s << " (" << (b.end - b.begin) << " bytes), thread (" << o.tid[0] << ", " << o.tid[1] << ", " << o.tid[2]
          << ") of threadgroup (" << o.tgid[0] << ", " << o.tgid[1] << ", " << o.tgid[2] << ")";
        std::string at = mem::describe_pc(o.pc);
        if (!at.empty()) s << " at " << at;
      }
      throw Error(Error::Kind::OutOfBounds, d.kernel, s.str(), r);
    }
  }
  return r;
}

const char* kind_name(Error::Kind kind) {
  switch (kind) {
    case Error::Kind::KernelNotFound: return "KernelNotFound";
    case Error::Kind::InvalidDispatch: return "InvalidDispatch";
    case Error::Kind::ThreadgroupMemoryLimit: return "ThreadgroupMemoryLimit";
    case Error::Kind::Divergence: return "Divergence";
    case Error::Kind::Deadlock: return "Deadlock";
    case Error::Kind::OutOfBounds: return "OutOfBounds";
    case Error::Kind::KernelFailure: return "KernelFailure";
    case Error::Kind::DataRace: return "DataRace";
  }
  return "Unknown";
}

}  // namespace msl_sim
