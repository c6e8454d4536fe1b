// Threadgroup-memory bank conflicts under a 32-bank x 4-byte model (counted only when
// RunOptions::count_bank_conflicts is on; it rides on the bounds checker's callback, like the
// race detector).
//
// A SIMD-group's 32 lanes issue a load or store together; the simulator runs lanes one after
// another, so one hardware instruction is rebuilt from its lanes: the n-th execution of a code
// address by each lane of a SIMD-group since the SIMD-group's last rendezvous (a collective, an
// MMA, a simdgroup_barrier or a threadgroup_barrier it took part in) is one instruction. Lanes
// that diverge between rendezvous points can be grouped wrongly; the project's kernels keep
// their threadgroup accesses uniform per SIMD-group.
//
// Ways of an instruction: threadgroup memory serves 128 bytes (32 banks of 4 bytes) per pass, so
// an instruction whose lanes access w bytes each is split into passes of 128 / w lanes (32 for
// w <= 4, 16 for 8-byte, 8 for 16-byte accesses, by lane index); in each pass, a bank's ways are
// the distinct 4-byte words of that bank the pass touches (lanes on the same word are one
// broadcast access), and the instruction's ways are the most of any bank in any pass. 1 is
// conflict-free; a 16-byte-per-lane contiguous access is 1, not 4.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "msl_sim/abi.h"

namespace msl_sim::bank {

constexpr uint32_t kBanks = 32;
constexpr uint32_t kBankBytes = 4;

// Per code address (one load or store of the compiled kernel).
struct SiteStats {
  void* pc = nullptr;
  bool write = false;
  uint32_t width = 0;         // bytes per lane
  uint64_t instructions = 0;  // SIMD-group instructions executed
  uint64_t ways_sum = 0;      // their ways, summed (mean = ways_sum / instructions)
  uint32_t worst = 0;
};

// Ways of one instruction: lane offsets (bytes into threadgroup memory) of the lanes in `lanes`.
uint32_t instruction_ways(const uint32_t offset[kSimdWidth], uint32_t lanes, uint32_t width,
                          std::vector<uint32_t>& scratch);

// One per worker.
class Model {
 public:
  explicit Model(uint32_t simdgroups) : groups_(simdgroups) {}
  void access(uint32_t offset, size_t n, bool write, void* pc, const rt::Thread& t);
  // SIMD-group `simd` met at a rendezvous: its pending instructions are complete.
  void sync(uint32_t simd);
  void sync_all();
  const std::vector<SiteStats>& sites() const { return stats_; }

 private:
  struct Instance {
    uint32_t offset[kSimdWidth];
    uint32_t lanes;
  };
  struct Pending {  // one code address since the SIMD-group's last rendezvous
    void* pc;
    bool write;
    uint32_t width;
    uint32_t next[kSimdWidth];  // per lane: executions so far = the index of its next instance
    size_t used;
    std::vector<Instance> instances;
  };
  struct Group {
    std::vector<Pending> pending;  // [0, live) in use; capacity kept between rendezvous
    size_t live = 0;
  };
  std::vector<Group> groups_;
  std::unordered_map<void*, size_t> index_;  // pc -> stats_
  std::vector<SiteStats> stats_;
  std::vector<uint32_t> scratch_;
};

}  // namespace msl_sim::bank
