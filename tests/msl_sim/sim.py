"""Python access to a simulator library built by build.py (ctypes over runtime/capi.cpp).

    lib = sim.Library(build.build_library("mine", ["path/k.metal"]))
    report = lib.run("kernel_name", grid=(4, 1, 1), threads=(128, 1, 1),
                     buffers={0: in_array, 1: out_array}, bytes={2: np.uint32(n)},
                     threadgroup_memory={0: 1024}, constants={0: True, 1: 64, 2: 0.5})

Arrays are numpy arrays (C-contiguous; written in place). Raises SimError (with .kind) on errors.
`banks=True` counts threadgroup-memory bank conflicts (the report's "bank_conflicts"; README.md,
*Design counters*).
"""
from __future__ import annotations

import ctypes
import json

SCHEDULES = {"in_order": 0, "reverse": 1, "random": 2}


class SimError(RuntimeError):
    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


class Library:
    def __init__(self, path: str):
        self.path = path
        self.lib = lib = ctypes.CDLL(path)
        vp, u32p = ctypes.c_void_p, ctypes.POINTER(ctypes.c_uint32)
        lib.msl_sim_dispatch_new.restype = vp
        lib.msl_sim_dispatch_new.argtypes = [ctypes.c_char_p, u32p, u32p]
        lib.msl_sim_dispatch_free.argtypes = [vp]
        lib.msl_sim_dispatch_buffer.argtypes = [vp, ctypes.c_int, vp, ctypes.c_size_t, ctypes.c_char_p]
        lib.msl_sim_dispatch_bytes.argtypes = [vp, ctypes.c_int, vp, ctypes.c_size_t]
        lib.msl_sim_dispatch_threadgroup_memory.argtypes = [vp, ctypes.c_int, ctypes.c_uint32]
        lib.msl_sim_dispatch_constant.argtypes = [vp, ctypes.c_int, ctypes.c_int, ctypes.c_int32, ctypes.c_float]
        lib.msl_sim_dispatch_run.restype = ctypes.c_int
        lib.msl_sim_dispatch_run.argtypes = [vp, ctypes.c_int, ctypes.c_int, ctypes.c_uint64, ctypes.c_int,
                                             ctypes.c_int, ctypes.c_int, ctypes.c_int,
                                             ctypes.POINTER(ctypes.c_void_p)]
        lib.msl_sim_free_string.argtypes = [vp]
        lib.msl_sim_kernel_names.restype = vp

    def _take_string(self, p) -> str:
        s = ctypes.string_at(p).decode()
        self.lib.msl_sim_free_string(p)
        return s

    def kernel_names(self) -> list[str]:
        return [n for n in self._take_string(self.lib.msl_sim_kernel_names()).split("\n") if n]

    def run(self, kernel: str, grid=(1, 1, 1), threads=(1, 1, 1), buffers=None, bytes=None,
            threadgroup_memory=None, constants=None, workers: int = 2, schedule: str = "in_order",
            seed: int = 1, check_bounds: bool = True, poison: bool = True, races: bool = True,
            banks: bool = False, names=None) -> dict:
        g = (ctypes.c_uint32 * 3)(*grid)
        t = (ctypes.c_uint32 * 3)(*threads)
        d = self.lib.msl_sim_dispatch_new(kernel.encode(), g, t)
        try:
            for i, arr in (buffers or {}).items():
                assert arr.flags["C_CONTIGUOUS"], "buffers must be C-contiguous"
                name = (names or {}).get(i, f"buffer{i}")
                self.lib.msl_sim_dispatch_buffer(d, i, arr.ctypes.data, arr.nbytes, name.encode())
            for i, v in (bytes or {}).items():
                raw = v.tobytes() if hasattr(v, "tobytes") else v
                buf = ctypes.create_string_buffer(raw, len(raw))
                self.lib.msl_sim_dispatch_bytes(d, i, buf, len(raw))
            for i, n in (threadgroup_memory or {}).items():
                self.lib.msl_sim_dispatch_threadgroup_memory(d, i, n)
            for i, v in (constants or {}).items():
                if isinstance(v, bool):
                    self.lib.msl_sim_dispatch_constant(d, i, 0, int(v), 0.0)
                elif isinstance(v, int):
                    self.lib.msl_sim_dispatch_constant(d, i, 1, v, 0.0)
                else:
                    self.lib.msl_sim_dispatch_constant(d, i, 2, 0, float(v))
            out = ctypes.c_void_p()
            rc = self.lib.msl_sim_dispatch_run(d, workers, SCHEDULES[schedule], seed, int(check_bounds),
                                               int(poison), int(races), int(banks), ctypes.byref(out))
            text = self._take_string(out)
        finally:
            self.lib.msl_sim_dispatch_free(d)
        if rc != 0:
            kind, _, message = text.partition(": ")
            raise SimError(kind, message)
        return json.loads(text)
