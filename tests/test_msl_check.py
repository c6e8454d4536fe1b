"""The MSL check (tests/msl_check, `make check-metal`) judged by itself: today's kernels pass, and
copies of each kernel file with one known MSL error planted fail, each for its own reason. Every
planted error has a correct twin that passes, so a failure is the plant's, not the copy's."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "msl_check"))

import check_metal  # noqa: E402
from declared_names import declared_names, defined_macros  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which(check_metal.CLANG) is None,
                                reason="clang-19 is installed by `make check-metal` / `make test`")

KERNEL_SOURCES = check_metal.DEFAULT_SOURCES


def test_there_are_kernels_to_check():
    assert KERNEL_SOURCES, "no .metal sources under metal-flash-sdpa/metal"


@pytest.mark.parametrize("source", KERNEL_SOURCES, ids=lambda p: p.name)
def test_todays_kernels_pass(source):
    assert check_metal.check_file(source, []) == []


# (name, correct code, the same code with the error, what the failure must mention). Each is
# appended to a copy of a real kernel file, so it is checked in that file's context (its includes,
# `using namespace metal`).
PLANTS = [
    ("device_pointer_as_thread_pointer",
     """inline float planted_first(const device float* x) { return x[0]; }
[[kernel]] void planted(const device float* in [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = planted_first(in);
}""",
     """inline float planted_first(const thread float* x) { return x[0]; }
[[kernel]] void planted(const device float* in [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = planted_first(in);
}""", r"address space|no matching function"),
    ("threadgroup_pointer_into_device_pointer",
     """[[kernel]] void planted(device float* out [[buffer(0)]],
                        uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[32];
  tile[tid] = 1.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  threadgroup float* p = tile;
  out[tid] = p[31 - tid];
}""",
     """[[kernel]] void planted(device float* out [[buffer(0)]],
                        uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[32];
  tile[tid] = 1.0f;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  device float* p = tile;
  out[tid] = p[31 - tid];
}""", r"__global float \*.*__local float"),
    ("write_through_constant",
     """[[kernel]] void planted(constant float* c [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = c[0];
}""",
     """[[kernel]] void planted(constant float* c [[buffer(0)]], device float* out [[buffer(1)]]) {
  c[0] = out[0];
}""", r"read-only"),
    ("double",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  float x = out[0];
  out[1] = x * 2.0f;
}""",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  double x = out[0];
  out[1] = float(x * 2.0f);
}""", r"double"),
    ("recursive_helper",
     """inline int planted_fact(int n) { int f = 1; for (int i = 2; i <= n; ++i) f *= i; return f; }
[[kernel]] void planted(device int* out [[buffer(0)]]) { out[0] = planted_fact(out[1]); }""",
     """inline int planted_fact(int n) { return n <= 1 ? 1 : n * planted_fact(n - 1); }
[[kernel]] void planted(device int* out [[buffer(0)]]) { out[0] = planted_fact(out[1]); }""",
     r"recursion.*planted_fact"),
    ("mutually_recursive_helpers",
     """inline int planted_odd(int n);
inline int planted_even(int n) { return n == 0 ? 1 : 0; }
inline int planted_odd(int n) { return n == 0 ? 0 : planted_even(n - 1); }
[[kernel]] void planted(device int* out [[buffer(0)]]) { out[0] = planted_odd(out[1]); }""",
     """inline int planted_odd(int n);
inline int planted_even(int n) { return n == 0 ? 1 : planted_odd(n - 1); }
inline int planted_odd(int n) { return n == 0 ? 0 : planted_even(n - 1); }
[[kernel]] void planted(device int* out [[buffer(0)]]) { out[0] = planted_odd(out[1]); }""",
     r"recursion.*planted_(odd|even)"),
    ("misspelled_simd_function",
     """[[kernel]] void planted(device float* out [[buffer(0)]],
                        uint lane [[thread_index_in_simdgroup]]) {
  out[lane] = simd_shuffle_xor(out[lane], 1) + simd_sum(out[lane]);
}""",
     """[[kernel]] void planted(device float* out [[buffer(0)]],
                        uint lane [[thread_index_in_simdgroup]]) {
  out[lane] = simd_shuffle_xorr(out[lane], 1) + simd_sum(out[lane]);
}""", r"simd_shuffle_xorr"),
    ("misspelled_attribute",
     """[[kernel]] void planted(device float* out [[buffer(0)]],
                        uint lane [[thread_index_in_simdgroup]]) { out[lane] = 0.0f; }""",
     """[[kernel]] void planted(device float* out [[buffer(0)]],
                        uint lane [[thread_index_in_simdgrup]]) { out[lane] = 0.0f; }""",
     r"thread_index_in_simdgrup"),
    ("mma_with_a_vector_operand",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  simdgroup_float8x8 a = make_filled_simdgroup_matrix<float, 8, 8>(1.0f);
  simdgroup_float8x8 d;
  simdgroup_multiply_accumulate(d, a, a, a);
  simdgroup_store(d, out, 8);
}""",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  simdgroup_float8x8 a = make_filled_simdgroup_matrix<float, 8, 8>(1.0f);
  simdgroup_float8x8 d;
  float2 v = a.thread_elements();
  simdgroup_multiply_accumulate(d, a, v, a);
  simdgroup_store(d, out, 8);
}""", r"simdgroup_multiply_accumulate"),
    ("mma_with_a_missing_argument",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  simdgroup_float8x8 a = make_filled_simdgroup_matrix<float, 8, 8>(1.0f);
  simdgroup_float8x8 d;
  simdgroup_multiply_accumulate(d, a, a, a);
  simdgroup_store(d, out, 8);
}""",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  simdgroup_float8x8 a = make_filled_simdgroup_matrix<float, 8, 8>(1.0f);
  simdgroup_float8x8 d;
  simdgroup_multiply_accumulate(d, a, a);
  simdgroup_store(d, out, 8);
}""", r"simdgroup_multiply_accumulate"),
    ("simdgroup_load_of_another_element_type",
     """[[kernel]] void planted(const device half* in [[buffer(0)]], device half* out [[buffer(1)]]) {
  simdgroup_half8x8 m;
  simdgroup_load(m, in, 8);
  simdgroup_store(m, out, 8);
}""",
     """[[kernel]] void planted(const device half* in [[buffer(0)]], device half* out [[buffer(1)]]) {
  simdgroup_float8x8 m;
  simdgroup_load(m, in, 8);
  simdgroup_store(m, out, 8);
}""", r"simdgroup_load"),
    ("vector_constructor_with_too_many_components",
     """[[kernel]] void planted(device float4* out [[buffer(0)]]) {
  out[0] = float4(out[1].xy, 0.0f, 1.0f);
}""",
     """[[kernel]] void planted(device float4* out [[buffer(0)]]) {
  out[0] = float4(out[1].xyz, 0.0f, 1.0f);
}""", r"exactly n components"),
    ("as_type_of_another_size",
     """[[kernel]] void planted(device uint* out [[buffer(0)]]) { out[0] = as_type<uint>(1.0f); }""",
     """[[kernel]] void planted(device uint* out [[buffer(0)]]) { out[0] = as_type<uint>(half(1.0f)); }""",
     r"same size"),
    ("function_constant_argument_of_unknown_name",
     """constant bool planted_has_bias [[function_constant(7)]];
[[kernel]] void planted(device float* out [[buffer(0)]],
                        const device float* bias [[buffer(1), function_constant(planted_has_bias)]]) {
  out[0] = planted_has_bias ? bias[0] : 0.0f;
}""",
     """constant bool planted_has_bias [[function_constant(7)]];
[[kernel]] void planted(device float* out [[buffer(0)]],
                        const device float* bias [[buffer(1), function_constant(planted_has_bais)]]) {
  out[0] = planted_has_bias ? bias[0] : 0.0f;
}""", r"planted_has_bais"),
    ("layout_assertion_of_a_shared_struct",
     """static_assert(__builtin_offsetof(AttentionParams, softcap) == 192, "as in C++");""",
     """static_assert(__builtin_offsetof(AttentionParams, softcap) == 196, "as in C++");""",
     r"static assertion failed|static_assert"),
    ("pointer_without_address_space",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  thread float* p = x + 1;
  out[0] = p[0];
}""",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  float x[4] = {1.0f, 2.0f, 3.0f, 4.0f};
  float* p = x + 1;
  out[0] = p[0];
}""", r"explicit address space"),
    ("reference_parameter_without_address_space",
     """inline void planted_set(thread float& x) { x = 1.0f; }
[[kernel]] void planted(device float* out [[buffer(0)]]) { float y; planted_set(y); out[0] = y; }""",
     """inline void planted_set(float& x) { x = 1.0f; }
[[kernel]] void planted(device float* out [[buffer(0)]]) { float y; planted_set(y); out[0] = y; }""",
     r"explicit address space"),
    ("cast_between_address_spaces",
     """[[kernel]] void planted(device float* out [[buffer(0)]], uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[32];
  threadgroup float* t = (threadgroup float*)tile;
  t[tid] = out[tid];
}""",
     """[[kernel]] void planted(device float* out [[buffer(0)]], uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[32];
  device float* t = (device float*)tile;
  t[tid] = out[tid];
}""", r"address space|cast"),
]


# MSL that attention kernels plausibly use and that the check must accept.
VALID_MSL = """
constant int planted_tile [[function_constant(20)]];
constant bool planted_has_tile = is_function_constant_defined(planted_tile);
constant bool planted_bias [[function_constant(21)]];
constant float planted_scale [[function_constant(22)]];

template <typename T, int D>
[[kernel, max_total_threads_per_threadgroup(128)]] void planted_tiles(
    const device T* q [[buffer(0)]],
    device T* out [[buffer(1)]],
    const device float* bias [[buffer(2), function_constant(planted_bias)]],
    constant uint& n [[buffer(3)]],
    uint3 tg [[threadgroup_position_in_grid]],
    uint3 tpg [[threads_per_threadgroup]],
    ushort tid [[thread_index_in_threadgroup]],
    ushort sg [[simdgroup_index_in_threadgroup]],
    ushort lane [[thread_index_in_simdgroup]]) {
  threadgroup T tile[D * 8], other[8];
  threadgroup float sums[4];
  const int tile_rows = planted_has_tile ? planted_tile : 8;
  // Vector loads, constructors and conversions.
  const device vec<T, 4>* q4 = (const device vec<T, 4>*)(q + tg.x * D);
  vec<T, 4> a = q4[lane % (D / 4)];
  float4 f = float4(a) * planted_scale;
  float2 lo = float2(f.x, f.y);
  float4 g = float4(lo, f.zw) + float4(1.0f) + float4(lo.x, 0.0f, f.yz);
  half4 h = half4(g);
  uint bits = as_type<uint>(g.x) ^ as_type<uint>(half2(h.xy));
  packed_float4 pk = packed_float4(g);
  tile[tid] = T(g.x + pk.w + float(bits & 1u) + float(tile_rows));
  if (planted_bias) tile[tid] += T(bias[0]);
  threadgroup_barrier(mem_flags::mem_threadgroup | mem_flags::mem_device);
  // SIMD-group matrices from threadgroup memory, MMA, store to device memory.
  simdgroup_matrix<T, 8, 8> m;
  simdgroup_load(m, tile, D, ulong2(0, 0), true);
  simdgroup_float8x8 acc = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  simdgroup_float8x8 mf;
  mf.thread_elements()[0] = float(m.thread_elements()[0]);
  mf.thread_elements()[1] = float(m.thread_elements()[1]);
  simdgroup_multiply_accumulate(acc, mf, mf, acc);
  simdgroup_matrix<T, 8, 8> back;
  back.thread_elements() = vec<T, 2>(acc.thread_elements());
  simdgroup_store(back, out + tg.x * 64, 8);
  float s = simd_sum(f.x) + simd_max(f.y) + simd_shuffle_down(f.z, 1) + simd_broadcast(f.w, 0);
  if (simd_is_first()) sums[sg] = s;
  threadgroup_barrier(mem_flags::mem_threadgroup);
  other[lane % 8] = T(sums[0]);
  float e = metal::fast::exp2(s) + precise::tanh(s) + fma(s, 2.0f, 1.0f) + clamp(s, 0.0f, 1.0f);
  if (tid < n) out[tid] = T(e) + other[0] + T(min(int(tpg.x), 3));
}

#define PLANTED_INSTANTIATE(T, tname, D) \\
  template [[host_name("planted_tiles_" #tname "_" #D)]] [[kernel]] \\
  decltype(planted_tiles<T, D>) planted_tiles<T, D>;
PLANTED_INSTANTIATE(float, f32, 64)
PLANTED_INSTANTIATE(half, f16, 64)
PLANTED_INSTANTIATE(bfloat, bf16, 128)

METAL_FUNC float planted_half_of(uint i) { return 0.5 * float(i); }

kernel void planted_plain(device float* out [[buffer(0)]], uint i [[thread_position_in_grid]]) {
  out[i] = planted_half_of(i);
}
"""


def test_the_msl_kernels_use_is_accepted(tmp_path):
    """Function constants (globals, is_function_constant_defined, on arguments), simdgroup_matrix
    load/store/MMA, vector types with their constructors and conversions, as_type, function-scope
    threadgroup arrays, templates with [[host_name]] instantiations, kernel attributes."""
    problems = check_metal.check_file(_copy_with(PLANT_HOST, tmp_path, VALID_MSL),
                                      [PLANT_HOST.parent])
    assert problems == [], "\n".join(problems)


def _copy_with(source: Path, tmp_path: Path, code: str) -> Path:
    copy = tmp_path / source.name
    copy.write_text(source.read_text() + "\n// planted by tests/test_msl_check.py\n" + code + "\n")
    return copy


# The plants go into a copy of one kernel file (the check is the same for every file; its context,
# includes and `using namespace metal`, is a real kernel's).
PLANT_HOST = KERNEL_SOURCES[0] if KERNEL_SOURCES else None


def test_the_correct_twins_pass(tmp_path):
    """Every plant's correct twin, each in its own namespace, in one copy: they all pass."""
    code = "\n".join(f"namespace plant_{name} {{\n{good}\n}}" for name, good, _, _ in PLANTS)
    problems = check_metal.check_file(_copy_with(PLANT_HOST, tmp_path, code), [PLANT_HOST.parent])
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize("name,good,bad,expect", PLANTS, ids=[p[0] for p in PLANTS])
def test_planted_error_fails_the_check(name, good, bad, expect, tmp_path):
    problems = "\n".join(check_metal.check_file(_copy_with(PLANT_HOST, tmp_path, bad),
                                                [PLANT_HOST.parent]))
    assert problems, f"{name} was not caught"
    assert re.search(expect, problems, re.S), f"{name} failed for another reason:\n{problems}"


def test_double_inside_a_kernel_body_fails(tmp_path):
    """A plant inside the first kernel of each file (not only in appended code)."""
    for source in KERNEL_SOURCES:
        text = source.read_text()
        m = re.search(r"\[\[kernel\b[^\]]*\]\][^{;]*\{", text)  # [[kernel]] or [[kernel, ...]]
        assert m, f"no [[kernel]] function in {source.name}"
        copy = tmp_path / source.name
        copy.write_text(text[:m.end()] + " double planted = 1; (void)planted; " + text[m.end():])
        problems = "\n".join(check_metal.check_file(copy, [source.parent]))
        assert re.search(r"double", problems), f"{source.name}: {problems or 'not caught'}"


def _ast(cmd: list[str]) -> str:
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r.stdout


SIM_INCLUDE = REPO / "tests" / "msl_sim" / "include"
SIM_COMPAT = SIM_INCLUDE / "msl_sim" / "compat.h"
SIM_FLAGS = [check_metal.CLANG, "-x", "c++", "-std=c++20", "-mf16c", "-I", str(SIM_INCLUDE)]
PRELUDE_FLAGS = [check_metal.CLANG] + [f for f in check_metal.CLCPP_FLAGS
                                    if f not in ("-include", str(check_metal.PRELUDE))]


def _is_sim_file(path: str) -> bool:
    return f"{SIM_INCLUDE / 'msl_sim'}/" in path


def _is_prelude(path: str) -> bool:
    return path == str(check_metal.PRELUDE)


def _implementation(name: str) -> bool:
    """Names of a header's own machinery, not MSL names: a `detail` namespace, the check's mslc
    helpers, the simulator's MSL_SIM_ / the check's MSLC_ macros."""
    return "::detail::" in name or "mslc" in name.lower() or name.startswith("MSL_SIM_")


def _names_missing_from_prelude(sim_header: Path, is_sim_file) -> list[str]:
    sim = declared_names(_ast([*SIM_FLAGS, "-fsyntax-only", "-Xclang", "-ast-dump", str(sim_header)]),
                         is_sim_file)
    sim |= defined_macros(_ast([*SIM_FLAGS, "-E", "-dD", str(sim_header)]), is_sim_file)
    prelude = declared_names(_ast([*PRELUDE_FLAGS, "-fsyntax-only", "-Xclang", "-ast-dump",
                                   str(check_metal.PRELUDE)]), _is_prelude)
    prelude |= defined_macros(_ast([*PRELUDE_FLAGS, "-E", "-dD", str(check_metal.PRELUDE)]),
                              _is_prelude)
    assert len(sim) > 200 and len(prelude) > 200, "the name lists are suspiciously short"
    # MSL §2.1 scalar types that C++ for OpenCL has built in (the simulator typedefs them).
    prelude |= {"half", "bool", "char", "short", "int", "long", "float"}
    return sorted(n for n in sim - prelude if not _implementation(n))


def test_the_simulator_provides_no_msl_name_the_declarations_lack():
    """The simulator's compatibility header may not accept an MSL name (type, function, member,
    enumerator, macro) that the declarations written from the specification do not have."""
    missing = _names_missing_from_prelude(SIM_COMPAT, _is_sim_file)
    assert not missing, ("the simulator provides MSL names that tests/msl_check/prelude/"
                         f"metal_prelude.h does not declare: {missing}")


def test_the_name_comparison_sees_a_planted_name(tmp_path):
    extra = tmp_path / "extra.h"
    extra.write_text(f'#include "{SIM_COMPAT}"\n'
                     "namespace metal { inline float simd_summ(float x) { return x; }\n"
                     "struct simd_vote_plus { bool none() const { return true; } }; }\n"
                     "#define M_TAU_F 6.28318548f\n")
    missing = _names_missing_from_prelude(extra, lambda f: _is_sim_file(f) or f == str(extra))
    assert missing == ["M_TAU_F", "metal::simd_summ", "metal::simd_vote_plus",
                       "metal::simd_vote_plus::none"]
