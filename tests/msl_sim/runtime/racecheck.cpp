#include "racecheck.h"

#include <new>

namespace msl_sim::race {
namespace {

constexpr unsigned kMemThreadgroup = 2;  // metal::mem_flags::mem_threadgroup

uint32_t simd_of(uint16_t thread) { return thread / kSimdWidth; }

}  // namespace

Shadow::Shadow(size_t max_reports) : max_reports_(max_reports) {
  // calloc of this size maps fresh zero pages: only the bytes a kernel uses are touched.
  cells_ = static_cast<Cell*>(std::calloc(kMaxThreadgroupMemory, sizeof(Cell)));
  if (!cells_) throw std::bad_alloc();
}

Shadow::~Shadow() { std::free(cells_); }

void Shadow::begin_group(const uint32_t tgid[3]) {
  ++epoch_;
  for (int i = 0; i < 3; ++i) tgid_[i] = tgid[i];
}

void Shadow::threadgroup_barrier(unsigned flags) {
  if (flags & kMemThreadgroup) ++epoch_;
}

void Shadow::simdgroup_barrier(uint32_t simd, unsigned flags) {
  if (flags & kMemThreadgroup) ++sepoch_[simd];
}

void Shadow::report(Kind kind, uint32_t offset, size_t n, const Access& first, const Access& second) {
  ++total_;
  for (const Record& r : records_)
    if (r.kind == kind && r.first.pc == first.pc && r.second.pc == second.pc) return;  // one per pair of sites
  if (records_.size() >= max_reports_) return;
  Record r{kind, offset, uint32_t(n), first, second, {tgid_[0], tgid_[1], tgid_[2]}};
  records_.push_back(r);
}

void Shadow::access(uint32_t offset, size_t n, bool write, void* pc, const rt::Thread& t) {
  const uint16_t me = uint16_t(t.index);
  const uint32_t simd = t.simd;
  const uint32_t now = sepoch_[simd];
  const uint32_t e = epoch_;
  const Access mine{pc, now, me};
  // Unordered with this access, given the same threadgroup epoch: another thread, and not a
  // lane of this SIMD-group that a simdgroup_barrier has since separated from us.
  auto unordered = [&](const Access& a) {
    return a.thread != kNoThread && a.thread != me && (simd_of(a.thread) != simd || a.sepoch == now);
  };
  bool reported = false;  // one report per access, at its first racing byte
  for (size_t k = 0; k < n; ++k) {
    Cell& c = cells_[offset + k];
    if (!reported && c.w_epoch == e && unordered(c.w)) {
      report(write ? Kind::WriteAfterWrite : Kind::ReadAfterWrite, offset + uint32_t(k), n, c.w, mine);
      reported = true;
    }
    if (write) {
      if (!reported && c.r_epoch == e) {
        // A read of this epoch by another SIMD-group is unordered with us; else every read was
        // by our SIMD-group, and the latest one by another lane decides.
        const Access* racing = nullptr;
        if (simd_of(c.r.thread) != simd) racing = &c.r;
        else if (c.r_simd.thread != kNoThread && simd_of(c.r_simd.thread) != simd) racing = &c.r_simd;
        else if (const Access& latest = c.r.thread != me ? c.r : c.r_other; unordered(latest)) racing = &latest;
        if (racing) {
          report(Kind::WriteAfterRead, offset + uint32_t(k), n, *racing, mine);
          reported = true;
        }
      }
      c.w_epoch = e;
      c.w = mine;
      c.r_epoch = 0;  // later accesses are ordered after those reads or race with this write
    } else {
      if (c.r_epoch != e) {
        c.r_epoch = e;
        c.r_other = Access{};
        c.r_simd = Access{};
      } else if (c.r.thread != me) {
        if (simd_of(c.r.thread) != simd) c.r_simd = c.r;
        c.r_other = c.r;
      }
      c.r = mine;
    }
  }
}

const char* kind_name(Kind kind) {
  switch (kind) {
    case Kind::ReadAfterWrite: return "read after write";
    case Kind::WriteAfterRead: return "write after read";
    case Kind::WriteAfterWrite: return "write after write";
  }
  return "access";
}

std::string describe_access(const Access& a, const std::string& where) {
  return "thread " + std::to_string(a.thread) + " (simdgroup " + std::to_string(a.thread / kSimdWidth) + ", lane " +
         std::to_string(a.thread % kSimdWidth) + ") at " + (where.empty() ? std::string("an unknown line") : where);
}

}  // namespace msl_sim::race
