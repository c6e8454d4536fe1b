// See shared_header.h: this kernel must see its own file's shared_bias.
#include "shared_header.h"

kernel void shared_header_b(device int* out [[buffer(0)]]) {
  out[0] = 200 + read_shared_bias();
}
