#include "bankcheck.h"

#include <algorithm>
#include <cstring>

namespace msl_sim::bank {

uint32_t instruction_ways(const uint32_t offset[kSimdWidth], uint32_t lanes, uint32_t width,
                          std::vector<uint32_t>& words) {
  const uint32_t pass_bytes = kBanks * kBankBytes;
  const uint32_t per_pass = std::clamp<uint32_t>(pass_bytes / std::max<uint32_t>(width, 1), 1, kSimdWidth);
  uint32_t worst = 0;
  for (uint32_t first = 0; first < kSimdWidth; first += per_pass) {
    words.clear();
    for (uint32_t l = first; l < first + per_pass && l < kSimdWidth; ++l) {
      if (!(lanes >> l & 1u)) continue;
      for (uint32_t w = offset[l] / kBankBytes; w <= (offset[l] + width - 1) / kBankBytes; ++w) words.push_back(w);
    }
    if (words.empty()) continue;
    std::sort(words.begin(), words.end());
    words.erase(std::unique(words.begin(), words.end()), words.end());
    uint32_t per_bank[kBanks] = {};
    for (uint32_t w : words) worst = std::max(worst, ++per_bank[w % kBanks]);
  }
  return worst;
}

void Model::access(uint32_t offset, size_t n, bool write, void* pc, const rt::Thread& t) {
  Group& g = groups_[t.simd];
  Pending* p = nullptr;
  for (size_t i = g.live; i-- > 0;)  // the latest sites first: loops revisit them
    if (g.pending[i].pc == pc && g.pending[i].write == write) {
      p = &g.pending[i];
      break;
    }
  if (!p) {
    if (g.live == g.pending.size()) g.pending.emplace_back();
    p = &g.pending[g.live++];
    p->pc = pc;
    p->write = write;
    p->width = 0;
    p->used = 0;
    std::memset(p->next, 0, sizeof p->next);
  }
  p->width = std::max(p->width, uint32_t(n));
  const size_t k = p->next[t.lane]++;
  if (k == p->used) {
    if (k == p->instances.size()) p->instances.emplace_back();
    p->instances[k].lanes = 0;
    ++p->used;
  }
  p->instances[k].offset[t.lane] = offset;
  p->instances[k].lanes |= 1u << t.lane;
}

void Model::sync(uint32_t simd) {
  Group& g = groups_[simd];
  for (size_t i = 0; i < g.live; ++i) {
    const Pending& p = g.pending[i];
    auto [it, added] = index_.try_emplace(p.pc, stats_.size());
    if (added) stats_.push_back(SiteStats{p.pc, p.write, p.width});
    SiteStats& s = stats_[it->second];
    s.width = std::max(s.width, p.width);
    for (size_t k = 0; k < p.used; ++k) {
      const uint32_t ways = instruction_ways(p.instances[k].offset, p.instances[k].lanes, p.width, scratch_);
      s.instructions++;
      s.ways_sum += ways;
      s.worst = std::max(s.worst, ways);
    }
  }
  g.live = 0;
}

void Model::sync_all() {
  for (uint32_t s = 0; s < groups_.size(); ++s) sync(s);
}

}  // namespace msl_sim::bank
