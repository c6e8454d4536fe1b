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


def _anchor(path: Path, pattern: str) -> re.Match:
    """A plant's anchor in the real sources: fails loudly (at collection) when the sources no
    longer have it, rather than letting a plant test something else."""
    m = re.search(pattern, path.read_text())
    assert m, f"the plants' anchor {pattern!r} is gone from {path}: update tests/test_msl_check.py"
    return m


# softcap's offset as the shared header states it (other work may add fields before it).
SOFTCAP_OFFSET = int(_anchor(REPO / "metal-flash-sdpa" / "common" / "attention_params.h",
                             r"MFS_PARAMS_AT\(softcap, (\d+)\)").group(1))


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
}""", r"__global_device float \*.*__local float"),
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
     f"""static_assert(__builtin_offsetof(AttentionParams, softcap) == {SOFTCAP_OFFSET}, "as in C++");""",
     f"""static_assert(__builtin_offsetof(AttentionParams, softcap) == {SOFTCAP_OFFSET + 4}, "as in C++");""",
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

# Round 2 (issue 18): one plant per rule of a kernel's interface, the constant/device split,
# types, storage, limits and links. Each names its source: a section of Apple's Metal Shading
# Language Specification (3.x numbering, see prelude/metal_prelude.h) or Apple's own message as
# public sources quote it.
PLANTS += [
    # §5.1.3 Kernel Functions: "A kernel function ... must have a void return type".
    ("kernel_returning_a_value",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = 1.0f; }""",
     """[[kernel]] float planted(device float* out [[buffer(0)]]) { out[0] = 1.0f; return 0.0f; }""",
     r"returns float.*return type is void"),
    # §5.1: a library's functions are found by name; two instantiations with one [[host_name]].
    ("two_instantiations_with_one_host_name",
     """template <typename T>
[[kernel]] void planted(device T* out [[buffer(0)]]) { out[0] = T(1.0f); }
template [[host_name("planted_f32")]] [[kernel]] decltype(planted<float>) planted<float>;
template [[host_name("planted_f16")]] [[kernel]] decltype(planted<half>) planted<half>;""",
     """template <typename T>
[[kernel]] void planted(device T* out [[buffer(0)]]) { out[0] = T(1.0f); }
template [[host_name("planted_f32")]] [[kernel]] decltype(planted<float>) planted<float>;
template [[host_name("planted_f32")]] [[kernel]] decltype(planted<half>) planted<half>;""",
     r"kernel name planted_f32"),
    # §1.4.1 Overloading: "Metal supports overloading ... except for graphics and kernel functions".
    ("overloaded_kernel",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = 1.0f; }
[[kernel]] void planted_int(device int* out [[buffer(0)]]) { out[0] = 1; }""",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = 1.0f; }
[[kernel]] void planted(device int* out [[buffer(0)]]) { out[0] = 1; }""",
     r"kernel name planted .*cannot be overloaded"),
    # Apple: "'buffer' attribute parameter is out of bounds: must be between 0 and 30".
    ("buffer_index_out_of_range",
     """[[kernel]] void planted(device float* out [[buffer(30)]]) { out[0] = 1.0f; }""",
     """[[kernel]] void planted(device float* out [[buffer(31)]]) { out[0] = 1.0f; }""",
     r"'buffer' attribute parameter is out of bounds: must be between 0 and 30"),
    # §5.2.1: each argument table index once per function.
    ("buffer_index_used_twice",
     """[[kernel]] void planted(device float* out [[buffer(0)]], const device float* in [[buffer(1)]]) {
  out[0] = in[0];
}""",
     """[[kernel]] void planted(device float* out [[buffer(0)]], const device float* in [[buffer(0)]]) {
  out[0] = in[0];
}""", r"\[\[buffer\(0\)\]\] is also argument out"),
    # §5.2.1: threadgroup memory arguments [[threadgroup(n)]], the same 0-30 table.
    ("threadgroup_index_out_of_range",
     """[[kernel]] void planted(device float* out [[buffer(0)]], threadgroup float* scratch [[threadgroup(0)]],
                        uint tid [[thread_index_in_threadgroup]]) { scratch[tid] = 1.0f; out[tid] = scratch[0]; }""",
     """[[kernel]] void planted(device float* out [[buffer(0)]], threadgroup float* scratch [[threadgroup(31)]],
                        uint tid [[thread_index_in_threadgroup]]) { scratch[tid] = 1.0f; out[tid] = scratch[0]; }""",
     r"'threadgroup' attribute parameter is out of bounds"),
    # §5.2.1: [[buffer(n)]] locates device or constant memory, [[threadgroup(n)]] threadgroup
    # memory.
    ("buffer_attribute_on_a_threadgroup_pointer",
     """[[kernel]] void planted(device float* out [[buffer(0)]], threadgroup float* scratch [[threadgroup(0)]],
                        uint tid [[thread_index_in_threadgroup]]) { scratch[tid] = 1.0f; out[tid] = scratch[0]; }""",
     """[[kernel]] void planted(device float* out [[buffer(0)]], threadgroup float* scratch [[buffer(1)]],
                        uint tid [[thread_index_in_threadgroup]]) { scratch[tid] = 1.0f; out[tid] = scratch[0]; }""",
     r"\[\[buffer\(n\)\]\] binds a pointer or reference to device or constant memory"),
    # §4: a kernel's pointer arguments are in device, constant or threadgroup memory.
    ("thread_pointer_argument",
     """[[kernel]] void planted(device float* out [[buffer(0)]], device float* in [[buffer(1)]]) { out[0] = in[0]; }""",
     """[[kernel]] void planted(device float* out [[buffer(0)]], thread float* in [[buffer(1)]]) { out[0] = in[0]; }""",
     r"argument in.*thread memory"),
    # Apple: "invalid type 'float' for input declaration in a kernel function" (quoted in Dawn's
    # Tint test expectations); §5.2.3.6: a by-value argument is a built-in input.
    ("by_value_argument_without_attribute",
     """[[kernel]] void planted(device float* out [[buffer(0)]], constant float& scale [[buffer(1)]]) { out[0] = scale; }""",
     """[[kernel]] void planted(device float* out [[buffer(0)]], float scale) { out[0] = scale; }""",
     r"invalid type 'float' for input declaration in a kernel function"),
    # §5.2.3.6 Table of kernel function input attributes: ushort(2,3) or uint(2,3) positions.
    ("threadgroup_position_as_float3",
     """[[kernel]] void planted(device float* out [[buffer(0)]], uint3 tg [[threadgroup_position_in_grid]]) { out[tg.x] = 1.0f; }""",
     """[[kernel]] void planted(device float* out [[buffer(0)]], float3 tg [[threadgroup_position_in_grid]]) { out[0] = tg.x; }""",
     r"\[\[threadgroup_position_in_grid\]\] on 'float"),
    # §5.2.3.6: thread_position_in_grid and threads_per_grid are declared with the same type.
    ("grid_position_and_size_of_different_types",
     """[[kernel]] void planted(device float* out [[buffer(0)]], uint3 pos [[thread_position_in_grid]],
                        uint3 n [[threads_per_grid]]) { out[pos.x] = float(n.x); }""",
     """[[kernel]] void planted(device float* out [[buffer(0)]], uint3 pos [[thread_position_in_grid]],
                        ushort3 n [[threads_per_grid]]) { out[pos.x] = float(n.x); }""",
     r"declared with different types"),
    # §5.2.3.6: a uint thread_position_in_threadgroup makes thread_index_in_threadgroup uint.
    ("thread_index_narrower_than_thread_position",
     """[[kernel]] void planted(device float* out [[buffer(0)]], uint3 pos [[thread_position_in_threadgroup]],
                        uint tid [[thread_index_in_threadgroup]]) { out[tid] = float(pos.x); }""",
     """[[kernel]] void planted(device float* out [[buffer(0)]], uint3 pos [[thread_position_in_threadgroup]],
                        ushort tid [[thread_index_in_threadgroup]]) { out[tid] = float(pos.x); }""",
     r"thread_index_in_threadgroup\]\] must be uint"),
    # §5.2.1, §5.2.3.6: one binding per argument.
    ("two_bindings_on_one_argument",
     """[[kernel]] void planted(device float* out [[buffer(0)]], uint i [[thread_position_in_grid]]) { out[i] = 1.0f; }""",
     """[[kernel]] void planted(device float* out [[buffer(0)]], uint i [[thread_position_in_grid, thread_index_in_threadgroup]]) { out[i] = 1.0f; }""",
     r"on one argument"),
    # §5.8.1: function constants are program-scope variables in the constant address space.
    ("function_constant_outside_constant",
     """constant bool planted_flag [[function_constant(3)]];
[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = planted_flag ? 1.0f : 0.0f; }""",
     """bool planted_flag [[function_constant(3)]];
[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = planted_flag ? 1.0f : 0.0f; }""",
     r"only a program-scope constant variable is a function constant"),
    # §5.8.1: the index of a function constant is a 16-bit value.
    ("function_constant_index_out_of_range",
     """constant bool planted_flag [[function_constant(30)]];
[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = planted_flag ? 1.0f : 0.0f; }""",
     """constant bool planted_flag [[function_constant(70000)]];
[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = planted_flag ? 1.0f : 0.0f; }""",
     r"between 0 and 65535"),
    # §5.8.1: on an argument, [[function_constant(name)]] names a boolean function constant.
    ("function_constant_index_on_an_argument",
     """constant bool planted_has_bias [[function_constant(7)]];
[[kernel]] void planted(device float* out [[buffer(0)]],
                        const device float* bias [[buffer(1), function_constant(planted_has_bias)]]) {
  out[0] = planted_has_bias ? bias[0] : 0.0f;
}""",
     """constant bool planted_has_bias [[function_constant(7)]];
[[kernel]] void planted(device float* out [[buffer(0)]],
                        const device float* bias [[buffer(1), function_constant(7)]]) {
  out[0] = planted_has_bias ? bias[0] : 0.0f;
}""", r"names a boolean function constant"),
    # §4.1 / §4.2: device and constant are different address spaces; no implicit conversion.
    ("constant_pointer_where_device_expected",
     """inline float planted_first(const device float* x) { return x[0]; }
[[kernel]] void planted(const device float* in [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = planted_first(in);
}""",
     """inline float planted_first(const device float* x) { return x[0]; }
[[kernel]] void planted(constant float* in [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = planted_first(in);
}""", r"no matching function for call to 'planted_first'"),
    ("device_pointer_where_constant_expected",
     """inline float planted_first(constant float* x) { return x[0]; }
[[kernel]] void planted(constant float* in [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = planted_first(in);
}""",
     """inline float planted_first(constant float* x) { return x[0]; }
[[kernel]] void planted(const device float* in [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = planted_first(in);
}""", r"no matching function for call to 'planted_first'"),
    # §6.7 SIMD-group Matrix Functions: simdgroup_load reads device or threadgroup memory.
    ("simdgroup_load_from_constant_memory",
     """[[kernel]] void planted(const device half* in [[buffer(0)]], device half* out [[buffer(1)]]) {
  simdgroup_half8x8 m;
  simdgroup_load(m, in, 8);
  simdgroup_store(m, out, 8);
}""",
     """[[kernel]] void planted(constant half* in [[buffer(0)]], device half* out [[buffer(1)]]) {
  simdgroup_half8x8 m;
  simdgroup_load(m, in, 8);
  simdgroup_store(m, out, 8);
}""", r"simdgroup_load"),
    # §4 (address-space qualified member functions): through MSL 4.0 an unqualified member
    # function's implicit `this` is thread, so one called on a device object is declared
    # `device` (AliceO2Group/AliceO2 PR #15772: "up to MSL 4.0 a member function's implicit this
    # is thread, which is wrong for objects living in device memory ... MSL 4.1 makes an
    # unannotated this generic").
    ("member_function_on_a_device_object",
     """struct PlantedAcc { float v; float get() const device { return v; } };
[[kernel]] void planted(const device PlantedAcc* acc [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = acc->get();
}""",
     """struct PlantedAcc { float v; float get() const { return v; } };
[[kernel]] void planted(const device PlantedAcc* acc [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = acc->get();
}""", r"member function get called on an object in device memory"),
    # §2.1 (bfloat), §2.12 Implicit Type Conversions: float does not convert to bfloat implicitly.
    ("float_into_bfloat_implicitly",
     """[[kernel]] void planted(device bfloat* out [[buffer(0)]], const device float* in [[buffer(1)]]) {
  float x = in[0] * 2.0f;
  out[0] = bfloat(x);
}""",
     """[[kernel]] void planted(device bfloat* out [[buffer(0)]], const device float* in [[buffer(1)]]) {
  float x = in[0] * 2.0f;
  out[0] = x;
}""", r"implicit conversion from 'float' to '__bf16'"),
    ("half_into_bfloat_implicitly",
     """[[kernel]] void planted(device bfloat* out [[buffer(0)]], const device half* in [[buffer(1)]]) {
  bfloat x = bfloat(float(in[0]));
  out[0] = x;
}""",
     """[[kernel]] void planted(device bfloat* out [[buffer(0)]], const device half* in [[buffer(1)]]) {
  bfloat x = in[0];
  out[0] = x;
}""", r"bfloat.*half"),  # clang itself refuses this one
    # §6.7: d = a * b + c with d and c of one element type (the specification's one T).
    ("mma_accumulating_into_another_type",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  simdgroup_half8x8 a = make_filled_simdgroup_matrix<half, 8, 8>(1.0h);
  simdgroup_float8x8 c = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  simdgroup_float8x8 d;
  simdgroup_multiply_accumulate(d, a, a, c);
  simdgroup_store(d, out, 8);
}""",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  simdgroup_half8x8 a = make_filled_simdgroup_matrix<half, 8, 8>(1.0h);
  simdgroup_half8x8 c = make_filled_simdgroup_matrix<half, 8, 8>(0.0h);
  simdgroup_float8x8 d;
  simdgroup_multiply_accumulate(d, a, a, c);
  simdgroup_store(d, out, 8);
}""", r"simdgroup_multiply_accumulate"),
    # Apple: "program scope variable must reside in constant address space" (quoted in Dawn's
    # Tint test expectations); §4.2 Constant Address Space.
    ("program_scope_variable_outside_constant",
     """constant float planted_scale = 2.0f;
[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = planted_scale; }""",
     """float planted_scale = 2.0f;
[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = planted_scale; }""",
     r"program scope variable must reside in constant address space"),
    # §4.2: variables of static storage live in the constant address space.
    ("static_local_variable",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) { const float k = 2.0f; out[0] = k; }""",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) { static float k = 2.0f; out[0] = k; }""",
     r"static variable k"),
    # §1.4.4 Restrictions: no goto.
    ("goto",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  for (int i = 0; i < 4; ++i) { if (out[i] < 0.0f) break; out[i] = 1.0f; }
}""",
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  for (int i = 0; i < 4; ++i) { if (out[i] < 0.0f) goto done; out[i] = 1.0f; }
done:
  out[0] += 0.0f;
}""", r"goto"),
    # Metal feature set tables: 32 KiB of threadgroup memory (§4.4 Threadgroup Address Space),
    # counted per instantiation, through the functions a kernel calls.
    ("threadgroup_memory_over_32_kib",
     """inline void planted_stage(device float* out, uint tid) {
  threadgroup float more[4096];
  more[tid] = out[tid];
  out[tid] = more[4095 - tid];
}
template <int N>
[[kernel]] void planted(device float* out [[buffer(0)]], uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[N];
  tile[tid] = out[tid];
  planted_stage(out, tid);
  out[tid] = tile[N - 1 - tid];
}
template [[host_name("planted_tg")]] [[kernel]] decltype(planted<4096>) planted<4096>;""",
     """inline void planted_stage(device float* out, uint tid) {
  threadgroup float more[4096];
  more[tid] = out[tid];
  out[tid] = more[4095 - tid];
}
template <int N>
[[kernel]] void planted(device float* out [[buffer(0)]], uint tid [[thread_index_in_threadgroup]]) {
  threadgroup float tile[N];
  tile[tid] = out[tid];
  planted_stage(out, tid);
  out[tid] = tile[N - 1 - tid];
}
template [[host_name("planted_tg")]] [[kernel]] decltype(planted<4097>) planted<4097>;""",
     r"32772 bytes of threadgroup memory"),
    # §5.1.3 / Metal feature set tables: at most 1024 threads per threadgroup.
    ("max_total_threads_over_1024",
     """[[kernel, max_total_threads_per_threadgroup(1024)]] void planted(device float* out [[buffer(0)]]) { out[0] = 1.0f; }""",
     """[[kernel, max_total_threads_per_threadgroup(1025)]] void planted(device float* out [[buffer(0)]]) { out[0] = 1.0f; }""",
     r"max_total_threads_per_threadgroup\(1025\)"),
    # A function declared and called but defined nowhere: the metallib cannot be linked.
    ("function_called_but_never_defined",
     """inline float planted_twice(float x) { return 2.0f * x; }
[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = planted_twice(out[1]); }""",
     """float planted_twice(float x);
[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = planted_twice(out[1]); }""",
     r"planted_twice is called but never defined"),
]

# Round 3 (issue 18): member functions and operators on device/constant objects, atomics.
PLANTS += [
    # §4 / §1.4.1 Overloading (the overloading rules include the address space of an argument;
    # for a member function, of its object): a device member function takes device objects only.
    ("device_member_function_on_a_constant_object",
     """struct PlantedAcc { float v; float get() const constant { return v; } };
[[kernel]] void planted(constant PlantedAcc& acc [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = acc.get();
}""",
     """struct PlantedAcc { float v; float get() const device { return v; } };
[[kernel]] void planted(constant PlantedAcc& acc [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = acc.get();
}""", r"member function get called on an object in constant memory is not declared constant "
        r"\(it is device\)"),
    ("constant_member_function_on_a_device_object",
     """struct PlantedAcc { float v; float get() const device { return v; } };
[[kernel]] void planted(const device PlantedAcc* acc [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = acc->get();
}""",
     """struct PlantedAcc { float v; float get() const constant { return v; } };
[[kernel]] void planted(const device PlantedAcc* acc [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = acc->get();
}""", r"member function get called on an object in device memory is not declared device "
        r"\(it is constant\)"),
    # As member_function_on_a_device_object, for constant memory.
    ("member_function_on_a_constant_object",
     """struct PlantedAcc { float v; float get() const constant { return v; } };
constant PlantedAcc planted_acc = {2.0f};
[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = planted_acc.get(); }""",
     """struct PlantedAcc { float v; float get() const { return v; } };
constant PlantedAcc planted_acc = {2.0f};
[[kernel]] void planted(device float* out [[buffer(0)]]) { out[0] = planted_acc.get(); }""",
     r"member function get called on an object in constant memory is not declared constant"),
    # Operators are member functions too (§4, AliceO2Group/AliceO2 PR #15772 as above).
    ("operator_on_a_device_object",
     """struct PlantedRow { float v[4]; float operator[](int i) const device { return v[i]; } };
[[kernel]] void planted(const device PlantedRow* row [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = (*row)[1] + row[0][2];
}""",
     """struct PlantedRow { float v[4]; float operator[](int i) const { return v[i]; } };
[[kernel]] void planted(const device PlantedRow* row [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = (*row)[1] + row[0][2];
}""", r"member function operator\[\] called on an object in device memory is not declared device"),
    ("device_operator_on_a_constant_object",
     """struct PlantedRow { float v[4]; float operator()(int i) const constant { return v[i]; } };
[[kernel]] void planted(constant PlantedRow& row [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = row(3);
}""",
     """struct PlantedRow { float v[4]; float operator()(int i) const device { return v[i]; } };
[[kernel]] void planted(constant PlantedRow& row [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = row(3);
}""", r"member function operator\(\) called on an object in constant memory"),
    # §5.2.1: the threadgroup table too holds each index once per kernel.
    ("threadgroup_index_used_twice",
     """[[kernel]] void planted(device float* out [[buffer(0)]], threadgroup float* a [[threadgroup(0)]],
                        threadgroup float* b [[threadgroup(1)]], uint tid [[thread_index_in_threadgroup]]) {
  a[tid] = 1.0f; b[tid] = 2.0f; out[tid] = a[0] + b[0];
}""",
     """[[kernel]] void planted(device float* out [[buffer(0)]], threadgroup float* a [[threadgroup(0)]],
                        threadgroup float* b [[threadgroup(0)]], uint tid [[thread_index_in_threadgroup]]) {
  a[tid] = 1.0f; b[tid] = 2.0f; out[tid] = a[0] + b[0];
}""", r"\[\[threadgroup\(0\)\]\] is also argument a"),
    # §2.12 Implicit Type Conversions: no implicit conversion from one vector type to another,
    # even where the scalars would convert (SPIRV-Cross's MSL backend, commit "the MSL spec
    # forbids implicit conversions between vector types", quoting Apple's "cannot convert between
    # vector values of different size"). Scalars do convert implicitly (float -> half is valid).
    ("implicit_conversion_between_vector_types",
     """[[kernel]] void planted(device float4* out [[buffer(0)]], const device half4* in [[buffer(1)]]) {
  half h = out[1].x;
  float4 f = float4(in[0]);
  out[0] = f * float(h);
}""",
     """[[kernel]] void planted(device float4* out [[buffer(0)]], const device half4* in [[buffer(1)]]) {
  half h = out[1].x;
  float4 f = in[0];
  out[0] = f * float(h);
}""", r"float4.*half"),
    # §6.15.1 Memory Order: through MSL 4.0 the atomic functions take memory_order_relaxed only
    # (MSL 2.1 §5.13.1 "For atomic operations, memory_order_relaxed is the only value supported",
    # quoted in gpuweb/WSL issue #252; ordered atomics arrive with Metal 4.1, JuliaGPU/Metal.jl
    # PR #889). Kept in a variable first, the order is refused all the same.
    ("memory_order_other_than_relaxed",
     """[[kernel]] void planted(device atomic_uint* count [[buffer(0)]], device uint* out [[buffer(1)]]) {
  constexpr memory_order order = memory_order_relaxed;
  out[0] = atomic_fetch_add_explicit(count, 1u, order) + atomic_load_explicit(count, memory_order_relaxed);
}""",
     """[[kernel]] void planted(device atomic_uint* count [[buffer(0)]], device uint* out [[buffer(1)]]) {
  constexpr memory_order order = memory_order_relaxed;
  out[0] = atomic_fetch_add_explicit(count, 1u, order) + atomic_load_explicit(count, memory_order_acquire);
}""", r"memory_order_acquire: through MSL 4.0 atomic functions take memory_order_relaxed only"),
    # §6.15 Atomic Functions: a subset of C++14's atomics, whose atomic<bool> has no
    # fetch-and-modify functions (store, load, exchange, compare-exchange only).
    ("fetch_and_modify_on_atomic_bool",
     """[[kernel]] void planted(device atomic_bool* seen [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = atomic_exchange_explicit(seen, true, memory_order_relaxed) ? 1.0f : 0.0f;
}""",
     """[[kernel]] void planted(device atomic_bool* seen [[buffer(0)]], device float* out [[buffer(1)]]) {
  out[0] = atomic_fetch_or_explicit(seen, true, memory_order_relaxed) ? 1.0f : 0.0f;
}""", r"no matching function for call to 'atomic_fetch_or_explicit'"),
]

# Valid MSL the check once refused (issue 18): each must pass.
FALSE_ALARMS = [
    ("all_any_of_half_comparisons",  # §6.4 Relational Functions
     """[[kernel]] void planted(device float* out [[buffer(0)]], const device half4* h [[buffer(1)]]) {
  out[0] = (all(h[0] < h[1]) || any(h[0] == h[1])) ? 1.0f : 0.0f;
}"""),
    ("select_of_half4_by_bool4",  # §6.4: select(T a, T b, booln c)
     """[[kernel]] void planted(device half4* out [[buffer(0)]]) {
  out[0] = select(out[1], out[2], bool4(true, false, true, false)) + select(out[1], out[2], out[1] > out[2]);
}"""),
    ("member_call_on_a_temporary",  # §6.9.2 simd_ballot returns a simd_vote
     """[[kernel]] void planted(device float* out [[buffer(0)]], uint lane [[thread_index_in_simdgroup]]) {
  out[lane] = simd_ballot(lane == 0).any() ? 1.0f : 0.0f;
}"""),
    ("simdgroup_matrix_functional_cast",  # §6.7: a diagonal matrix from a scalar
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  simdgroup_float8x8 m = simdgroup_float8x8(1.0f);
  simdgroup_store(m, out, 8);
}"""),
    ("atomics",  # §2.5 Atomic Data Types, §6.15 Atomic Functions
     """[[kernel]] void planted(device atomic_uint* count [[buffer(0)]], device atomic_float* total [[buffer(1)]],
                        device float* out [[buffer(2)]], uint tid [[thread_index_in_threadgroup]]) {
  threadgroup atomic_int local_count;
  if (tid == 0) atomic_store_explicit(&local_count, 0, memory_order_relaxed);
  threadgroup_barrier(mem_flags::mem_threadgroup);
  atomic_fetch_add_explicit(&local_count, 1, memory_order_relaxed);
  uint seen = atomic_fetch_add_explicit(count, 1u, memory_order_relaxed);
  atomic_fetch_add_explicit(total, out[tid], memory_order_relaxed);
  out[tid] = float(seen) + float(atomic_load_explicit(count, memory_order_relaxed));
}"""),
    ("matrix_types",  # §2.3 Matrix Data Types
     """[[kernel]] void planted(device float4* out [[buffer(0)]]) {
  float4x4 m = float4x4(1.0f);
  float2x2 r = float2x2(float2(0.0f, 1.0f), float2(-1.0f, 0.0f));
  half3x3 h = half3x3(1.0h);
  out[0] = m * out[1] + m[2] + float4(r[1], float(h[0][0]), 0.0f) + (out[2] * transpose(m));
}"""),
    ("constant_tables",  # §4.2: program-scope and function-scope constant variables
     """constant float planted_weights[4] = {0.1f, 0.2f, 0.3f, 0.4f};
[[kernel]] void planted(device float* out [[buffer(0)]], uint i [[thread_position_in_grid]]) {
  constant float bias[2] = {1.0f, -1.0f};
  static constexpr int stride = 2;
  out[i] = planted_weights[i % 4] + bias[i % stride];
}"""),
    ("mma_of_half_and_float_operands",  # §6.7; as llama.cpp's mul_mm runs on Apple GPUs
     """[[kernel]] void planted(device float* out [[buffer(0)]]) {
  simdgroup_half8x8 a = make_filled_simdgroup_matrix<half, 8, 8>(1.0h);
  simdgroup_float8x8 b = make_filled_simdgroup_matrix<float, 8, 8>(2.0f);
  simdgroup_float8x8 c = make_filled_simdgroup_matrix<float, 8, 8>(0.0f);
  simdgroup_multiply_accumulate(c, a, b, c);
  simdgroup_store(c, out, 8);
}"""),
    ("constant_in_aliases_functions_and_qualified_constructors",  # §4.2, §4
     """typedef constant float* planted_cptr;
using planted_cref = constant float&;
inline constant float* planted_pick(constant float* a) { return a + 1; }
struct PlantedBox {
  float v;
  PlantedBox() thread = default;
  PlantedBox(float x) thread : v(x) {}
  float get() const device { return v; }
  float get() const thread { return v; }
};
[[kernel]] void planted(constant float* c [[buffer(0)]], device float* out [[buffer(1)]],
                        device PlantedBox* b [[buffer(2)]]) {
  planted_cptr p = planted_pick(c);
  planted_cref r = c[0];
  PlantedBox t(2.0f);
  out[0] = p[0] + r + b->get() + t.get();
}"""),
    ("member_functions_of_the_kernels_own_types",  # §4: thread, device and constant methods
     """struct PlantedAcc {
  float v;
  float get() const { return v; }
  float get() const device { return v; }
  float twice() const { return 2.0f * v; }
  void add(float x) { v += x; }
};
[[kernel]] void planted(const device PlantedAcc* d [[buffer(0)]], constant PlantedAcc& c [[buffer(1)]],
                        device float* out [[buffer(2)]]) {
  PlantedAcc a = d[0];
  a.add(c.v);
  out[0] = a.get() + d->get() + PlantedAcc{1.0f}.twice();
}"""),
]

# Round 3: valid MSL the check refused after round 2.
FALSE_ALARMS += [
    # §3.1 Scalar and Vector Operators: a relational operator on two vectors (half ones too)
    # yields a Boolean vector; logical and equality operators take Boolean vectors.
    ("bool_vector_of_a_half_comparison",
     """[[kernel]] void planted(device half4* out [[buffer(0)]], device bool4* flags [[buffer(1)]]) {
  bool4 m = out[0] < out[1];
  bool4 k = !m && (out[1] != out[2]);
  bool2 lo = out[0].xy >= out[1].xy;
  lo[0] = lo.y || m.w;
  flags[0] = m == k;
  out[3] = select(out[1], out[2], k) + ((all(m) || any(k) || m.x || lo[1]) ? half4(1.0h) : half4(0.0h));
}"""),
    # §1.4.1 Overloading: the rules include the address space of an argument, and for a member
    # function of its object, so a class may declare one function for device and for constant
    # objects (as Apple's <metal_stdlib> declares its members for several spaces).
    ("device_and_constant_overloads_of_one_member_function",
     """struct PlantedTable {
  float v[4];
  float at(int i) const device { return v[i]; }
  float at(int i) const constant { return v[i]; }
  float operator[](int i) const device { return at(i); }
  float operator[](int i) const constant { return at(i); }
  float first() const constant { return v[0]; }
};
constant PlantedTable planted_table = {{1.0f, 2.0f, 3.0f, 4.0f}};
[[kernel]] void planted(const device PlantedTable* d [[buffer(0)]], constant PlantedTable& c [[buffer(1)]],
                        device float* out [[buffer(2)]]) {
  out[0] = d->at(0) + c.at(1) + (*d)[2] + c[3] + planted_table.at(1) + planted_table[2] + c.first();
}"""),
    # §2.5 Atomic Data Types, §6.15: atomic_bool with store, load, exchange, compare-exchange.
    ("atomic_bool",
     """[[kernel]] void planted(device atomic_bool* flag [[buffer(0)]], device float* out [[buffer(1)]]) {
  bool expected = false;
  bool won = atomic_compare_exchange_weak_explicit(flag, &expected, true, memory_order_relaxed,
                                                   memory_order_relaxed);
  atomic_store_explicit(flag, won, memory_order_relaxed);
  out[0] = (atomic_load_explicit(flag, memory_order_relaxed) ||
            atomic_exchange_explicit(flag, false, memory_order_relaxed)) ? 1.0f : 0.0f;
}"""),
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


@pytest.mark.parametrize("name,code", FALSE_ALARMS, ids=[f[0] for f in FALSE_ALARMS])
def test_valid_msl_is_no_false_alarm(name, code, tmp_path):
    problems = check_metal.check_file(_copy_with(PLANT_HOST, tmp_path, code), [PLANT_HOST.parent])
    assert problems == [], "\n".join(problems)


def test_every_rule_of_the_readme_has_its_plant():
    """README.md's table of rules names, for each rule, the plants (or tests) that show it is
    caught: every name there exists, and every plant is named there."""
    readme = (REPO / "tests" / "msl_check" / "README.md").read_text()
    rows = [ln for ln in readme.splitlines() if re.match(r"^\| \d+ \|", ln)]
    assert len(rows) >= 30, "README.md's table of rules is missing"
    named = {name for row in rows for name in re.findall(r"`(\w+)`", row.rsplit("|", 2)[-2])}
    plants = {p[0] for p in PLANTS}
    tests = {n for n in globals() if n.startswith("test_")}
    assert named - plants - tests == set(), "README.md names plants that do not exist"
    assert plants - named == set(), "plants that README.md's table does not name"


def test_kernel_names_are_unique_across_the_library(tmp_path, capsys):
    """Two files of one library (each a copy of a real kernel file) may not both define a kernel
    of one name: the .air files link into one metallib."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    kernel = "[[kernel]] void planted_{}(device float* out [[buffer(0)]]) {{ out[0] = 1.0f; }}"
    other = KERNEL_SOURCES[1]
    a = _copy_with(PLANT_HOST, first, kernel.format("one"))
    b = _copy_with(other, second, kernel.format("two"))
    assert check_metal.main([str(a), str(b), "-I", str(PLANT_HOST.parent)]) == 0
    b = _copy_with(other, second, kernel.format("one"))
    assert check_metal.main([str(a), str(b), "-I", str(PLANT_HOST.parent)]) == 1
    assert re.search(r"kernel name planted_one is also the kernel at .*/a/", capsys.readouterr().out)


def test_a_function_may_be_defined_in_another_file_of_the_library(tmp_path, capsys):
    """Called in one file and defined in another: the metallib links; defined in none: it does
    not (the file checked alone fails, see function_called_but_never_defined)."""
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    a = _copy_with(PLANT_HOST, first, """float planted_twice(float x);
[[kernel]] void planted_caller(device float* out [[buffer(0)]]) { out[0] = planted_twice(out[1]); }""")
    defined = "float planted_twice(float x) { return 2.0f * x; }"
    b = _copy_with(KERNEL_SOURCES[1], second, defined)
    assert check_metal.main([str(a), str(b), "-I", str(PLANT_HOST.parent)]) == 0
    b = _copy_with(KERNEL_SOURCES[1], second, "")
    assert check_metal.main([str(a), str(b), "-I", str(PLANT_HOST.parent)]) == 1
    assert "planted_twice is called but never defined" in capsys.readouterr().out


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
