// The Metal Shading Language as the check sees it: the MSL library names kernels may use, as
// declarations (bodies only where a declaration cannot state the rule), for clang in
// "C++ for OpenCL 2021" mode. Included before every checked translation unit (-include).
//
// Every declaration names the section of Apple's Metal Shading Language Specification it comes
// from ("MSL §n.n Title"). The titles identify the sections; the numbers were taken from the
// specification's 3.x table of contents (§2 Data Types, §4 Address Spaces, §5.8 Program Scope
// Function Constants, §6 Metal Standard Library, with §6.7 SIMD-group Matrix Functions and §6.9
// Synchronization and SIMD-group Functions) and are NOT verified against the 4.0 edition. Searched
// for on 1 December 2026 (Apple's documentation, public pages and code): no copy of 4.0's table
// of contents was reachable, and of the 3.0-3.2 editions only their tables' §1 entries, so no
// number here could be confirmed or corrected. 4.0 adds sections (tensors), so its later numbers
// may differ: where a number and a title disagree, the title is right. A name that is not here
// does not compile, so the check rejects a misspelled library call;
// tests/test_msl_check.py also fails when the simulator's compatibility header
// (tests/msl_sim/include/msl_sim) provides an MSL name that is missing here.
//
// What C++ for OpenCL does for us: real, disjoint address spaces (no implicit conversion between
// them), no `double` (cl_khr_fp64 is switched off on the command line), `half` as a type.
#pragma once
#pragma OPENCL EXTENSION cl_khr_fp16 : enable

// ---- MSL §4 Address Spaces -----------------------------------------------------------------
// §4.1 device, §4.4 threadgroup, §4.3 thread map to OpenCL's global, local and private spaces;
// device and §4.2 constant to the two disjoint halves of the global space that clang knows
// (opencl_global_device, opencl_global_host: subsets of __global, so both still convert to the
// generic space that clang's implicit copy members take; neither converts to the other). So a
// constant pointer where a device one is expected, and back, is an error, and so is a write
// through `constant` (const). A program-scope `constant` variable (which clang allows only in
// __global or __constant) is rewritten by the source step to `__global const`.
#define device __attribute__((opencl_global_device))
#define threadgroup __local
#define thread __private
#define constant __attribute__((opencl_global_host)) const
// §4.5 threadgroup_imageblock, §4.6 ray_data, §4.7 object_data: not for compute kernels; kept
// distinct from the spaces above only as far as OpenCL allows.
#define threadgroup_imageblock __local
#define ray_data __private
#define object_data __global

// ---- MSL §2.1 Scalar Data Types ----------------------------------------------------------------
// bool, char, short, int, long, half, float are the compiler's own types.
typedef unsigned char uchar;
typedef unsigned short ushort;
typedef unsigned int uint;
typedef unsigned long ulong;
typedef __bf16 bfloat;  // §2.1: bfloat, brain floating point (Metal 3.1 and later)
typedef __SIZE_TYPE__ size_t;
typedef __PTRDIFF_TYPE__ ptrdiff_t;

// ---- MSL §2.2 Vector Data Types (booln, charn, ..., floatn for n = 2, 3, 4; vec<T, n>) --------
// booln is declared with the check's helpers below (a class: see there).
#define MSLC_VECTORS(T)                                       \
  typedef T T##2 __attribute__((ext_vector_type(2)));         \
  typedef T T##3 __attribute__((ext_vector_type(3)));         \
  typedef T T##4 __attribute__((ext_vector_type(4)));
MSLC_VECTORS(char)
MSLC_VECTORS(uchar)
MSLC_VECTORS(short)
MSLC_VECTORS(ushort)
MSLC_VECTORS(int)
MSLC_VECTORS(uint)
MSLC_VECTORS(long)
MSLC_VECTORS(ulong)
MSLC_VECTORS(half)
MSLC_VECTORS(bfloat)
MSLC_VECTORS(float)
#undef MSLC_VECTORS
template <typename T, int N>
using vec = T __attribute__((ext_vector_type(N)));  // §2.2: vec<T, n>

// §2.2.3 Packed Vector Types: packed_floatn etc., aligned to their element.
#define MSLC_PACKED(T)                                                          \
  typedef T packed_##T##2 __attribute__((ext_vector_type(2), aligned(sizeof(T)))); \
  typedef T packed_##T##3 __attribute__((ext_vector_type(3), aligned(sizeof(T)))); \
  typedef T packed_##T##4 __attribute__((ext_vector_type(4), aligned(sizeof(T))));
MSLC_PACKED(char)
MSLC_PACKED(uchar)
MSLC_PACKED(short)
MSLC_PACKED(ushort)
MSLC_PACKED(int)
MSLC_PACKED(uint)
MSLC_PACKED(long)
MSLC_PACKED(ulong)
MSLC_PACKED(half)
MSLC_PACKED(bfloat)
MSLC_PACKED(float)
#undef MSLC_PACKED
typedef int packed_bool2 __attribute__((ext_vector_type(2)));
typedef int packed_bool3 __attribute__((ext_vector_type(3)));
typedef int packed_bool4 __attribute__((ext_vector_type(4)));

// The check's own helpers (mslc_ prefix: not MSL names; the source step writes calls to them).
namespace mslc {
template <typename T> struct vec_info { typedef T elem; static constexpr int n = 1; };
template <typename T, int N> struct vec_info<T __attribute__((ext_vector_type(N)))> {
  typedef T elem;
  static constexpr int n = N;
};
template <typename T> struct is_msl_scalar { static constexpr bool value = false; };
#define MSLC_SCALAR(T) template <> struct is_msl_scalar<T> { static constexpr bool value = true; };
MSLC_SCALAR(bool) MSLC_SCALAR(char) MSLC_SCALAR(uchar) MSLC_SCALAR(short) MSLC_SCALAR(ushort)
MSLC_SCALAR(int) MSLC_SCALAR(uint) MSLC_SCALAR(long) MSLC_SCALAR(ulong) MSLC_SCALAR(half)
MSLC_SCALAR(bfloat) MSLC_SCALAR(float)
#undef MSLC_SCALAR
template <typename T> struct strip { typedef T type; };
template <typename T> struct strip<const T> { typedef T type; };
template <typename T> struct strip<__private T> { typedef T type; };
template <typename T> struct strip<__global T> { typedef T type; };
template <typename T> struct strip<__local T> { typedef T type; };
template <typename T> struct strip<__private const T> { typedef T type; };
template <typename T> struct strip<__global const T> { typedef T type; };
template <typename T> struct strip<__local const T> { typedef T type; };
template <typename... A> constexpr int components() { return (0 + ... + vec_info<typename strip<A>::type>::n); }
template <bool B, typename T = void> struct when {};
template <typename T> struct when<true, T> { typedef T type; };
// A comparison's mask: clang's comparison of two n-vectors yields an integer n-vector as wide as
// their elements (short4 for half4, int4 for float4).
template <typename T> struct is_mask { static constexpr bool value = false; };
template <typename E, int N> struct is_mask<E __attribute__((ext_vector_type(N)))> {
  static constexpr bool value = __is_integral(E);
};

// §2.2 booln (bool2, bool3, bool4): MSL's comparison of two n-vectors of any element type yields
// a booln (§3.1 Scalar and Vector Operators: relational operators on vectors yield a Boolean
// vector, so "bool4 m = h4 < h4" of half vectors is valid). So booln is a class that takes
// any comparison mask of n components (or a bool, every component), converts implicitly to no
// other type (§2.12: no implicit conversion between vector types), and has the logical and
// equality operators (§3.1: bitwise ones take integers only), components x, y, z, w and m[i].
// Laid out as MSL's (one byte per component, bool3 as bool4).
template <int N> struct bool_components;
template <> struct bool_components<2> { bool x, y; };
template <> struct alignas(4) bool_components<3> { bool x, y, z; };
template <> struct alignas(4) bool_components<4> { bool x, y, z, w; };
template <int N> struct bool_vector : bool_components<N> {
  bool_vector() = default;
  bool_vector(bool b) : bool_components<N>{} { (void)b; }
  template <typename M, typename = typename when<is_mask<M>::value && vec_info<M>::n == N>::type>
  bool_vector(M mask) : bool_components<N>{} { (void)mask; }
  bool& operator[](int i) { return this->x; }
  bool operator[](int i) const { return i == 0 && this->x; }
  friend bool_vector operator!(bool_vector a) { return a; }
  friend bool_vector operator&&(bool_vector a, bool_vector b) { return b; }
  friend bool_vector operator||(bool_vector a, bool_vector b) { return b; }
  friend bool_vector operator==(bool_vector a, bool_vector b) { return b; }
  friend bool_vector operator!=(bool_vector a, bool_vector b) { return b; }
};
template <int N> struct vec_info<bool_vector<N>> { typedef bool elem; static constexpr int n = N; };
template <int N> struct is_mask<bool_vector<N>> { static constexpr bool value = true; };
template <typename T> constexpr bool is_bool_vector = false;
template <int N> constexpr bool is_bool_vector<bool_vector<N>> = true;

// §2.2.2 Vector Constructors: `floatn(x)` (every component x), `floatn(othern)` (converts each
// component), `floatn(a, b, ...)` (scalars and vectors whose components add up to n). The
// source step rewrites `floatn(...)` and `vec<T, n>(...)` to make<floatn>(...).
template <typename V, typename A>
V make(A a) {
  typedef typename strip<A>::type S;
  static_assert(is_msl_scalar<typename vec_info<S>::elem>::value,
                "MSL §2.2.2: vector constructor arguments are scalars or vectors");
  static_assert(vec_info<S>::n == 1 || vec_info<S>::n == vec_info<V>::n,
                "MSL §2.2.2: a one-argument vector constructor takes a scalar or a vector of the same length");
  if constexpr (vec_info<S>::n == 1) {
    return (V)(typename vec_info<V>::elem)a;
  } else if constexpr (is_bool_vector<S> || is_bool_vector<V>) {
    return V{};  // booln(vector), vector(booln): converts each component
  } else {
    return __builtin_convertvector(a, V);
  }
}
template <typename V, typename A, typename B, typename... R>
V make(A, B, R...) {
  static_assert(is_msl_scalar<typename vec_info<typename strip<A>::type>::elem>::value &&
                    is_msl_scalar<typename vec_info<typename strip<B>::type>::elem>::value &&
                    (true && ... && is_msl_scalar<typename vec_info<typename strip<R>::type>::elem>::value),
                "MSL §2.2.2: vector constructor arguments are scalars or vectors");
  static_assert(components<A, B, R...>() == vec_info<V>::n,
                "MSL §2.2.2: the arguments of a vector constructor must have exactly n components");
  return V{};
}
}  // namespace mslc
typedef mslc::bool_vector<2> bool2;
typedef mslc::bool_vector<3> bool3;
typedef mslc::bool_vector<4> bool4;

// ---- MSL §2.4 SIMD-group Matrix Data Types ---------------------------------------------------
namespace metal {
using ::uchar; using ::ushort; using ::uint; using ::ulong; using ::bfloat; using ::vec;

// The members take any object (clang's generic `this`): a temporary, as in the functional cast
// `simdgroup_float8x8(1.0f)`, is not in clang's private space.
template <typename T, int Cols, int Rows>
struct simdgroup_matrix {
  static_assert(Cols == 8 && Rows == 8, "MSL §2.4: simdgroup_matrix is 8x8");
  static_assert(__is_same(T, half) || __is_same(T, bfloat) || __is_same(T, float),
                "MSL §2.4: a simdgroup_matrix holds half, bfloat or float");
  simdgroup_matrix();
  explicit simdgroup_matrix(T diagonal);  // §6.7: a diagonal matrix
  // §6.7 (thread_elements): this thread's share of the matrix, a vec<T, 2>.
  thread vec<T, 2>& thread_elements();
  vec<T, 2> thread_elements() const;
};
typedef simdgroup_matrix<half, 8, 8> simdgroup_half8x8;
typedef simdgroup_matrix<bfloat, 8, 8> simdgroup_bfloat8x8;
typedef simdgroup_matrix<float, 8, 8> simdgroup_float8x8;
}  // namespace metal

// ---- MSL §6 Metal Standard Library ----------------------------------------------------------
namespace metal {

// Overload sets of one function for a list of types (MSL declares each function per type; an
// overload set, unlike a template, converts arguments the way Apple's compiler does).
#define MSLC_FLOAT_TYPES(X) X(float) X(float2) X(float3) X(float4) X(half) X(half2) X(half3) X(half4)
#define MSLC_INT_TYPES(X)                                                                        \
  X(char) X(char2) X(char3) X(char4) X(uchar) X(uchar2) X(uchar3) X(uchar4) X(short) X(short2)   \
  X(short3) X(short4) X(ushort) X(ushort2) X(ushort3) X(ushort4) X(int) X(int2) X(int3) X(int4)  \
  X(uint) X(uint2) X(uint3) X(uint4) X(long) X(long2) X(long3) X(long4) X(ulong) X(ulong2)       \
  X(ulong3) X(ulong4)

// §6.2 Common Functions (float and half, scalar and vector).
#define MSLC_COMMON(T)                                                            \
  T clamp(T x, T minval, T maxval); T mix(T x, T y, T a); T saturate(T x); T sign(T x); \
  T smoothstep(T edge0, T edge1, T x); T step(T edge, T x);
MSLC_FLOAT_TYPES(MSLC_COMMON)

// §6.3 Integer Functions.
#define MSLC_INTEGER(T)                                                                          \
  T abs(T x); T absdiff(T x, T y); T addsat(T x, T y); T clamp(T x, T minval, T maxval);         \
  T clz(T x); T ctz(T x); T hadd(T x, T y); T madhi(T a, T b, T c); T madsat(T a, T b, T c);    \
  T max(T x, T y); T max3(T x, T y, T z); T median3(T x, T y, T z); T min(T x, T y);             \
  T min3(T x, T y, T z); T mulhi(T x, T y); T popcount(T x); T reverse_bits(T x);              \
  T rhadd(T x, T y); T rotate(T v, T i); T subsat(T x, T y);                                     \
  T extract_bits(T x, uint offset, uint bits); T insert_bits(T base, T insert, uint offset, uint bits);
MSLC_INT_TYPES(MSLC_INTEGER)
#undef MSLC_INTEGER

// §6.4 Relational Functions. all/any/select take a booln and, as MSL does through booln, the
// integer mask clang's comparison made (char, short, int or long elements, by the compared
// type's width).
}  // namespace metal
namespace mslc {
template <typename V, typename M> using same_length_mask =
    typename when<is_mask<M>::value && vec_info<V>::n == vec_info<M>::n, V>::type;
}  // namespace mslc
namespace metal {
bool all(bool x); bool any(bool x);
template <typename M> typename mslc::when<mslc::is_mask<M>::value, bool>::type all(M x);
template <typename M> typename mslc::when<mslc::is_mask<M>::value, bool>::type any(M x);
#define MSLC_RELATIONAL(T)                                                                   \
  bool isfinite(T x); bool isinf(T x); bool isnan(T x); bool isnormal(T x);                \
  bool isordered(T x, T y); bool isunordered(T x, T y); bool signbit(T x); T select(T a, T b, bool c);
MSLC_RELATIONAL(float) MSLC_RELATIONAL(half)
#undef MSLC_RELATIONAL
#define MSLC_RELATIONAL_INT(T) T select(T a, T b, bool c);
MSLC_INT_TYPES(MSLC_RELATIONAL_INT)
MSLC_RELATIONAL_INT(bool)
#undef MSLC_RELATIONAL_INT
#define MSLC_SELECT_VEC(T) template <typename M> mslc::same_length_mask<T, M> select(T a, T b, M c);
MSLC_SELECT_VEC(float2) MSLC_SELECT_VEC(float3) MSLC_SELECT_VEC(float4)
MSLC_SELECT_VEC(half2) MSLC_SELECT_VEC(half3) MSLC_SELECT_VEC(half4)
MSLC_SELECT_VEC(int2) MSLC_SELECT_VEC(int3) MSLC_SELECT_VEC(int4)
MSLC_SELECT_VEC(uint2) MSLC_SELECT_VEC(uint3) MSLC_SELECT_VEC(uint4)
#undef MSLC_SELECT_VEC

// §6.5 Math Functions (float and half, scalar and vector), in metal::, metal::fast:: and
// metal::precise:: (§6.5: the fast and precise variants of the same names).
#define MSLC_MATH(T)                                                                             \
  T acos(T x); T acosh(T x); T asin(T x); T asinh(T x); T atan(T y_over_x); T atan2(T y, T x);   \
  T atanh(T x); T ceil(T x); T copysign(T x, T y); T cos(T x); T cosh(T x); T cospi(T x);       \
  T divide(T x, T y); T exp(T x); T exp2(T x); T exp10(T x); T fabs(T x); T abs(T x);           \
  T fdim(T x, T y); T floor(T x); T fma(T a, T b, T c); T fmax(T x, T y); T fmax3(T x, T y, T z); \
  T fmedian3(T x, T y, T z); T fmin(T x, T y); T fmin3(T x, T y, T z); T fmod(T x, T y);        \
  T fract(T x); T log(T x); T log2(T x); T log10(T x); T max(T x, T y); T max3(T x, T y, T z);  \
  T median3(T x, T y, T z); T min(T x, T y); T min3(T x, T y, T z); T nextafter(T x, T y);     \
  T pow(T x, T y); T powr(T x, T y); T rint(T x); T round(T x); T rsqrt(T x); T sin(T x);       \
  T sinh(T x); T sinpi(T x); T sqrt(T x); T tan(T x); T tanh(T x); T tanpi(T x); T trunc(T x);
MSLC_FLOAT_TYPES(MSLC_MATH)
namespace fast {
MSLC_FLOAT_TYPES(MSLC_MATH)
MSLC_FLOAT_TYPES(MSLC_COMMON)  // §6.2: clamp, saturate etc. have fast:: and precise:: forms
}  // namespace fast
namespace precise {
MSLC_FLOAT_TYPES(MSLC_MATH)
MSLC_FLOAT_TYPES(MSLC_COMMON)
}  // namespace precise
#undef MSLC_MATH
#undef MSLC_COMMON

// §6.8 Geometric Functions.
#define MSLC_GEOMETRIC(T, S)                                                                   \
  S distance(T x, T y); S dot(T x, T y); S length(T x); S length_squared(T x); T normalize(T x);
MSLC_GEOMETRIC(float2, float) MSLC_GEOMETRIC(float3, float) MSLC_GEOMETRIC(float4, float)
MSLC_GEOMETRIC(half2, half) MSLC_GEOMETRIC(half3, half) MSLC_GEOMETRIC(half4, half)
float3 cross(float3 x, float3 y); half3 cross(half3 x, half3 y);
namespace fast {  // §6.8: fast:: and precise:: forms of distance, length, normalize
MSLC_GEOMETRIC(float2, float) MSLC_GEOMETRIC(float3, float) MSLC_GEOMETRIC(float4, float)
}  // namespace fast
namespace precise {
MSLC_GEOMETRIC(float2, float) MSLC_GEOMETRIC(float3, float) MSLC_GEOMETRIC(float4, float)
}  // namespace precise
#undef MSLC_GEOMETRIC

// §6.9.1 Threadgroup and SIMD-group Synchronization Functions.
enum class mem_flags {
  mem_none = 0,
  mem_device = 1,
  mem_threadgroup = 2,
  mem_texture = 4,
  mem_threadgroup_imageblock = 8,
  mem_object_data = 16,
};
constexpr mem_flags operator|(mem_flags a, mem_flags b) { return mem_flags(int(a) | int(b)); }
void threadgroup_barrier(mem_flags flags);
void simdgroup_barrier(mem_flags flags);

// §6.9.2 SIMD-group Functions: T is a scalar or vector of int, uint, short, ushort, char, uchar,
// float or half (the bitwise reductions: integers only).
namespace mslc_simd {
template <typename T> struct is_simd_type { static constexpr bool value = false; };
template <typename T> struct is_simd_int { static constexpr bool value = false; };
#define MSLC_SIMD_FLOAT(T) template <> struct is_simd_type<T> { static constexpr bool value = true; };
#define MSLC_SIMD_INT(T)                                                         \
  template <> struct is_simd_type<T> { static constexpr bool value = true; };    \
  template <> struct is_simd_int<T> { static constexpr bool value = true; };
MSLC_FLOAT_TYPES(MSLC_SIMD_FLOAT)
MSLC_SIMD_INT(char) MSLC_SIMD_INT(char2) MSLC_SIMD_INT(char3) MSLC_SIMD_INT(char4)
MSLC_SIMD_INT(uchar) MSLC_SIMD_INT(uchar2) MSLC_SIMD_INT(uchar3) MSLC_SIMD_INT(uchar4)
MSLC_SIMD_INT(short) MSLC_SIMD_INT(short2) MSLC_SIMD_INT(short3) MSLC_SIMD_INT(short4)
MSLC_SIMD_INT(ushort) MSLC_SIMD_INT(ushort2) MSLC_SIMD_INT(ushort3) MSLC_SIMD_INT(ushort4)
MSLC_SIMD_INT(int) MSLC_SIMD_INT(int2) MSLC_SIMD_INT(int3) MSLC_SIMD_INT(int4)
MSLC_SIMD_INT(uint) MSLC_SIMD_INT(uint2) MSLC_SIMD_INT(uint3) MSLC_SIMD_INT(uint4)
#undef MSLC_SIMD_FLOAT
#undef MSLC_SIMD_INT
template <bool B, typename T = void> struct enable_if {};
template <typename T> struct enable_if<true, T> { typedef T type; };
template <typename T> using any_t = typename enable_if<is_simd_type<T>::value, T>::type;
template <typename T> using int_t = typename enable_if<is_simd_int<T>::value, T>::type;
}  // namespace mslc_simd
// Non-deduced T so that arguments convert as MSL's per-type overloads would: the value's type
// picks T, a lane index converts to ushort.
#define MSLC_SIMD1(name) template <typename T> mslc_simd::any_t<T> name(T data);
#define MSLC_SIMD1I(name) template <typename T> mslc_simd::int_t<T> name(T data);
#define MSLC_SIMD2(name) template <typename T> mslc_simd::any_t<T> name(T data, ushort lane_or_delta);
MSLC_SIMD2(simd_broadcast) MSLC_SIMD1(simd_broadcast_first) MSLC_SIMD2(simd_shuffle)
MSLC_SIMD2(simd_shuffle_down) MSLC_SIMD2(simd_shuffle_up) MSLC_SIMD2(simd_shuffle_rotate_down)
MSLC_SIMD2(simd_shuffle_rotate_up) MSLC_SIMD2(simd_shuffle_xor)
template <typename T> mslc_simd::any_t<T> simd_shuffle_and_fill_down(T data, T filling_data, ushort delta);
template <typename T> mslc_simd::any_t<T> simd_shuffle_and_fill_up(T data, T filling_data, ushort delta);
MSLC_SIMD1(simd_max) MSLC_SIMD1(simd_min) MSLC_SIMD1(simd_product) MSLC_SIMD1(simd_sum)
MSLC_SIMD1(simd_prefix_exclusive_product) MSLC_SIMD1(simd_prefix_exclusive_sum)
MSLC_SIMD1(simd_prefix_inclusive_product) MSLC_SIMD1(simd_prefix_inclusive_sum)
MSLC_SIMD1I(simd_and) MSLC_SIMD1I(simd_or) MSLC_SIMD1I(simd_xor)
#undef MSLC_SIMD1
#undef MSLC_SIMD1I
#undef MSLC_SIMD2
// §6.9.2 (simd_vote): the result of simd_ballot / simd_active_threads_mask.
struct simd_vote {  // members take any object: `simd_ballot(x).any()` calls one on a temporary
  typedef ulong vote_t;
  explicit simd_vote(vote_t v = 0);
  explicit operator vote_t() const;
  bool all() const;
  bool any() const;
};
bool simd_all(bool expr);
bool simd_any(bool expr);
simd_vote simd_ballot(bool expr);
simd_vote simd_active_threads_mask();
bool simd_is_first();
bool simd_is_helper_thread();

// §6.7 SIMD-group Matrix Functions. The element types of load/store agree with the matrix's;
// the source is device or threadgroup memory; origin is (column, row).
template <typename T, int Cols, int Rows>
simdgroup_matrix<T, Cols, Rows> make_filled_simdgroup_matrix(T value);
template <typename T, int Cols, int Rows>
void simdgroup_load(thread simdgroup_matrix<T, Cols, Rows>& d, const device T* src,
                    ulong elements_per_row = Cols, ulong2 matrix_origin = 0,
                    bool transpose_matrix = false);
template <typename T, int Cols, int Rows>
void simdgroup_load(thread simdgroup_matrix<T, Cols, Rows>& d, const threadgroup T* src,
                    ulong elements_per_row = Cols, ulong2 matrix_origin = 0,
                    bool transpose_matrix = false);
template <typename T, int Cols, int Rows>
void simdgroup_store(simdgroup_matrix<T, Cols, Rows> a, device T* dst, ulong elements_per_row = Cols,
                     ulong2 matrix_origin = 0, bool transpose_matrix = false);
template <typename T, int Cols, int Rows>
void simdgroup_store(simdgroup_matrix<T, Cols, Rows> a, threadgroup T* dst,
                     ulong elements_per_row = Cols, ulong2 matrix_origin = 0,
                     bool transpose_matrix = false);
// d = a * b + c; a is K columns by M rows, b N by K, c and d N by M. The specification declares
// one element type T for all four; Apple's compiler takes a and b of another type than d (e.g.
// llama.cpp's mul_mm: half a, float b and d), so only d and c (the accumulator, read and written
// in place) must agree here.
template <typename Td, typename Ta, typename Tb, typename Tc, int M, int N, int K>
typename mslc::when<__is_same(Td, Tc)>::type simdgroup_multiply_accumulate(
                                   thread simdgroup_matrix<Td, N, M>& d,
                                   const thread simdgroup_matrix<Ta, K, M>& a,
                                   const thread simdgroup_matrix<Tb, N, K>& b,
                                   const thread simdgroup_matrix<Tc, N, M>& c);
template <typename Td, typename Ta, typename Tb, int M, int N, int K>
void simdgroup_multiply(thread simdgroup_matrix<Td, N, M>& d,
                        const thread simdgroup_matrix<Ta, K, M>& a,
                        const thread simdgroup_matrix<Tb, N, K>& b);

}  // namespace metal

// ---- MSL §2.3 Matrix Data Types: halfnxm, floatnxm (n columns, m rows; n, m = 2, 3, 4) -----
namespace metal {
template <typename T, int Cols, int Rows>
struct matrix {
  static_assert(Cols >= 2 && Cols <= 4 && Rows >= 2 && Rows <= 4,
                "MSL §2.3: 2 to 4 columns and rows");
  static_assert(__is_same(T, half) || __is_same(T, float), "MSL §2.3: half or float matrices");
  vec<T, Rows> columns[Cols];
  matrix();
  explicit matrix(T diagonal);  // §2.3.2 (matrix constructors): a diagonal matrix
  template <typename... C, typename = typename mslc::when<sizeof...(C) + 1 == Cols>::type>
  matrix(vec<T, Rows> c0, C... rest);  // §2.3.2: one vector per column
  vec<T, Rows>& operator[](int column);  // §2.3.1 Accessing Matrix Components
  const vec<T, Rows>& operator[](int column) const;
};
#define MSLC_MATRIX(T, C, R) typedef matrix<T, C, R> T##C##x##R;
#define MSLC_MATRICES(T) MSLC_MATRIX(T, 2, 2) MSLC_MATRIX(T, 2, 3) MSLC_MATRIX(T, 2, 4) \
  MSLC_MATRIX(T, 3, 2) MSLC_MATRIX(T, 3, 3) MSLC_MATRIX(T, 3, 4) MSLC_MATRIX(T, 4, 2)      \
  MSLC_MATRIX(T, 4, 3) MSLC_MATRIX(T, 4, 4)
MSLC_MATRICES(half)
MSLC_MATRICES(float)
#undef MSLC_MATRICES
#undef MSLC_MATRIX
// §2.3 and §6.10 (Matrix Functions): the linear-algebra operators, transpose, determinant.
template <typename T, int C, int R> matrix<T, C, R> operator+(matrix<T, C, R> a, matrix<T, C, R> b);
template <typename T, int C, int R> matrix<T, C, R> operator-(matrix<T, C, R> a, matrix<T, C, R> b);
template <typename T, int C, int R> matrix<T, C, R> operator*(matrix<T, C, R> a, T s);
template <typename T, int C, int R> matrix<T, C, R> operator*(T s, matrix<T, C, R> a);
template <typename T, int C, int R> vec<T, R> operator*(matrix<T, C, R> a, vec<T, C> v);
template <typename T, int C, int R> vec<T, C> operator*(vec<T, R> v, matrix<T, C, R> a);
template <typename T, int C, int R, int K>
matrix<T, C, R> operator*(matrix<T, K, R> a, matrix<T, C, K> b);
template <typename T, int C, int R> matrix<T, R, C> transpose(matrix<T, C, R> a);
template <typename T, int N> T determinant(matrix<T, N, N> a);
}  // namespace metal

// ---- MSL §6.15 Atomic Functions ---------------------------------------------------------------
// MSL's atomic_int, atomic_uint, atomic_float (§2.5 Atomic Data Types) are the atomic types C++
// for OpenCL already has under these names; metal:: re-exports the same types (no ambiguity
// under `using namespace metal`), and atomic<T> names them. atomic_bool, which OpenCL lacks, is
// an opaque type here. Objects are in device or threadgroup memory. (atomic_ulong is not
// declared: OpenCL has no such type.)
namespace mslc {
struct atomic_bool_object { bool opaque; };
template <typename A> struct atomic_value {};
template <> struct atomic_value<::atomic_int> { typedef int type; };
template <> struct atomic_value<::atomic_uint> { typedef unsigned int type; };
template <> struct atomic_value<::atomic_float> { typedef float type; };
template <> struct atomic_value<atomic_bool_object> { typedef bool type; };
// The fetch-and-modify functions: not on atomic_bool. §6.15 (Atomic Functions): MSL implements a
// subset of C++14's atomics, and C++14's atomic<bool> has no fetch_add, fetch_and, ... (only
// store, load, exchange and compare-exchange).
template <typename A> struct atomic_fetch_value : atomic_value<A> {};
template <> struct atomic_fetch_value<atomic_bool_object> {};
template <typename T> struct atomic_of {};
template <> struct atomic_of<int> { typedef ::atomic_int type; };
template <> struct atomic_of<unsigned int> { typedef ::atomic_uint type; };
template <> struct atomic_of<float> { typedef ::atomic_float type; };
template <> struct atomic_of<bool> { typedef atomic_bool_object type; };
}  // namespace mslc
typedef mslc::atomic_bool_object atomic_bool;
namespace metal {
using ::atomic_int; using ::atomic_uint; using ::atomic_float; using ::atomic_bool;
template <typename T> using atomic = typename mslc::atomic_of<T>::type;
// §6.15.1 Memory Order. Through MSL 4.0 the atomic functions take memory_order_relaxed only
// (MSL 2.1 §5.13.1: "For atomic operations, memory_order_relaxed is the only value supported",
// as quoted in gpuweb/WSL issue #252; acquire, release, acq_rel and seq_cst atomics are Metal
// 4.1's, JuliaGPU/Metal.jl PR #889). The other orders are declared so that
// ast_rules.atomic_orders names the error.
enum memory_order { memory_order_relaxed = 0, memory_order_acquire = 2, memory_order_release = 3,
                    memory_order_acq_rel = 4, memory_order_seq_cst = 5 };
#define MSLC_ATOMIC_FUNCTIONS(SPACE)                                                               \
  template <typename A> void atomic_store_explicit(volatile SPACE A* object,                    \
      typename mslc::atomic_value<A>::type desired, memory_order order);                         \
  template <typename A> typename mslc::atomic_value<A>::type atomic_load_explicit(              \
      const volatile SPACE A* object, memory_order order);                                       \
  template <typename A> typename mslc::atomic_value<A>::type atomic_exchange_explicit(          \
      volatile SPACE A* object, typename mslc::atomic_value<A>::type desired, memory_order order); \
  template <typename A> bool atomic_compare_exchange_weak_explicit(volatile SPACE A* object,    \
      thread typename mslc::atomic_value<A>::type* expected,                                     \
      typename mslc::atomic_value<A>::type desired, memory_order succ, memory_order fail);       \
  MSLC_ATOMIC_FETCH(SPACE, add) MSLC_ATOMIC_FETCH(SPACE, sub) MSLC_ATOMIC_FETCH(SPACE, and)      \
  MSLC_ATOMIC_FETCH(SPACE, or) MSLC_ATOMIC_FETCH(SPACE, xor) MSLC_ATOMIC_FETCH(SPACE, min)      \
  MSLC_ATOMIC_FETCH(SPACE, max)
#define MSLC_ATOMIC_FETCH(SPACE, op)                                                               \
  template <typename A> typename mslc::atomic_fetch_value<A>::type atomic_fetch_##op##_explicit( \
      volatile SPACE A* object, typename mslc::atomic_fetch_value<A>::type operand,              \
      memory_order order);
MSLC_ATOMIC_FUNCTIONS(device)
MSLC_ATOMIC_FUNCTIONS(threadgroup)
#undef MSLC_ATOMIC_FETCH
#undef MSLC_ATOMIC_FUNCTIONS
}  // namespace metal

// ---- MSL §2.19 Type Conversions and Re-interpreting Data: as_type<T>(x) ---------------------
namespace metal {
template <typename To, typename From>
To as_type(From from) {
  static_assert(sizeof(To) == sizeof(From), "MSL: as_type needs types of the same size");
  return __builtin_bit_cast(To, from);
}
}  // namespace metal

// ---- MSL §5.8 Program Scope Function Constants: is_function_constant_defined(name) ----------
// The source step turns `constant T x [[function_constant(i)]];` into an extern declaration, so
// x is never a compile-time value here (as in MSL before the pipeline is built).
namespace metal {
template <typename T>
bool is_function_constant_defined(const __global T& function_constant);
}  // namespace metal

// ---- MSL §6.5 (its tables of constants): floating-point constants --------------------------
#define INFINITY (__builtin_inff())
#define NAN (__builtin_nanf(""))
#define MAXFLOAT 0x1.fffffep+127f
#define HUGE_VALF (__builtin_huge_valf())
#define FLT_MAX 0x1.fffffep+127f
#define FLT_MIN 0x1.0p-126f
#define FLT_EPSILON 0x1.0p-23f
#define HALF_MAX ((half)65504.0f)
#define M_PI_F 3.14159274101257f
#define M_E_F 2.71828174591064f
#define M_LN2_F 0.693147182464599f
#define M_LOG2E_F 1.44269502162933f
#define M_SQRT2_F 1.41421353816986f

#undef MSLC_FLOAT_TYPES
#undef MSLC_INT_TYPES

// The storage behind a function-scope `threadgroup T a[N];` (the source step's rewrite: OpenCL
// allows local variables only in kernels, and MSL kernels may be templates).
namespace mslc {
template <typename T>
__local T& threadgroup_storage();
}  // namespace mslc

// ---- METAL_FUNC ---------------------------------------------------------------------------------
// Not in the specification's text: the function qualifier Apple's <metal_stdlib> defines and MSL
// libraries use (e.g. MLX's kernels), an always-inlined inline function.
#define METAL_FUNC inline __attribute__((__always_inline__))

// ---- Type traits and numeric limits -----------------------------------------------------------
// Not specified name by name in the MSL specification: Apple's <metal_type_traits> and
// <metal_limits> (included by <metal_stdlib>) provide C++'s traits in namespace metal, and MSL
// sources rely on them (e.g. metal::enable_if_t, metal::is_same_v, metal::numeric_limits). Only
// the C++ standard's names and meanings are declared here.
namespace metal {
template <typename T, T v> struct integral_constant {
  static constexpr T value = v;
  typedef T value_type;
  constexpr operator T() const { return v; }
};
template <bool B> using bool_constant = integral_constant<bool, B>;
typedef bool_constant<true> true_type;
typedef bool_constant<false> false_type;
template <bool B, typename T = void> struct enable_if {};
template <typename T> struct enable_if<true, T> { typedef T type; };
template <bool B, typename T = void> using enable_if_t = typename enable_if<B, T>::type;
template <bool B, typename T, typename F> struct conditional { typedef T type; };
template <typename T, typename F> struct conditional<false, T, F> { typedef F type; };
template <bool B, typename T, typename F> using conditional_t = typename conditional<B, T, F>::type;
template <typename T, typename U> struct is_same : bool_constant<__is_same(T, U)> {};
template <typename T, typename U> constexpr bool is_same_v = __is_same(T, U);
template <typename T> using remove_cv_t = __remove_cv(T);
template <typename T> using remove_const_t = __remove_const(T);
template <typename T> using remove_reference_t = __remove_reference_t(T);
template <typename T> using remove_pointer_t = __remove_pointer(T);
template <typename T> using add_const_t = const T;
template <typename T> using add_pointer_t = __add_pointer(T);
template <typename T> using decay_t = __decay(T);
template <typename T> struct is_integral : bool_constant<__is_integral(T)> {};
template <typename T> constexpr bool is_integral_v = __is_integral(T);
template <typename T> struct is_floating_point
    : bool_constant<__is_floating_point(T) || __is_same(__remove_cv(T), bfloat)> {};
template <typename T> constexpr bool is_floating_point_v = is_floating_point<T>::value;
template <typename T> constexpr bool is_arithmetic_v = __is_arithmetic(T) || is_floating_point_v<T>;
template <typename T> struct is_scalar : bool_constant<is_arithmetic_v<T>> {};
template <typename T> constexpr bool is_scalar_v = is_scalar<T>::value;
template <typename T> struct is_vector : bool_constant<(mslc::vec_info<__remove_cv(T)>::n > 1)> {};
template <typename T> constexpr bool is_vector_v = is_vector<T>::value;
template <typename T> constexpr bool is_signed_v = __is_signed(T);
template <typename T> constexpr bool is_unsigned_v = __is_unsigned(T);
template <typename T> constexpr bool is_const_v = __is_const(T);
template <typename T> constexpr bool is_pointer_v = __is_pointer(T);
template <typename F, typename T> constexpr bool is_convertible_v = __is_convertible(F, T);
template <typename T, T... I> struct integer_sequence { static constexpr ulong size() { return sizeof...(I); } };
template <ulong... I> using index_sequence = integer_sequence<ulong, I...>;
template <typename T, T N> using make_integer_sequence = __make_integer_seq<integer_sequence, T, N>;
template <ulong N> using make_index_sequence = make_integer_sequence<ulong, N>;

template <typename T> struct numeric_limits {
  static constexpr bool is_specialized = false;
};
#define MSLC_LIMITS(T, INTEGER, SIGNED, DIGITS, MIN, MAX, LOWEST, EPS, INF, NAN_, DENORM)   \
  template <> struct numeric_limits<T> {                                                   \
    static constexpr bool is_specialized = true, is_integer = INTEGER, is_signed = SIGNED;   \
    static constexpr int digits = DIGITS;                                                   \
    static constexpr T min() { return T(MIN); }                                             \
    static constexpr T max() { return T(MAX); }                                             \
    static constexpr T lowest() { return T(LOWEST); }                                       \
    static constexpr T epsilon() { return T(EPS); }                                         \
    static constexpr T round_error() { return T(INTEGER ? 0 : 0.5f); }                      \
    static constexpr T infinity() { return T(INF); }                                        \
    static constexpr T quiet_NaN() { return T(NAN_); }                                      \
    static constexpr T denorm_min() { return T(DENORM); }                                   \
  };
#define MSLC_INT_LIMITS(T, SIGNED, DIGITS, MIN, MAX) \
  MSLC_LIMITS(T, true, SIGNED, DIGITS, MIN, MAX, MIN, 0, 0, 0, 0)
MSLC_INT_LIMITS(bool, false, 1, false, true)
MSLC_INT_LIMITS(char, true, 7, -128, 127)
MSLC_INT_LIMITS(uchar, false, 8, 0, 255)
MSLC_INT_LIMITS(short, true, 15, -32768, 32767)
MSLC_INT_LIMITS(ushort, false, 16, 0, 65535)
MSLC_INT_LIMITS(int, true, 31, -2147483647 - 1, 2147483647)
MSLC_INT_LIMITS(uint, false, 32, 0u, 4294967295u)
MSLC_INT_LIMITS(long, true, 63, -9223372036854775807l - 1, 9223372036854775807l)
MSLC_INT_LIMITS(ulong, false, 64, 0ul, 18446744073709551615ul)
MSLC_LIMITS(half, false, true, 11, 6.103515625e-05f, 65504.0f, -65504.0f, 0.0009765625f,
            __builtin_inff(), __builtin_nanf(""), 5.9604644775390625e-08f)
MSLC_LIMITS(bfloat, false, true, 8, 1.17549435e-38f, 3.38953139e+38f, -3.38953139e+38f, 0.0078125f,
            __builtin_inff(), __builtin_nanf(""), 9.18354962e-41f)
MSLC_LIMITS(float, false, true, 24, __FLT_MIN__, __FLT_MAX__, -__FLT_MAX__, __FLT_EPSILON__,
            __builtin_inff(), __builtin_nanf(""), __FLT_DENORM_MIN__)
#undef MSLC_INT_LIMITS
#undef MSLC_LIMITS
}  // namespace metal
