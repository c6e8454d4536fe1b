#!/usr/bin/env python3
"""Compiles, for gpu_replay.py, the kernels the recorded cases launch: one sm_90 cubin per (.metal
file, function-constant combination), with the exact MMA (MSL_CUDA_MMA_EXACT) and only the kernels
launched with those constants instantiated.

    compile_cubins.py CASES_DIR CUBIN_DIR [--jobs N]
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from gpu_replay import constants_key, file_of  # noqa: E402
from translate_cuda import translate_cuda  # noqa: E402

METAL = HERE.parents[1] / "metal-flash-sdpa" / "metal"


def needed(cases: Path) -> dict[tuple[str, str], tuple[dict, set]]:
    out: dict[tuple[str, str], tuple[dict, set]] = {}
    for name in json.loads((cases / "cases.json").read_text()):
        for line in (cases / name / "launches.jsonl").read_text().splitlines():
            launch = json.loads(line)
            key = (file_of(launch["kernel"]), constants_key(launch["constants"]))
            out.setdefault(key, ({int(k): v for k, v in launch["constants"].items()}, set()))[1].add(launch["kernel"])
    return out


NVCC = ["nvcc", "-arch=sm_90", "-std=c++17", "-O3", "-cubin", "-DMSL_CUDA_MMA_EXACT",
        "-diag-suppress=177,550,186", "-I", str(HERE)]


def compile_one(file: str, key: str, constants: dict, kernels: set, out_dir: Path, build=True) -> str:
    text, made = translate_cuda(str(METAL / f"{file}.metal"), constants, only=kernels)
    missing = kernels - {i.name for i in made}
    if missing:
        raise RuntimeError(f"{file}: no instantiation named {sorted(missing)}")
    cu = out_dir / f"{file}.{key}.cu"
    cu.write_text(text)
    if not build:
        return f"{cu.name}: {len(kernels)} kernels (not compiled)"
    subprocess.run([*NVCC, str(cu), "-o", str(cu.with_suffix(".cubin"))], check=True)
    return f"{cu.with_suffix('.cubin').name}: {len(kernels)} kernels"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cases")
    ap.add_argument("out")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=6, help="kernels per translation unit")
    ap.add_argument("--translate-only", action="store_true",
                    help="write the .cu files only (compile them where nvcc has cores to spare)")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    # Chunks of a few kernels per translation unit: a compile per core (gpu_replay.py looks a
    # kernel up in every cubin of its file and constants).
    work = []
    for (file, key), (constants, kernels) in needed(Path(a.cases)).items():
        names = sorted(kernels)
        for i in range(0, len(names), a.chunk):
            work.append((file, f"{key}.{i // a.chunk}", constants, set(names[i:i + a.chunk])))
    with cf.ThreadPoolExecutor(max_workers=a.jobs) as ex:
        for line in ex.map(lambda w: compile_one(*w, out, not a.translate_only), work):
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
