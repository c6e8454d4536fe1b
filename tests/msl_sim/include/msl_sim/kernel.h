// What the source step's output refers to: kernel registration, the argument binder that builds
// each kernel parameter at launch, function constants, and function-scope threadgroup variables.
#pragma once

#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#include "abi.h"
#include "function_constant.h"
#include "vec.h"

namespace msl_sim {

// What a kernel parameter is bound to (from its [[...]] attribute).
enum class ParamKind : int {
  Buffer,
  Threadgroup,
  ThreadPositionInGrid,
  ThreadgroupPositionInGrid,
  ThreadPositionInThreadgroup,
  ThreadIndexInThreadgroup,
  ThreadsPerThreadgroup,
  ThreadgroupsPerGrid,
  ThreadsPerGrid,
  SimdgroupIndexInThreadgroup,
  ThreadIndexInSimdgroup,
  SimdgroupsPerThreadgroup,
  ThreadsPerSimdgroup,
  QuadgroupIndexInThreadgroup,
  ThreadIndexInQuadgroup,
  QuadgroupsPerThreadgroup,
};

struct ParamDesc {
  ParamKind kind;
  int index;            // buffer / threadgroup index
  bool (*enabled)();    // [[function_constant(x)]] on the parameter, else null
  const char* name;     // the parameter's name, for reports
};

using KernelThunk = void (*)(const ParamDesc*);

// Program-scope constants of one translation unit, (re)computed at each dispatch in order.
struct ConstantInit;
struct TuConstants {
  ConstantInit* head;
  ConstantInit* tail;
};

struct ConstantInit {
  ConstantInit* next = nullptr;
  void (*apply)(ConstantInit&, const FunctionConstantLookup&) = nullptr;
  void* var = nullptr;
  bool* defined = nullptr;
  int index = -1;
  void (*derived)() = nullptr;

  // `constant T name [[function_constant(index)]];`
  template <class T>
  ConstantInit(TuConstants& tu, int idx, T& v, bool& def) : var(&v), defined(&def), index(idx) {
    apply = [](ConstantInit& self, const FunctionConstantLookup& lookup) {
      const FunctionConstant* fc = lookup(self.index);
      *self.defined = fc != nullptr;
      *static_cast<T*>(self.var) = fc ? fc->as<T>() : T{};
    };
    link(tu);
  }
  // `constant T name = expression-using-function-constants;`
  ConstantInit(TuConstants& tu, void (*fn)()) : derived(fn) {
    apply = [](ConstantInit& self, const FunctionConstantLookup&) { self.derived(); };
    link(tu);
  }

 private:
  void link(TuConstants& tu) {
    if (tu.tail) tu.tail->next = this;
    else tu.head = this;
    tu.tail = this;
  }
};

// One registered kernel: constructed by the source step's output at static-initialisation time.
struct KernelRegistration {
  const char* name;
  KernelThunk thunk;
  const ParamDesc* params;
  int param_count;
  TuConstants* constants;
  const char* file;
  unsigned line;
  KernelRegistration(const char* name, KernelThunk thunk, const ParamDesc* params, int param_count,
                     TuConstants* constants, const char* file, unsigned line);
  ~KernelRegistration();
  KernelRegistration(const KernelRegistration&) = delete;
  KernelRegistration& operator=(const KernelRegistration&) = delete;
};

// ---- argument binder ----

template <class T>
T position_arg(uint32_t x, uint32_t y, uint32_t z) {
  if constexpr (VecLike<T>) {
    T r;
    constexpr int n = components<T>();
    r[0] = typename vec_traits<T>::elem(x);
    if constexpr (n > 1) r[1] = typename vec_traits<T>::elem(y);
    if constexpr (n > 2) r[2] = typename vec_traits<T>::elem(z);
    return r;
  } else {
    return T(x);
  }
}

template <class T>
T make_arg(const ParamDesc& d) {
  const rt::Thread& t = *rt::t_thread;
  const rt::Geometry& g = *t.geometry;
  using Plain = std::remove_cvref_t<T>;
  if constexpr (std::is_pointer_v<Plain> || std::is_reference_v<T>) {
    void* p = nullptr;
    if (d.kind == ParamKind::Buffer) p = t.buffers[d.index];
    else if (d.kind == ParamKind::Threadgroup) p = t.threadgroup[d.index];
    if constexpr (std::is_pointer_v<Plain>) {
      return reinterpret_cast<Plain>(p);
    } else {
      return *reinterpret_cast<std::remove_reference_t<T>*>(p);
    }
  } else {
    const uint32_t* tpt = g.threads_per_threadgroup;
    switch (d.kind) {
      case ParamKind::ThreadPositionInGrid:
        return position_arg<Plain>(t.tgid[0] * tpt[0] + t.tid[0], t.tgid[1] * tpt[1] + t.tid[1],
                                   t.tgid[2] * tpt[2] + t.tid[2]);
      case ParamKind::ThreadgroupPositionInGrid:
        return position_arg<Plain>(t.tgid[0], t.tgid[1], t.tgid[2]);
      case ParamKind::ThreadPositionInThreadgroup:
        return position_arg<Plain>(t.tid[0], t.tid[1], t.tid[2]);
      case ParamKind::ThreadIndexInThreadgroup:
        return position_arg<Plain>(t.index, 0, 0);
      case ParamKind::ThreadsPerThreadgroup:
        return position_arg<Plain>(tpt[0], tpt[1], tpt[2]);
      case ParamKind::ThreadgroupsPerGrid:
        return position_arg<Plain>(g.threadgroups[0], g.threadgroups[1], g.threadgroups[2]);
      case ParamKind::ThreadsPerGrid:
        return position_arg<Plain>(g.threadgroups[0] * tpt[0], g.threadgroups[1] * tpt[1],
                                   g.threadgroups[2] * tpt[2]);
      case ParamKind::SimdgroupIndexInThreadgroup:
        return position_arg<Plain>(t.simd, 0, 0);
      case ParamKind::ThreadIndexInSimdgroup:
        return position_arg<Plain>(t.lane, 0, 0);
      case ParamKind::SimdgroupsPerThreadgroup:
        return position_arg<Plain>(g.simdgroups_per_threadgroup, 0, 0);
      case ParamKind::ThreadsPerSimdgroup:
        return position_arg<Plain>(uint32_t(kSimdWidth), 0, 0);
      case ParamKind::QuadgroupIndexInThreadgroup:
        return position_arg<Plain>(t.index / 4, 0, 0);
      case ParamKind::ThreadIndexInQuadgroup:
        return position_arg<Plain>(t.index % 4, 0, 0);
      case ParamKind::QuadgroupsPerThreadgroup:
        return position_arg<Plain>((tpt[0] * tpt[1] * tpt[2] + 3) / 4, 0, 0);
      default:
        return Plain{};
    }
  }
}

template <auto F, class... A, size_t... I>
void call_kernel(const ParamDesc* d, std::index_sequence<I...>) {
  F(make_arg<A>(d[I])...);
}
template <auto F, class... A>
void call_kernel_sig(void (*)(A...), const ParamDesc* d) {
  call_kernel<F, A...>(d, std::index_sequence_for<A...>{});
}
// The per-thread entry point of kernel F: builds each argument, then calls F.
template <auto F>
void kernel_thunk(const ParamDesc* d) {
  call_kernel_sig<F>(F, d);
}

// `threadgroup T name[N];` inside a function: one object per threadgroup.
template <class T>
inline T& threadgroup_local(const rt::TgSite& site) {
  return *static_cast<T*>(rt::threadgroup_static(site, sizeof(T), alignof(T)));
}

}  // namespace msl_sim
