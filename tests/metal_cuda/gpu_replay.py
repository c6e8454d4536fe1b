#!/usr/bin/env python3
"""Runs packed launches (pack_launches.py) on an NVIDIA GPU, each against the simulator's result
of the same launch: the .metal kernels through the CUDA translation (translate_cuda.py, exact
MMA: msl_cuda.h with MSL_CUDA_MMA_EXACT, compiled by compile_cubins.py), launched with the CUDA
driver API.

    gpu_replay.py CUBIN_DIR BATCH_DIR... [--one-per-kernel] [--bench] [--failures FILE]

For each launch: its memory is copied to the GPU as the simulator left it after the launch, with
every element the launch wrote poisoned (all bits set: NaN in float32, float16, bfloat16); the
kernel runs; every element of its memory is then compared with the simulator's: NaN where the
simulator has NaN, the same infinities, no poison left where the simulator wrote, integers
equal, and floats within half the suite's tolerance of their dtype (tests/reference.py:
|gpu - sim| <= (atol + rtol |sim|) / 2; one rounding flip of a 16-bit output fits). The suite
holds the simulator's outputs to its float64 reference, so a launch that matches here passes
its tests' checks on the GPU within the other half.

--one-per-kernel runs the first launch of each kernel only (compute-sanitizer's runs);
--bench times the launches of the `bench` case (dump_cases.py --bench): the decode kernel's
achieved device bandwidth, K and V bytes over the time of decode + reduce. No prefill or backward
time is printed: their MMAs are emulated with warp shuffles here, which says nothing of an Apple
GPU. Needs torch with CUDA, numpy and libcuda; compute-sanitizer can wrap it (make test-gpu).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
import zlib
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from compile_cubins import kernel_key  # noqa: E402
from reference import TOLERANCE  # noqa: E402

# Half the suite's tolerance per recorded dtype (c10's names); integers compare exactly.
FLOATS = {"Float": (np.float32, TOLERANCE[torch.float32]), "Half": (np.float16, TOLERANCE[torch.float16]),
          "BFloat16": (None, TOLERANCE[torch.bfloat16])}
INTS = {"Int": np.int32, "Long": np.int64, "Short": np.int16, "Char": np.int8, "Byte": np.uint8, "Bool": np.uint8}
POISON = 0xFF

_cuda = None  # the CUDA driver (libcuda), loaded by main()


def check(result: int, what: str) -> None:
    if result != 0:
        name = ctypes.c_char_p()
        _cuda.cuGetErrorName(result, ctypes.byref(name))
        raise RuntimeError(f"{what}: {name.value.decode() if name.value else result}")


class Kernels:
    """CUfunction per (kernel, function constants), from CUBIN_DIR/index.json (compile_cubins.py)."""

    def __init__(self, cubin_dir: Path):
        self.dir = cubin_dir
        self.index = json.loads((cubin_dir / "index.json").read_text())
        self.modules: dict[str, ctypes.c_void_p] = {}
        self.functions: dict[str, ctypes.c_void_p] = {}

    def get(self, kernel: str, constants: dict) -> ctypes.c_void_p:
        key = kernel_key(kernel, constants)
        if key not in self.functions:
            if key not in self.index:
                raise RuntimeError(f"no cubin in {self.dir} has {key}")
            path = str(self.dir / self.index[key])
            if path not in self.modules:
                mod = ctypes.c_void_p()
                check(_cuda.cuModuleLoad(ctypes.byref(mod), path.encode()), f"cuModuleLoad {path}")
                self.modules[path] = mod
            fn = ctypes.c_void_p()
            check(_cuda.cuModuleGetFunction(ctypes.byref(fn), self.modules[path], kernel.encode()),
                  f"cuModuleGetFunction {kernel}")
            self.functions[key] = fn
        return self.functions[key]


class Batch:
    def __init__(self, path: Path):
        self.path = path
        manifest = json.loads((path / "manifest.json").read_text())
        self.launches = manifest["launches"]
        self.blobs = manifest["blobs"]
        self.data = (path / "blobs.bin").read_bytes()

    def blob(self, name: str) -> np.ndarray:
        offset, packed, raw, element = self.blobs[name]
        out = np.frombuffer(zlib.decompress(self.data[offset:offset + packed]), dtype=np.uint8)
        assert out.size == raw, name
        return out.reshape(element, -1).T.copy().reshape(-1)  # pack_launches.py groups the bytes


class Launch:
    """One launch on the GPU: its regions (poisoned where it writes), argument table, function."""

    def __init__(self, batch: Batch, launch: dict, kernels: Kernels):
        self.launch = launch
        self.expected, self.memory = [], []
        for r in launch["regions"]:
            after = batch.blob(r["blob"])
            start = after.copy()
            for lo, hi in r["written"] or ():
                start[lo:hi] = POISON
            self.expected.append(after)
            self.memory.append(torch.from_numpy(start if start.size else np.zeros(1, np.uint8)).cuda())
        self.table = (ctypes.c_uint64 * 32)()
        for b in launch["buffers"]:
            self.table[b["index"]] = self.memory[b["region"]].data_ptr() + b["offset"]
        self.constants = []
        for index, hexbytes in launch["bytes"].items():
            t = torch.frombuffer(bytearray(bytes.fromhex(hexbytes)), dtype=torch.uint8).cuda()
            self.constants.append(t)
            self.table[int(index)] = t.data_ptr()
        self.function = kernels.get(launch["kernel"], launch["constants"])

    def run(self) -> None:
        params = (ctypes.c_void_p * 1)(ctypes.cast(ctypes.pointer(self.table), ctypes.c_void_p))
        g, t = self.launch["grid"], self.launch["threads"]
        stream = torch.cuda.current_stream().cuda_stream
        check(_cuda.cuLaunchKernel(self.function, g[0], g[1], g[2], t[0], t[1], t[2], 0,
                                   ctypes.c_void_p(stream), params, None), f"launch {self.launch['kernel']}")

    def compare(self) -> tuple[list[str], dict[str, float]]:
        """Failures (empty when the launch matches) and the worst error over bound per dtype."""
        bad, worst = [], {}
        for i, (r, want) in enumerate(zip(self.launch["regions"], self.expected)):
            got = self.memory[i].cpu().numpy()[:want.size]
            if np.array_equal(got, want):
                continue
            written = np.zeros(want.size, dtype=bool)
            for lo, hi in r["written"] or ():
                written[lo:hi] = True
            for start, end, dtype, name in spans(self.launch, i, want.size):
                problem, ratio = compare_span(got[start:end], want[start:end], written[start:end], dtype)
                if ratio is not None:
                    worst[dtype] = max(worst.get(dtype, 0.0), ratio)
                if problem:
                    bad.append(f"{name} ({dtype}): {problem}")
        return bad, worst


def spans(launch: dict, region: int, size: int):
    """(start, end, dtype, buffer names) of each buffer's stretch of a region."""
    starts = defaultdict(list)
    for b in launch["buffers"]:
        if b["region"] == region:
            starts[(b["offset"], b["dtype"])].append(b["name"])
    keys = sorted(starts)
    for i, (offset, dtype) in enumerate(keys):
        end = keys[i + 1][0] if i + 1 < len(keys) else size
        if end > offset:
            yield offset, end, dtype, "/".join(starts[(offset, dtype)])


def as_float(raw: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "BFloat16":
        return (raw.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return raw.view(FLOATS[dtype][0])


def compare_span(got: np.ndarray, want: np.ndarray, written: np.ndarray, dtype: str):
    if dtype in INTS:
        size = np.dtype(INTS[dtype]).itemsize
        n = got.size // size * size
        return (None if np.array_equal(got, want) else f"{np.count_nonzero(got[:n].view(INTS[dtype]) != want[:n].view(INTS[dtype]))} elements differ"), None
    size = 4 if dtype == "Float" else 2
    n = got.size // size * size
    if not np.array_equal(got[n:], want[n:]):
        return "bytes past the last element differ", None
    g, w = as_float(got[:n], dtype).astype(np.float64), as_float(want[:n], dtype).astype(np.float64)
    element_written = written[:n].reshape(-1, size).any(axis=1)
    poison = (got[:n].reshape(-1, size) == POISON).all(axis=1) & ~(want[:n].reshape(-1, size) == POISON).all(axis=1)
    if (poison & element_written).any():
        return f"{np.count_nonzero(poison & element_written)} elements the simulator wrote were not written", None
    if not np.array_equal(np.isnan(g), np.isnan(w)):
        return f"NaN at {np.count_nonzero(np.isnan(g) != np.isnan(w))} elements where the simulator has none (or the reverse)", None
    inf = np.isinf(g) | np.isinf(w)
    if not np.array_equal(g[inf], w[inf]):
        return "infinities differ", None
    finite = np.isfinite(w)
    if not finite.any():
        return None, 0.0
    tol = FLOATS[dtype][1]
    bound = 0.5 * (tol["atol"] + tol["rtol"] * np.abs(w[finite]))
    ratio = float((np.abs(g[finite] - w[finite]) / bound).max())
    return (f"error {ratio:.3g} x the bound (half the suite's tolerance)" if ratio > 1 else None), ratio


def load_batches(paths: list[str]) -> list[Path]:
    """Batch directories: each path is a batch or a pack (its index.json lists the batches)."""
    out = []
    for p in map(Path, paths):
        if (p / "index.json").exists():
            out += [p / b["name"] for b in json.loads((p / "index.json").read_text())["batches"]]
        else:
            out.append(p)
    return out


def bench(launches: list[Launch], repeats: int = 50) -> str:
    decode = [ln for ln in launches if ln.launch["kernel"].startswith("mfs_decode_")
              and "reduce" not in ln.launch["kernel"]]
    kv_bytes = sum(b["bytes"] for ln in decode for b in ln.launch["buffers"] if b["name"] in ("k", "v"))
    for _ in range(5):
        for ln in launches:
            ln.run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        for ln in launches:
            ln.run()
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / repeats
    names = "+".join(ln.launch["kernel"] for ln in launches)
    return f"{names}: {kv_bytes / 1e6:.1f} MB of K/V in {seconds * 1e6:.1f} us: {kv_bytes / seconds / 1e9:.0f} GB/s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cubins")
    ap.add_argument("batches", nargs="+")
    ap.add_argument("--one-per-kernel", action="store_true")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--failures", help="write the failing launches (kernel, tests, problems) here as JSON")
    a = ap.parse_args(argv)
    global _cuda
    _cuda = ctypes.CDLL("libcuda.so.1")
    torch.zeros(1, device="cuda")  # the primary context, current on this thread
    kernels = Kernels(Path(a.cubins))
    passed, failed = Counter(), Counter()
    failures, worst, seen, bench_launches = [], {}, set(), []
    tests_failed, tests = set(), set()
    for path in load_batches(a.batches):
        batch = Batch(path)
        for entry in batch.launches:
            if a.one_per_kernel:
                if entry["kernel"] in seen:
                    continue
                seen.add(entry["kernel"])
            tests.update(entry["tests"])
            launch = None
            try:
                launch = Launch(batch, entry, kernels)
                launch.run()
                torch.cuda.synchronize()
                bad, errors = launch.compare()
            except RuntimeError as e:  # a launch or CUDA error: reported, and the context is gone
                bad, errors = [str(e)], {}
            for dtype, ratio in errors.items():
                worst[dtype] = max(worst.get(dtype, 0.0), ratio)
            if bad:
                failed[entry["kernel"]] += 1
                tests_failed.update(entry["tests"])
                failures.append({"kernel": entry["kernel"], "constants": entry["constants"], "grid": entry["grid"],
                                 "tests": entry["tests"], "problems": bad})
                print(f"FAIL {entry['kernel']} {entry['grid']} ({entry['tests'][0]}): {'; '.join(bad)}", flush=True)
            else:
                passed[entry["kernel"]] += 1
            if a.bench and launch is not None and "bench" in entry["tests"]:
                bench_launches.append(launch)
    for kernel in sorted(set(passed) | set(failed)):
        print(f"  {kernel}: {passed[kernel]} passed" + (f", {failed[kernel]} FAILED" if failed[kernel] else ""))
    print("worst error over bound: " + ", ".join(f"{k} {v:.3g}" for k, v in sorted(worst.items())))
    if bench_launches:
        print(f"bench ({torch.cuda.get_device_name()}): {bench(bench_launches)}")
    if a.failures:
        Path(a.failures).write_text(json.dumps(failures, indent=1))
    total_passed, total_failed = sum(passed.values()), sum(failed.values())
    print(f"gpu_replay: {total_passed}/{total_passed + total_failed} launches pass on {torch.cuda.get_device_name()} "
          f"({len(set(passed) | set(failed))} kernels; tests with a failing launch: {len(tests_failed)} of {len(tests)})")
    return 1 if total_failed else 0


if __name__ == "__main__":
    sys.exit(main())
