#!/usr/bin/env python3
"""Runs recorded launch plans (dump_cases.py) on an NVIDIA GPU: the .metal kernels through the CUDA
translation (translate_cuda.py, exact MMA: msl_cuda.h with MSL_CUDA_MMA_EXACT), launched with the
CUDA driver API on CUDA tensors, every launch of a call in order on one stream, with the call's
buffers as the simulator saw them before its first launch. Then each output (out, lse, dq, dk,
dv, ds_aux) is compared with the float64 reference recorded with it.

    gpu_replay.py CASES_DIR CUBIN_DIR [--bench]

A case passes when no output holds NaN and each output's largest error against the float64
reference is within twice the simulator's own error plus the dtype's tolerance
(tests/reference.py) times max(1, |reference|). --bench times the bench_* cases' launches
(achieved device bandwidth of the decode kernel: K and V bytes over the time of decode + reduce).
Needs torch with CUDA and libcuda; compute-sanitizer can wrap it (make test-gpu).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import torch

TOL = {"f32": 2e-5, "f16": 2e-3, "bf16": 1.6e-2}
LSE_TOL = 1e-4
TORCH_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}

_cuda = None  # the CUDA driver (libcuda), loaded by main()


def check(result: int, what: str) -> None:
    if result != 0:
        name = ctypes.c_char_p()
        _cuda.cuGetErrorName(result, ctypes.byref(name))
        raise RuntimeError(f"{what}: {name.value.decode() if name.value else result}")


def file_of(kernel: str) -> str:
    if kernel.startswith("mfs_prefill"):
        return "attention_prefill"
    if kernel.startswith(("mfs_decode", "mfs_clear_rows")):
        return "attention_decode"
    return "attention_backward"


def constants_key(constants: dict) -> str:
    return "_".join(f"{k}-{v}" for k, v in sorted(constants.items(), key=lambda kv: int(kv[0])))


class Kernels:
    """CUfunction per (kernel, function constants), from CUBIN_DIR/<file>.<constants>.cubin."""

    def __init__(self, cubin_dir: Path):
        self.dir = cubin_dir
        self.modules: dict[str, ctypes.c_void_p] = {}
        self.functions: dict[tuple[str, str], ctypes.c_void_p] = {}

    def get(self, kernel: str, constants: dict) -> ctypes.c_void_p:
        key = (kernel, constants_key(constants))
        if key not in self.functions:
            for path in sorted(self.dir.glob(f"{file_of(kernel)}.{key[1]}.*cubin")):
                # the translation unit that has the kernel's wrapper (no failing driver lookups)
                if f") {kernel}(const ::mslc::Buffers" not in path.with_suffix(".cu").read_text():
                    continue
                if str(path) not in self.modules:
                    mod = ctypes.c_void_p()
                    check(_cuda.cuModuleLoad(ctypes.byref(mod), str(path).encode()), f"cuModuleLoad {path}")
                    self.modules[str(path)] = mod
                fn = ctypes.c_void_p()
                if _cuda.cuModuleGetFunction(ctypes.byref(fn), self.modules[str(path)], kernel.encode()) == 0:
                    self.functions[key] = fn
                    break
            else:
                raise RuntimeError(f"no cubin in {self.dir} has {kernel} with constants {key[1]}")
        return self.functions[key]


class Call:
    """One recorded call: its launches and its buffers on the GPU."""

    def __init__(self, case_dir: Path, kernels: Kernels):
        self.launches = [json.loads(ln) for ln in (case_dir / "launches.jsonl").read_text().splitlines()]
        blob = (case_dir / "launches.jsonl.bin").read_bytes()
        self.buffers: dict[int, torch.Tensor] = {}
        for launch in self.launches:
            for b in launch["buffers"]:
                if b["address"] not in self.buffers:
                    if b["at"] < 0:  # written by the call before it is read: NaN-poisoned
                        self.buffers[b["address"]] = torch.full((max(b["bytes"], 1),), 0xFF, dtype=torch.uint8,
                                                                device="cuda")
                        continue
                    data = bytearray(blob[b["at"]:b["at"] + b["bytes"]]) or bytearray(1)
                    self.buffers[b["address"]] = torch.frombuffer(data, dtype=torch.uint8).cuda()
        spans = sorted((a, a + t.numel()) for a, t in self.buffers.items())
        for (a0, a1), (b0, _) in zip(spans, spans[1:]):
            if b0 < a1:
                raise RuntimeError(f"{case_dir.name}: overlapping buffers are not replayed")
        self.args = []
        for launch in self.launches:
            table = (ctypes.c_uint64 * 32)()
            for b in launch["buffers"]:
                table[b["index"]] = self.buffers[b["address"]].data_ptr()
            keep = []
            for index, hexbytes in launch["bytes"].items():
                t = torch.frombuffer(bytearray(bytes.fromhex(hexbytes)), dtype=torch.uint8).cuda()
                keep.append(t)
                table[int(index)] = t.data_ptr()
            fn = kernels.get(launch["kernel"], launch["constants"])
            self.args.append((fn, launch, table, keep))

    def run(self) -> None:
        stream = torch.cuda.current_stream().cuda_stream
        for fn, launch, table, _ in self.args:
            params = (ctypes.c_void_p * 1)(ctypes.cast(ctypes.pointer(table), ctypes.c_void_p))
            g, t = launch["grid"], launch["threads"]
            check(_cuda.cuLaunchKernel(fn, g[0], g[1], g[2], t[0], t[1], t[2], 0, ctypes.c_void_p(stream),
                                       params, None), f"launch {launch['kernel']}")

    def output(self, entry: dict) -> torch.Tensor:
        for address, buf in self.buffers.items():
            if address <= entry["address"] < address + buf.numel():
                dtype = TORCH_DTYPES[entry["dtype"]]
                offset = (entry["address"] - address) // dtype.itemsize
                return torch.as_strided(buf.view(dtype), entry["shape"], entry["stride"], offset)
        raise RuntimeError(f"{entry['name']}: no recorded buffer holds it")


def compare(call: Call, expect: dict) -> list[str]:
    """Failures of one case ([] when it passes); prints each output's errors."""
    bad, notes = [], []
    for e in expect["outputs"]:
        got = call.output(e).double().cpu()
        want = e["expected"].double()
        if got.isnan().any():
            bad.append(f"{e['name']} holds NaN")
            continue
        tol = LSE_TOL if e["name"] == "lse" else TOL[expect["dtype"]]
        finite = ~torch.isneginf(want)
        if not torch.equal(torch.isneginf(got), ~finite):
            bad.append(f"{e['name']}: -inf where the reference has none (or not where it has)")
            continue
        error = (got[finite] - want[finite]).abs().max().item() if finite.any() else 0.0
        bound = 2 * e["sim_error"] + tol * max(1.0, want[finite].abs().max().item() if finite.any() else 1.0)
        notes.append(f"{e['name']} {error:.2g} (sim {e['sim_error']:.2g})")
        if error > bound:
            bad.append(f"{e['name']}: error {error:.3g} > bound {bound:.3g}")
    print(f"  {'; '.join(notes)}")
    return bad


def bench(call: Call, repeats: int = 50) -> str:
    decode = [b for _, launch, _, _ in call.args if launch["kernel"].startswith("mfs_decode_")
              and "reduce" not in launch["kernel"] for b in launch["buffers"] if b["name"] in ("k", "v")]
    kv_bytes = sum(b["bytes"] for b in decode)
    for _ in range(5):
        call.run()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        call.run()
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1e3 / repeats
    return f"{kv_bytes / 1e6:.1f} MB of K/V in {seconds * 1e6:.1f} us: {kv_bytes / seconds / 1e9:.0f} GB/s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases")
    ap.add_argument("cubins")
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--only", default="", help="comma-separated case-name prefixes")
    a = ap.parse_args(argv)
    global _cuda
    _cuda = ctypes.CDLL("libcuda.so.1")
    torch.zeros(1, device="cuda")  # the primary context, current on this thread
    kernels = Kernels(Path(a.cubins))
    names = json.loads((Path(a.cases) / "cases.json").read_text())
    if a.only:
        names = [n for n in names if n.startswith(tuple(a.only.split(",")))]
    failed, launched = [], set()
    for name in names:
        case = Path(a.cases) / name
        expect = torch.load(case / "expect.pt", weights_only=False)
        call = Call(case, kernels)
        call.run()
        torch.cuda.synchronize()
        launched.update(launch["kernel"] for _, launch, _, _ in call.args)
        print(f"{name}: {', '.join(launch['kernel'] for _, launch, _, _ in call.args)}")
        bad = compare(call, expect)
        if bad:
            failed.append(name)
            print(f"  FAIL: {'; '.join(bad)}")
        if a.bench and expect.get("bench"):
            print(f"  bench: {bench(call)} ({torch.cuda.get_device_name()})")
    print(f"gpu_replay: {len(names) - len(failed)}/{len(names)} cases pass, {len(launched)} kernels launched"
          + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
