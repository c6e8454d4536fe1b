// The two things each backend (cpu, metal, simulated metal) provides to the shared entry points.
// Exactly one backend's definitions are linked into each build variant.
#pragma once

#include "attention_inputs.h"

// The device type whose tensors this build runs on.
c10::DeviceType backend_device_type();

// Runs the forward pass described by `params` on checked tensors: writes every row of `out` (and
// `lse` when kWriteLse) that belongs to a sequence. Rows outside every sequence are the caller's.
void run_attention_forward(const AttentionParams& params, const AttentionTensors& tensors);
