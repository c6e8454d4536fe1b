// One kernel launch as the simulated backend hands it to the MSL simulator: the plan's launch
// with each binding resolved to memory. sim_dispatch (sim_dispatch.cpp) is the only code that
// speaks the simulator's API.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "../common/metal_launch_plan.h"

struct SimBuffer {
  int index;         // [[buffer(index)]]
  const char* name;  // for the simulator's reports (bounds, ...)
  const char* dtype; // the tensor's element type ("Float", "Half", ...; for MFS_SIM_RECORD)
  void* data;        // the tensor's storage from its own offset on
  size_t bytes;      // what Metal would see of that buffer from this offset
};

struct SimBytes {
  int index;
  std::vector<uint8_t> bytes;
};

struct SimLaunch {
  std::string kernel;  // [[host_name]]
  std::vector<PlanFunctionConstant> constants;
  std::vector<SimBuffer> buffers;
  std::vector<SimBytes> bytes;
  uint32_t threadgroups[3];
  uint32_t threads_per_threadgroup[3];
};

// Runs one launch to completion; raises (c10::Error) with the simulator's report on a kernel
// fault (out-of-bounds access, divergent barrier, deadlock, ...).
void sim_dispatch(const SimLaunch& launch);
