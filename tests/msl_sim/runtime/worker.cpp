#include "worker.h"

#include <atomic>
#include <mutex>

#include <algorithm>
#include <cstring>
#include <map>
#include <sstream>

namespace msl_sim {

namespace rt {
thread_local Thread* t_thread __attribute__((tls_model("initial-exec"))) = nullptr;
}  // namespace rt

namespace {

Fiber* current_fiber() { return static_cast<Fiber*>(rt::t_thread->worker); }

bool same_site(const std::source_location& a, const std::source_location& b) {
  return a.line() == b.line() && a.column() == b.column() &&
         (a.file_name() == b.file_name() || std::strcmp(a.file_name(), b.file_name()) == 0);
}

std::string site_str(const std::source_location& s) {
  return std::string(s.file_name()) + ":" + std::to_string(s.line());
}

// "0-15, 32, 40-47"
std::string ranges(std::vector<uint32_t> v) {
  std::sort(v.begin(), v.end());
  std::string out;
  for (size_t i = 0; i < v.size();) {
    size_t j = i;
    while (j + 1 < v.size() && v[j + 1] == v[j] + 1) ++j;
    if (!out.empty()) out += ", ";
    out += std::to_string(v[i]);
    if (j > i) out += "-" + std::to_string(v[j]);
    i = j + 1;
  }
  return out;
}

void fiber_main(void* arg) {
  Fiber* f = static_cast<Fiber*>(arg);
  rt::t_thread = &f->t;
  f->state = Fiber::State::Running;
  Worker* w = f->w;
  try {
    const KernelRegistration* k = w->launch().kernel;
    k->thunk(k->params);
  } catch (const std::exception& e) {
    w->fail(f, Error::Kind::KernelFailure, std::string("exception in kernel: ") + e.what());
  } catch (...) {
    w->fail(f, Error::Kind::KernelFailure, "unknown exception in kernel");
  }
  w->exit_fiber(f);
}

}  // namespace

Worker::Worker(Launch& launch, char* tg_memory)
    : launch_(launch), tg_base_(tg_memory), tg_used_(launch.tg_dynamic_bytes) {
  uint32_t n = launch.threads_per_group;
  stacks_ = fiber::acquire_stacks(n, launch.options.stack_bytes);
  fibers_.resize(n);
  sgs_.resize((n + kSimdWidth - 1) / kSimdWidth);
  queue_.resize(n + 1);
  for (int i = 0; i < 32; ++i) tg_ptrs_[i] = tg_base_ + launch.tg_offsets[i];
  tg_used_max = tg_used_;
  mem_counters.max_reports = size_t(std::max(1, launch.options.max_reports));
  simd_flags_.assign(sgs_.size(), 0);
  if (launch.options.check_bounds && launch.options.check_races) {
    // Pairs of code addresses; unrolled copies of one pair of lines are merged when reported.
    races = std::make_unique<race::Shadow>(4 * mem_counters.max_reports);
    mem_counters.races = races.get();
  }
  if (launch.options.check_bounds && launch.options.count_bank_conflicts) {
    banks = std::make_unique<bank::Model>(uint32_t(sgs_.size()));
    mem_counters.banks = banks.get();
  }
}

Worker::~Worker() { fiber::release_stacks(stacks_); }

void Worker::run() {
  while (!launch_.stop.load(std::memory_order_relaxed)) {
    uint64_t i = launch_.next_group.fetch_add(1);
    if (i >= launch_.total_groups) break;
    if (!run_group(i)) {
      launch_.stop = true;
      break;
    }
  }
  rt::t_thread = nullptr;
}

bool Worker::run_group(uint64_t linear) {
  const rt::Geometry& g = launch_.geometry;
  tgid_[0] = uint32_t(linear % g.threadgroups[0]);
  tgid_[1] = uint32_t(linear / g.threadgroups[0] % g.threadgroups[1]);
  tgid_[2] = uint32_t(linear / (uint64_t(g.threadgroups[0]) * g.threadgroups[1]));
  rng_ = (launch_.options.seed ^ ((linear + 1) * 0x9E3779B97F4A7C15ull)) | 1;
  if (launch_.options.poison_threadgroup_memory) std::memset(tg_base_, 0xFF, kMaxThreadgroupMemory);
  if (races) races->begin_group(tgid_);

  const uint32_t* tpt = g.threads_per_threadgroup;
  uint32_t n = launch_.threads_per_group;
  for (auto& sg : sgs_) {
    sg.live = 0;
    sg.arrived = 0;
    sg.dead = 0;
  }
  for (uint32_t i = 0; i < n; ++i) {
    Fiber& f = fibers_[i];
    f.w = this;
    f.t.tid[0] = i % tpt[0];
    f.t.tid[1] = i / tpt[0] % tpt[1];
    f.t.tid[2] = i / (tpt[0] * tpt[1]);
    std::memcpy(f.t.tgid, tgid_, sizeof tgid_);
    f.t.index = i;
    f.t.lane = i % kSimdWidth;
    f.t.simd = i / kSimdWidth;
    f.t.sg = &sgs_[f.t.simd];
    f.t.sg->index = f.t.simd;
    f.t.sg->live |= 1u << f.t.lane;
    f.t.geometry = &launch_.geometry;
    f.t.buffers = launch_.buffers;
    f.t.threadgroup = tg_ptrs_;
    f.t.worker = &f;
    f.state = Fiber::State::Ready;
    f.wait = Fiber::Wait::None;
    f.sp = fiber::init_stack(stacks_.top(i), &fiber_main, &f);
  }
  live_ = n;
  bar_arrived_ = 0;
  bar_flags_ = 0;
  std::fill(simd_flags_.begin(), simd_flags_.end(), 0u);
  q_head_ = q_size_ = 0;
  scratch_.clear();
  for (uint32_t i = 0; i < n; ++i) scratch_.push_back(&fibers_[i]);
  wake(scratch_);

  while (!failure) {
    Fiber* f = pop();
    if (!f) break;
    msl_sim_fiber_switch(&sched_sp_, f->sp);
  }
  rt::t_thread = nullptr;
  if (banks) banks->sync_all();  // accesses since the last rendezvous
  if (!failure && live_ > 0) failure = Failure{Error::Kind::Deadlock, deadlock_report()};
  if (failure) return false;
  counters.threadgroups++;
  counters.threads += n;
  return true;
}

void Worker::push(Fiber* f) {
  queue_[(q_head_ + q_size_) % queue_.size()] = f;
  ++q_size_;
}

Fiber* Worker::pop() {
  if (!q_size_) return nullptr;
  Fiber* f = queue_[q_head_];
  q_head_ = (q_head_ + 1) % queue_.size();
  --q_size_;
  return f;
}

// Makes fibers runnable in the order the schedule asks for (they arrive sorted by index).
void Worker::wake(std::vector<Fiber*>& fs) {
  switch (launch_.options.schedule) {
    case Schedule::InOrder: break;
    case Schedule::Reverse: std::reverse(fs.begin(), fs.end()); break;
    case Schedule::Random:
      for (size_t i = fs.size(); i > 1; --i) {
        rng_ ^= rng_ << 13;
        rng_ ^= rng_ >> 7;
        rng_ ^= rng_ << 17;
        std::swap(fs[i - 1], fs[rng_ % i]);
      }
      break;
  }
  for (Fiber* f : fs) {
    f->state = Fiber::State::Ready;
    f->wait = Fiber::Wait::None;
    push(f);
  }
}

// Switches to the next runnable fiber (or the scheduler); returns when this fiber is woken.
void Worker::block(Fiber* f) {
  f->state = Fiber::State::Waiting;
  Fiber* next = pop();
  msl_sim_fiber_switch(&f->sp, next ? next->sp : sched_sp_);
  rt::t_thread = &f->t;
  f->state = Fiber::State::Running;
}

void Worker::exit_fiber(Fiber* f) {
  f->state = Fiber::State::Done;
  f->wait = Fiber::Wait::None;
  --live_;
  rt::SimdGroup& g = *f->t.sg;
  g.live &= ~(1u << f->t.lane);
  // Lanes that return drop out: a rendezvous that only waited for this thread completes now.
  if (g.arrived && g.arrived == g.live) complete_simd(g, nullptr);
  if (bar_arrived_ && bar_arrived_ == live_) complete_barrier(nullptr);
  Fiber* next = pop();
  void* dead_sp;
  msl_sim_fiber_switch(&dead_sp, next ? next->sp : sched_sp_);
  __builtin_unreachable();
}

void Worker::fail(Fiber* f, Error::Kind kind, const std::string& message) {
  if (!failure) failure = Failure{kind, message};
  void* dead_sp;
  (void)f;
  msl_sim_fiber_switch(&dead_sp, sched_sp_);
  __builtin_unreachable();
}

std::string Worker::where() const {
  std::ostringstream s;
  s << "kernel '" << launch_.kernel->name << "', threadgroup (" << tgid_[0] << ", " << tgid_[1] << ", "
    << tgid_[2] << ")";
  return s.str();
}

void Worker::simd_collective(Fiber* f, int op, rt::ComputeFn fn, const std::source_location& site,
                             unsigned barrier_flags) {
  rt::SimdGroup& g = *f->t.sg;
  if (g.arrived) {
    if (g.op != op || !same_site(g.site, site)) {
      std::vector<uint32_t> waiting;
      for (int l = 0; l < kSimdWidth; ++l)
        if (g.arrived >> l & 1u) waiting.push_back(uint32_t(l));
      std::ostringstream s;
      s << "divergent SIMD-group collectives in " << where() << ", simdgroup " << g.index << ": lanes "
        << ranges(waiting) << " wait at " << rt::op_name(g.op) << " (" << site_str(g.site) << "), lane "
        << f->t.lane << " reached " << rt::op_name(op) << " (" << site_str(site)
        << "). Every live lane of a SIMD-group must reach the same collective.";
      fail(f, Error::Kind::Divergence, s.str());
    }
  } else {
    g.op = op;
    g.compute = fn;
    g.site = site;
  }
  g.arrived |= 1u << f->t.lane;
  simd_flags_[g.index] |= barrier_flags;
  f->wait = Fiber::Wait::Simd;
  f->wait_op = op;
  f->wait_site = site;
  if (g.arrived == g.live) {
    complete_simd(g, f);
    return;
  }
  block(f);
}

void Worker::complete_simd(rt::SimdGroup& g, Fiber* self) {
  if (g.compute) g.compute(g);
  if (g.op == rt::kOpMma) counters.mma++;
  else counters.collectives++;
  if (g.dead & g.arrived) {  // lanes declared discarded took part (MSL_SIM_DEAD_WORK)
    const double share = double(__builtin_popcount(g.dead & g.arrived)) / __builtin_popcount(g.arrived);
    if (g.op == rt::kOpMma) counters.dead_mma += share;
    else if (g.op != rt::kOpSimdBarrier) counters.dead_collectives += share;
  }
  if (banks) banks->sync(g.index);
  if (g.op == rt::kOpSimdBarrier && races) races->simdgroup_barrier(g.index, simd_flags_[g.index]);
  simd_flags_[g.index] = 0;
  scratch_.clear();
  uint32_t base = g.index * kSimdWidth;
  for (int l = 0; l < kSimdWidth; ++l) {
    if (!(g.arrived >> l & 1u)) continue;
    Fiber* o = &fibers_[base + l];
    if (o != self) scratch_.push_back(o);
  }
  g.arrived = 0;
  if (self) self->wait = Fiber::Wait::None;
  wake(scratch_);
}

void Worker::threadgroup_barrier(Fiber* f, unsigned flags, const std::source_location& site) {
  if (bar_arrived_ && !same_site(bar_site_, site)) {
    std::vector<uint32_t> waiting;
    for (const Fiber& o : fibers_)
      if (o.state == Fiber::State::Waiting && o.wait == Fiber::Wait::Barrier) waiting.push_back(o.t.index);
    std::ostringstream s;
    s << "divergent threadgroup barriers in " << where() << ": threads " << ranges(waiting)
      << " wait at threadgroup_barrier (" << site_str(bar_site_) << "), thread " << f->t.index
      << " reached threadgroup_barrier (" << site_str(site)
      << "). All threads of a threadgroup must reach the same barrier.";
    fail(f, Error::Kind::Divergence, s.str());
  }
  if (!bar_arrived_) bar_site_ = site;
  ++bar_arrived_;
  bar_flags_ |= flags;
  f->wait = Fiber::Wait::Barrier;
  f->wait_site = site;
  if (bar_arrived_ == live_) {
    complete_barrier(f);
    return;
  }
  block(f);
}

void Worker::complete_barrier(Fiber* self) {
  counters.barriers++;
  if (races) races->threadgroup_barrier(bar_flags_);
  if (banks) banks->sync_all();
  bar_flags_ = 0;
  scratch_.clear();
  for (Fiber& o : fibers_)
    if (&o != self && o.state == Fiber::State::Waiting && o.wait == Fiber::Wait::Barrier) scratch_.push_back(&o);
  bar_arrived_ = 0;
  if (self) self->wait = Fiber::Wait::None;
  wake(scratch_);
}

std::string Worker::deadlock_report() const {
  struct Group {
    std::string what;
    std::vector<uint32_t> threads;
  };
  std::map<std::string, Group> groups;
  for (const Fiber& f : fibers_) {
    if (f.state != Fiber::State::Waiting) continue;
    std::string what = f.wait == Fiber::Wait::Barrier ? "threadgroup_barrier" : rt::op_name(f.wait_op);
    std::string key = what + " (" + site_str(f.wait_site) + ")";
    if (f.wait == Fiber::Wait::Simd) key += " in simdgroup " + std::to_string(f.t.simd);
    groups[key].threads.push_back(f.t.index);
  }
  std::ostringstream s;
  s << "deadlock in " << where() << ": " << live_ << " live threads wait and none can proceed";
  for (const auto& [key, g] : groups)
    s << "\n  " << g.threads.size() << " thread(s) wait at " << key << ": threads " << ranges(g.threads);
  return s.str();
}

void* Worker::threadgroup_static(Fiber* f, const rt::TgSite& site, size_t bytes, size_t align) {
  for (const Static& s : statics_)
    if (s.site == &site) return tg_base_ + s.offset;
  size_t a = std::max<size_t>(align, 16);
  size_t offset = (tg_used_ + a - 1) / a * a;
  if (offset + bytes > kMaxThreadgroupMemory) {
    std::ostringstream s;
    s << "threadgroup memory of " << where() << " exceeds " << kMaxThreadgroupMemory << " bytes: "
      << launch_.tg_dynamic_bytes << " bytes of [[threadgroup(i)]] arguments";
    for (const Static& st : statics_)
      s << " + " << st.bytes << " (" << st.site->name << " at " << st.site->file << ":" << st.site->line << ")";
    s << " + " << bytes << " (" << site.name << " at " << site.file << ":" << site.line << ")";
    fail(f, Error::Kind::ThreadgroupMemoryLimit, s.str());
  }
  statics_.push_back(Static{&site, uint32_t(offset), uint32_t(bytes)});
  tg_used_ = uint32_t(offset + bytes);
  tg_used_max = std::max(tg_used_max, tg_used_);
  if (tg_binding) mem::set_binding_end(*tg_binding, reinterpret_cast<uintptr_t>(tg_base_) + tg_used_);
  return tg_base_ + offset;
}

std::string Worker::describe_threadgroup_offset(uint32_t offset) const {
  for (const Static& s : statics_)
    if (offset >= s.offset && offset < s.offset + s.bytes)
      return std::string("`") + s.site->name + "` (threadgroup variable at " + s.site->file + ":" +
             std::to_string(s.site->line) + "), byte " + std::to_string(offset - s.offset);
  int best = -1;  // the [[threadgroup(i)]] block starting last at or before offset
  for (int i = 0; i < 32; ++i)
    if ((launch_.tg_bound >> i & 1u) && launch_.tg_offsets[i] <= offset && offset < launch_.tg_dynamic_bytes &&
        (best < 0 || launch_.tg_offsets[i] > launch_.tg_offsets[best]))
      best = i;
  if (best >= 0)
    return "[[threadgroup(" + std::to_string(best) + ")]], byte " + std::to_string(offset - launch_.tg_offsets[best]);
  return "threadgroup memory byte " + std::to_string(offset);
}

// ---- the rt:: entry points called by the compat header ----

namespace rt {

void simd_collective(int op, ComputeFn compute, const std::source_location& site) {
  Fiber* f = current_fiber();
  f->w->simd_collective(f, op, compute, site);
}

void threadgroup_barrier(unsigned flags, const std::source_location& site) {
  Fiber* f = current_fiber();
  f->w->threadgroup_barrier(f, flags, site);
}

void simdgroup_barrier(unsigned flags, const std::source_location& site) {
  Fiber* f = current_fiber();
  f->w->simd_collective(f, kOpSimdBarrier, nullptr, site, flags);
}

void* threadgroup_static(const TgSite& site, size_t bytes, size_t align) {
  Fiber* f = current_fiber();
  return f->w->threadgroup_static(f, site, bytes, align);
}

namespace {
std::mutex g_event_mutex;
std::vector<std::string>& g_event_names() {
  static auto* names = new std::vector<std::string>();  // leaked, like the registry
  return *names;
}
// Literal addresses seen so far and their ids (one name may sit at several addresses: one
// literal per translated file).
constexpr int kMaxLiterals = 256;
std::atomic<const char*> g_literal_address[kMaxLiterals];
int g_literal_id[kMaxLiterals];
std::atomic<int> g_literal_count{0};

int event_id(const char* name) {
  const int n = g_literal_count.load(std::memory_order_acquire);
  for (int i = 0; i < n; ++i)
    if (g_literal_address[i].load(std::memory_order_relaxed) == name) return g_literal_id[i];
  std::lock_guard<std::mutex> lock(g_event_mutex);
  auto& names = g_event_names();
  int id = -1;
  for (size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) id = int(i);
  if (id < 0 && names.size() < size_t(kMaxEvents)) {
    names.push_back(name);
    id = int(names.size()) - 1;
  }
  if (id < 0) id = kMaxEvents - 1;  // out of slots: lumped into the last event
  const int slot = g_literal_count.load(std::memory_order_relaxed);
  if (slot < kMaxLiterals) {
    g_literal_address[slot].store(name, std::memory_order_relaxed);
    g_literal_id[slot] = id;
    g_literal_count.store(slot + 1, std::memory_order_release);
  }
  return id;
}
}  // namespace

void count_event(const char* name, unsigned long long n) {
  current_fiber()->w->counters.events[event_id(name)] += n;
}

void mark_dead_work(bool dead) {
  const Thread* t = t_thread;
  if (dead) t->sg->dead |= 1u << t->lane;
  else t->sg->dead &= ~(1u << t->lane);
}

void kernel_fail(const char* message, const std::source_location& site) {
  Fiber* f = current_fiber();
  f->w->fail(f, Error::Kind::KernelFailure, std::string(message) + " (" + site_str(site) + ")");
}

const char* op_name(int op) {
  switch (op) {
    case kOpSimdBarrier: return "simdgroup_barrier";
    case kOpSum: return "simd_sum";
    case kOpProduct: return "simd_product";
    case kOpMin: return "simd_min";
    case kOpMax: return "simd_max";
    case kOpAnd: return "simd_and";
    case kOpOr: return "simd_or";
    case kOpXor: return "simd_xor";
    case kOpPrefixInclusiveSum: return "simd_prefix_inclusive_sum";
    case kOpPrefixExclusiveSum: return "simd_prefix_exclusive_sum";
    case kOpPrefixInclusiveProduct: return "simd_prefix_inclusive_product";
    case kOpPrefixExclusiveProduct: return "simd_prefix_exclusive_product";
    case kOpShuffle: return "simd_shuffle";
    case kOpShuffleXor: return "simd_shuffle_xor";
    case kOpShuffleUp: return "simd_shuffle_up";
    case kOpShuffleDown: return "simd_shuffle_down";
    case kOpShuffleRotateUp: return "simd_shuffle_rotate_up";
    case kOpShuffleRotateDown: return "simd_shuffle_rotate_down";
    case kOpBroadcast: return "simd_broadcast";
    case kOpBroadcastFirst: return "simd_broadcast_first";
    case kOpBallot: return "simd_ballot";
    case kOpAll: return "simd_all";
    case kOpAny: return "simd_any";
    case kOpMma: return "simdgroup_multiply_accumulate";
    default: return "collective";
  }
}

}  // namespace rt

std::vector<std::string> event_names() {
  std::lock_guard<std::mutex> lock(rt::g_event_mutex);
  return rt::g_event_names();
}
}  // namespace msl_sim
