#pragma once

// The op schema's implementations live with the shared entry points.
#include "../metal-flash-sdpa/common/attention_backward.h"
#include "../metal-flash-sdpa/common/attention_forward.h"
#include "../metal-flash-sdpa/common/attention_sdpa.h"
