"""The CUDA translation of a .metal file: the simulator's source step (tests/msl_sim/translate.py)
with CUDA as the target instead of the simulator's runtime.

    translate_cuda(src, constants) -> (CUDA C++ text, [Instantiation])

The simulator's translator does the reading (preprocessing with <metal_stdlib> stubbed, kernel
parameters and their attributes, [[host_name]] instantiations, function constants, function-scope
threadgroup variables); this subclass changes what it writes:
- every function definition gets MSLC_FN (__device__, always inlined), constexpr ones
  MSLC_CONSTEXPR_FN (__host__ __device__: the config functions size arrays and static_asserts);
- function constants are constexpr with the launch's values (one translation per combination:
  a pipeline is specialised per combination on Apple's GPUs too, MSL spec 5.8);
- a function-scope `threadgroup T a[N]` is `__shared__` (ptxas then reports the kernel's
  threadgroup bytes as its static shared memory);
- each [[host_name]] instantiation is an extern "C" __global__ wrapper of that name with the
  kernel's own max_total_threads_per_threadgroup as __launch_bounds__, binding each parameter
  from its attribute (msl_cuda.h: Buffers, Param, Invoker).
"""
from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "msl_sim"))
import translate as sim  # noqa: E402  (the simulator's source step)

# The simulator's parameter kinds this target binds (msl_cuda.h's mslc::Bind).
BINDS = {"Buffer", "ThreadPositionInGrid", "ThreadgroupPositionInGrid",
         "ThreadPositionInThreadgroup", "ThreadIndexInThreadgroup", "ThreadsPerThreadgroup",
         "ThreadgroupsPerGrid", "ThreadsPerGrid", "SimdgroupIndexInThreadgroup",
         "ThreadIndexInSimdgroup", "SimdgroupsPerThreadgroup", "ThreadsPerSimdgroup"}
STUB_DIR = os.path.join(HERE, "stub")
DEFAULT_MAX_THREADS = "1024"  # Metal's limit when a kernel declares none


@dataclass
class Instantiation:
    name: str       # the [[host_name]]: the wrapper's (extern "C") name
    kernel: str     # the kernel template it instantiates
    target: str     # e.g. mfs_prefill<half, 64>
    buffers: list   # [[buffer(n)]] indices the kernel declares


class CudaTranslator(sim.Translator):
    def __init__(self, toks, source, constants: dict[int, int], only=None):
        super().__init__(toks, source)
        self.constants = constants
        self.only = only  # host names to instantiate (None: every one)
        self.bounds: dict[str, tuple[str, str]] = {}  # kernel -> (template header, bound expr)
        self.instantiations: list[Instantiation] = []
        self._new_kernel = None

    def function(self, start, body_start, brace, close, kind, path):
        bound = DEFAULT_MAX_THREADS
        q = start
        while q < brace:
            if self.is_attr_start(q):
                items, after = self.parse_attr(q)
                bound = next((a for n, a in items if n == "max_total_threads_per_threadgroup"), bound)
                q = after
            else:
                q += 1
        header = self.span_text(start, body_start)
        words = {self.txt(x) for x in range(body_start, brace)}
        self._new_kernel = None
        super().function(start, body_start, brace, close, kind, path)
        first = body_start  # the first token past attribute groups (those are blanked again later)
        while self.is_attr_start(first):
            first = self.match[first] + 1
        tok = self.t(first)
        if self.t(brace).text.strip():  # not a duplicate the simulator's translator removed
            tok.text = ("MSLC_CONSTEXPR_FN " if "constexpr" in words else
                        "MSLC_INLINE_FN " if "inline" in words else "MSLC_FN ") + tok.text
        k = self._new_kernel
        if k is not None:
            self.bounds[k.name] = (header, bound)
            self.t(close).text += f" {header} struct msl_cuda_bound_{k.name} {{ static constexpr int value = ({bound}); }};"
            if not k.is_template:
                self.t(close).text += self.registration(k.host_name or k.name, f"&{k.name}", k)

    def emit_kernel_table(self, k, close, line):
        k.params = [p for p in k.params if p is not None]
        self._new_kernel = k

    def registration(self, name, target, k, line="__LINE__"):
        if self.only is not None and name not in self.only:
            return ""  # not instantiated at all (a smaller, faster compile)
        fn = target.lstrip("&").strip()
        args = fn[fn.index("<"):] if "<" in fn else ""
        binds, buffers = [], []
        for prm in k.params:
            kinds = [(sim.PARAM_KINDS[n], a) for n, a in prm.attrs if n in sim.PARAM_KINDS]
            if len(kinds) != 1 or kinds[0][0] not in BINDS:
                raise sim.TranslateError(f"{k.name}: parameter '{prm.name}' has no binding this target supports")
            bind, index = kinds[0]
            guard = next((a for n, a in prm.attrs if n == "function_constant"), None)
            if guard is not None:  # [[buffer(i), function_constant(c)]]: absent while c is off
                if bind != "Buffer" or guard not in self.function_constants:
                    raise sim.TranslateError(f"{k.name}: parameter '{prm.name}': [[function_constant({guard})]] "
                                             "names no function constant of a buffer")
                if not self.constants.get(int(self.function_constants[guard]), 0):
                    binds.append("::mslc::Param<::mslc::Bind::Absent, 0>{}")
                    continue
            binds.append(f"::mslc::Param<::mslc::Bind::{bind}, {index or 0}>{{}}")
            if bind == "Buffer":
                buffers.append(int(index))
        self.instantiations.append(Instantiation(name, k.name, fn, buffers))
        n = self.uid()  # the call and the bound are written inside the unnamed namespace (MSL names)
        return (f" constexpr int msl_cuda_bound_{n} = msl_cuda_bound_{k.name}{args}::value; "
                f"MSLC_FN void msl_cuda_run_{n}(const ::mslc::Buffers& b) {{ ::mslc::Invoker<decltype(&{fn})>::run<&{fn}>"
                f"(b{''.join(', ' + x for x in binds)}); }} "
                f'}} extern "C" __global__ void __launch_bounds__(msl_cuda_bound_{n}) {name}(const ::mslc::Buffers b) '
                f"{{ msl_cuda_run_{n}(b); }} namespace {{")

    def run(self) -> str:
        for tok in self.toks:  # the simulator's translator decides on `orig`, which keeps them
            if tok.kind == "id" and tok.text in ("device", "constant", "threadgroup", "thread"):
                tok.text = ""
        text = super().run()
        text = text.replace("#include <msl_sim/compat.h>\nstatic ::msl_sim::TuConstants msl_sim_tu_constants;\n"
                            "namespace {\n", '#include "msl_cuda.h"\nnamespace { MSL_CUDA_TYPE_NAMES\n', 1)

        def function_constant(m):
            type_, name, index = m.group(1), m.group(2), int(m.group(3))
            if index not in self.constants:
                # Left undefined, as Apple leaves a constant the pipeline was not given: declared,
                # never defined, so a kernel that reads it fails to build (an unresolved
                # variable), and one that does not (the plans set a constant only on the kernels
                # that read it) builds with no value invented for it.
                return (f"extern __device__ {type_} {name}; "
                        f"static constexpr bool msl_sim_fcdef_{name} = false;")
            return (f"static constexpr {type_} {name} = {type_}({int(self.constants[index])}); "
                    f"static constexpr bool msl_sim_fcdef_{name} = true;")
        text = re.sub(r"static ([\w: ]+?) (\w+); static bool msl_sim_fcdef_\2; static ::msl_sim::ConstantInit "
                      r"msl_sim_ci_\d+\(::msl_sim_tu_constants, (\d+), \2, msl_sim_fcdef_\2\);",
                      function_constant, text)
        text = re.sub(r"static ([\w: ]+?) (\w+); static ::msl_sim::ConstantInit msl_sim_ci_\d+\(::msl_sim_tu_constants, "
                      r"\+\[\]\(\) \{ \2 = \((.*?)\); \}\);",
                      r"static constexpr \1 \2 = (\3);", text)
        text = re.sub(r'static constexpr ::msl_sim::rt::TgSite msl_sim_tg_(\d+)\{"\w+", __FILE__, __LINE__\}; '
                      r"auto& (\w+) = ::msl_sim::threadgroup_local<(.*?)>\(msl_sim_tg_\1\);",
                      r"__shared__ __align__(16) ::mslc::id_t<\3> \2;", text)
        text = text.replace("tests/msl_sim/translate.py", "tests/metal_cuda/translate_cuda.py", 1)
        if "::msl_sim" in text:
            line = next(ln for ln in text.splitlines() if "::msl_sim" in ln)
            raise sim.TranslateError(f"{self.source}: a simulator construct has no CUDA form: {line[:200]}")
        return text


def translate_cuda(src: str, constants: dict[int, int], includes=(), defines=(),
                   only=None) -> tuple[str, list[Instantiation]]:
    """The CUDA C++ of `src` with function constants `constants` ({index: value}), instantiating
    the kernels named in `only` (default: every [[host_name]])."""
    # <metal_stdlib> is this folder's empty stub (the simulator's defines its event counters).
    # Passed, not swapped into the simulator's module: registers.py translates on threads, and a
    # swapped global leaked the CUDA stub into later simulator builds of the same process.
    text = sim.preprocess(src, list(includes), list(defines), stub_dir=STUB_DIR)
    tr = CudaTranslator(sim.tokenize(text), src, constants, only)
    return tr.run(), tr.instantiations
