// LaunchReport formatting.
#include <sstream>

#include "msl_sim/runtime.h"

namespace msl_sim {
namespace {

std::string json_string(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (c == '\n') out += "\\n";
    else if (static_cast<unsigned char>(c) < 0x20) out += ' ';
    else out += c;
  }
  return out + "\"";
}

}  // namespace

const BufferTraffic* LaunchReport::buffer(int index) const {
  for (const BufferTraffic& b : buffers)
    if (b.index == index) return &b;
  return nullptr;
}

std::string LaunchReport::to_string() const {
  std::ostringstream s;
  s << "kernel '" << kernel << "': " << threadgroups << " threadgroups, " << threads << " threads, "
    << simdgroup_mma << " simdgroup MMAs, " << threadgroup_barriers << " barriers, " << simd_collectives
    << " SIMD collectives, " << threadgroup_memory_bytes << " B threadgroup memory, " << seconds * 1e3 << " ms";
  if (bounds_checked)
    for (const BufferTraffic& b : buffers)
      s << "\n  " << b.name << (b.index >= 0 ? " [" + std::to_string(b.index) + "]" : std::string()) << ": "
        << b.size << " B, read " << b.bytes_read << " B, written " << b.bytes_written << " B";
  if (bank_conflicts.counted && bank_conflicts.instructions)
    s << "\n  threadgroup-memory bank conflicts: " << bank_conflicts.instructions << " instructions, mean "
      << double(bank_conflicts.ways_sum) / double(bank_conflicts.instructions) << "-way, worst "
      << bank_conflicts.worst << "-way at " << bank_conflicts.worst_site;
  return s.str();
}

std::string LaunchReport::to_json() const {
  std::ostringstream s;
  s << "{\"kernel\":" << json_string(kernel) << ",\"threadgroups\":" << threadgroups << ",\"threads\":" << threads
    << ",\"simdgroup_mma\":" << simdgroup_mma << ",\"threadgroup_barriers\":" << threadgroup_barriers
    << ",\"simd_collectives\":" << simd_collectives << ",\"threadgroup_memory_bytes\":" << threadgroup_memory_bytes
    << ",\"bounds_checked\":" << (bounds_checked ? "true" : "false") << ",\"seconds\":" << seconds
    << ",\"buffers\":[";
  for (size_t i = 0; i < buffers.size(); ++i) {
    const BufferTraffic& b = buffers[i];
    s << (i ? "," : "") << "{\"index\":" << b.index << ",\"name\":" << json_string(b.name)
      << ",\"set_bytes\":" << (b.set_bytes ? "true" : "false") << ",\"size\":" << b.size
      << ",\"bytes_read\":" << b.bytes_read << ",\"bytes_written\":" << b.bytes_written
      << ",\"loads_by_width\":[";
    for (int k = 0; k < 6; ++k) s << (k ? "," : "") << b.loads_by_width[k];
    s << "],\"bytes_read_wide\":" << b.bytes_read_wide << "}";
  }
  s << "],\"dead_work\":{\"mma\":" << dead_work.mma << ",\"collectives\":" << dead_work.collectives << "}";
  if (bank_conflicts.counted) {
    const BankConflicts& c = bank_conflicts;
    s << ",\"bank_conflicts\":{\"instructions\":" << c.instructions << ",\"ways_sum\":" << c.ways_sum
      << ",\"worst\":" << c.worst << ",\"worst_site\":" << json_string(c.worst_site) << ",\"sites\":[";
    for (size_t i = 0; i < c.sites.size(); ++i) {
      const BankConflictSite& x = c.sites[i];
      s << (i ? "," : "") << "{\"where\":" << json_string(x.where) << ",\"write\":" << (x.write ? "true" : "false")
        << ",\"width\":" << x.width << ",\"instructions\":" << x.instructions << ",\"ways_sum\":" << x.ways_sum
        << ",\"worst\":" << x.worst << "}";
    }
    s << "]}";
  }
  s << ",\"events\":{";
  bool first = true;
  for (const auto& [name, n] : events) {
    s << (first ? "" : ",") << json_string(name) << ":" << n;
    first = false;
  }
  s << "}}";
  return s.str();
}

}  // namespace msl_sim
