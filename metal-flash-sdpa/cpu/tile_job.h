// One unit of work of the cpu forward pass, as the tile kernels see it: a tile of query rows that
// share one kv head (rows of several q heads of a GQA group stacked on top of each other), and the
// keys that tile has to visit.
//
// The driver (cpu_backend.cpp) resolves everything sequence-specific (varlen offsets, paging,
// masks from attention_semantics.h, ALiBi slopes, sinks) into this plain description, so that the
// kernels, some of which are compiled for one instruction set only, see nothing but pointers,
// ints and floats. This header is included by those ISA-specific files *before* their target
// pragma: its inline functions are compiled for the baseline ISA in every file, so the linker can
// pick any copy.
#pragma once

#include <cstddef>
#include <cstdint>

// The rules (softcap, ALiBi, row finishing): included here, before any target pragma, so their
// inline functions are compiled for the baseline ISA in every file (they inline into the kernels).
#include "../common/attention_semantics.h"
#include "dropout_rule.h"
#include "mask_reader.h"

enum class ElementType { kFloat32, kFloat16, kBFloat16 };

inline size_t element_size(ElementType t) { return t == ElementType::kFloat32 ? 4 : 2; }

// Where key (or value) position j of one sequence and one kv head lives.
struct KeyRowLocator {
  const char* base;       // non-paged: row 0 of the sequence; paged: row 0 of page 0 (head applied)
  int64_t row_stride;     // bytes
  const int32_t* pages;   // paged: the sequence's row of block_table; null otherwise
  int64_t page_stride;    // bytes
  int32_t page_size;

  const void* row(int j) const {
    if (pages == nullptr) return base + j * row_stride;
    return base + pages[j / page_size] * page_stride + (j % page_size) * row_stride;
  }
};

struct TileJob {
  ElementType dtype;
  int rows;  // query rows in the tile
  int head_dim, head_dim_v;
  // Keys any row of the tile sees: [key_begin, key_end), non-empty.
  int key_begin, key_end;
  float scale, softcap;  // softcap 0 = off
  bool has_alibi, has_sinks;
  KeyRowLocator k, v;

  // Per query row r < rows.
  const void* const* q_rows;
  void* const* out_rows;
  float* const* lse_rows;        // null entries (or a null array): no lse
  const int* row_key_begin;      // visible keys of the row: [begin, end), possibly empty
  const int* row_key_end;
  const int* row_diagonal;       // key position of the row (ALiBi distance origin)
  const float* row_alibi_slope;  // used when has_alibi
  const float* row_sink;         // used when has_sinks: the logit of the sink
  // attn_mask (mask.present()): every row's mask; the tile's keys then start at 0, so a kernel's
  // key blocks (multiples of kMaskTileKeys) cover whole tiles of the summary.
  MaskReader mask;
  const MaskRow* row_mask;
  // Dropout (dropout.on): every row's counter words (dropout_tiles.h draws the mask).
  DropoutRule dropout;
  const DropoutRow* row_dropout;
};

// A tile kernel for one instruction set: the scratch it needs for tiles of up to `max_rows` rows,
// and the kernel itself (writes out/lse of every row of the tile).
struct TileKernel {
  size_t (*scratch_bytes)(int max_rows, int head_dim, int head_dim_v);
  void (*run)(const TileJob& job, void* scratch);
};

// Queries per tile the driver aims for (rows of all stacked heads together), and keys per block.
// A tile never holds more than kMaxTileRows rows: 144 is three of the AVX-512 forward's 48-row
// chunks (128 left a 32-row chunk in every tile, whose products run at two thirds of the speed).
constexpr int kMaxTileRows = 144;
constexpr int kKeyBlock = 128;

// The kernels available in this build, chosen by the driver from the cpu's features.
TileKernel portable_tile_kernel();
// The x86 kernels select their instruction set with GCC/clang target pragmas.
#if (defined(__x86_64__) || defined(_M_X64)) && (defined(__GNUC__) || defined(__clang__))
#define MFS_HAVE_X86_KERNELS 1
// The portable kernel compiled for AVX2 + FMA + F16C.
TileKernel avx2_tile_kernel();
// AVX-512 F/BW/VL/DQ: fp32 arithmetic for every dtype.
TileKernel avx512_tile_kernel();
// AVX-512 + AVX512_BF16: bf16 inputs use native bf16 dot products (fp32 accumulation).
TileKernel avx512_bf16_tile_kernel();
#endif
