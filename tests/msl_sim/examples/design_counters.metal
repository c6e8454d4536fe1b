// The design counters on patterns with known answers (tests/test_msl_sim.py): threadgroup-memory
// bank conflicts (32 banks x 4 bytes), barriers per key tile, wide device loads, dead work.
#include <metal_stdlib>
using namespace metal;

#ifndef MSL_SIM_COUNT
#define MSL_SIM_COUNT(name, n)
#endif
#ifndef MSL_SIM_DEAD_WORK
#define MSL_SIM_DEAD_WORK(dead)
#endif

// One read per lane of float word (lane * stride) % 1024: stride 1 is conflict-free, 0 one
// broadcast word, 2 two-way, 32 thirty-two-way, 33 conflict-free again (a padded column).
kernel void bank_words(constant uint& stride [[buffer(0)]], device float* out [[buffer(1)]],
                       uint tid [[thread_position_in_threadgroup]],
                       uint lane [[thread_index_in_simdgroup]]) {
  threadgroup float tile[1024];
  out[tid] = tile[(lane * stride) % 1024];
}

// One write per lane of float word (lane * stride) % 1024 of its SIMD-group's own 4 KiB (no
// two threads write one word: no race; the banks are those of bank_words).
kernel void bank_word_stores(constant uint& stride [[buffer(0)]], device float* out [[buffer(1)]],
                             uint tid [[thread_position_in_threadgroup]],
                             uint sg [[simdgroup_index_in_threadgroup]],
                             uint lane [[thread_index_in_simdgroup]]) {
  threadgroup float tile[2048];
  tile[sg * 1024 + (lane * stride) % 1024] = float(tid);
  out[tid] = 0.0f;
}

// One read per lane of half element (lane * stride) % 2048: stride 1 puts two lanes on each
// word (one access, conflict-free), 64 puts every lane on bank 0 (thirty-two-way).
kernel void bank_halves(constant uint& stride [[buffer(0)]], device float* out [[buffer(1)]],
                        uint tid [[thread_position_in_threadgroup]],
                        uint lane [[thread_index_in_simdgroup]]) {
  threadgroup half tile[2048];
  out[tid] = float(tile[(lane * stride) % 2048]);
}

// One 16-byte read per lane of float4 (lane * stride) % 256, served 8 lanes (128 bytes) per
// pass: stride 1 is conflict-free, 2 two-way, 8 eight-way.
kernel void bank_vectors(constant uint& stride [[buffer(0)]], device float* out [[buffer(1)]],
                         uint tid [[thread_position_in_threadgroup]],
                         uint lane [[thread_index_in_simdgroup]]) {
  threadgroup float4 tile[256];
  const float4 v = tile[(lane * stride) % 256];
  out[tid] = v.x + v.y + v.z + v.w;
}

// Four reads per lane from one load in a loop with no rendezvous: four instructions per
// SIMD-group, each lane's i-th read in the i-th (stride 32: each thirty-two-way, on bank i).
kernel void bank_loop(constant uint& stride [[buffer(0)]], device float* out [[buffer(1)]],
                      uint tid [[thread_position_in_threadgroup]],
                      uint lane [[thread_index_in_simdgroup]]) {
  threadgroup float tile[1024];
  float sum = 0.0f;
  for (uint i = 0; i < 4; ++i) sum += tile[(lane * stride + i) % 1024];
  out[tid] = sum;
}

// One barrier before the key loop and two per key tile (stage | use): (2 tiles + 1) barriers
// per threadgroup, `tiles` kv_tiles events.
kernel void tiled_barriers(constant uint& tiles [[buffer(0)]], device float* out [[buffer(1)]],
                           uint tid [[thread_position_in_threadgroup]]) {
  threadgroup float stage[128];
  threadgroup_barrier(mem_flags::mem_threadgroup);
  float acc = 0.0f;
  for (uint t = 0; t < tiles; ++t) {
    if (tid == 0) MSL_SIM_COUNT("kv_tiles", 1);
    stage[tid] = float(t + tid);
    threadgroup_barrier(mem_flags::mem_threadgroup);  // the tile is staged
    acc += stage[(tid + 1) % 128];
    threadgroup_barrier(mem_flags::mem_threadgroup);  // every read done before the next tile
  }
  out[tid] = acc;
}

// 8 half elements per thread from each of three buffers: `wide` in one 16-byte load, `pairs` in
// two 8-byte half4 loads, `single` element by element.
kernel void half_loads(const device half* wide [[buffer(0)]], const device half* pairs [[buffer(1)]],
                       const device half* single [[buffer(2)]], device float* out [[buffer(3)]],
                       uint tid [[thread_position_in_grid]]) {
  const uint4 w = *((const device uint4*)(wide + tid * 8));
  const half4 p0 = *((const device half4*)(pairs + tid * 8));
  const half4 p1 = *((const device half4*)(pairs + tid * 8 + 4));
  float s = 0.0f;
  for (int e = 0; e < 8; ++e) s += float(single[tid * 8 + e]);
  const half2 w0 = as_type<half2>(w.x), w1 = as_type<half2>(w.y), w2 = as_type<half2>(w.z),
              w3 = as_type<half2>(w.w);
  s += float(w0.x + w0.y + w1.x + w1.y + w2.x + w2.y + w3.x + w3.y);
  s += float(p0.x + p0.y + p0.z + p0.w + p1.x + p1.y + p1.z + p1.w);
  out[tid] = s;
}

// Dead work per SIMD-group: a simd_sum for which lanes 16-31 are declared discarded (0.5), a
// shuffle all of whose lanes are (1), a live MMA (0) and a discarded one (1); the barrier is not
// work.
kernel void dead_lanes(device float* out [[buffer(0)]], uint tid [[thread_position_in_grid]],
                       uint lane [[thread_index_in_simdgroup]]) {
  MSL_SIM_DEAD_WORK(lane >= 16);
  const float s = simd_sum(float(lane));
  MSL_SIM_DEAD_WORK(true);
  const float t = simd_shuffle_xor(s, 1);
  simdgroup_barrier(mem_flags::mem_none);
  MSL_SIM_DEAD_WORK(false);
  simdgroup_float8x8 a = make_filled_simdgroup_matrix<float, 8, 8>(1.0f), c;
  simdgroup_multiply(c, a, a);
  MSL_SIM_DEAD_WORK(true);
  simdgroup_float8x8 d;
  simdgroup_multiply(d, a, c);
  MSL_SIM_DEAD_WORK(false);
  out[tid] = s + t + c.thread_elements()[0] + d.thread_elements()[0];
}
