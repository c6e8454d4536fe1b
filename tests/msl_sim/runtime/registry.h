// Kernels registered by translated sources (static registration, so several translated files
// can be linked into one binary or shared library).
#pragma once

#include <string>
#include <vector>

#include "msl_sim/kernel.h"

namespace msl_sim {

// All registrations of `name` (more than one is an error unless they share a source location).
std::vector<const KernelRegistration*> find_kernels(const std::string& name);

}  // namespace msl_sim
