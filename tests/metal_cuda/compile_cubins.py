#!/usr/bin/env python3
"""Compiles, for gpu_replay.py, the kernels that packed launches (pack_launches.py) use: one sm_90
cubin per (.metal file, function-constant combination, chunk of kernels), with the exact MMA
(MSL_CUDA_MMA_EXACT) and only the kernels launched with those constants instantiated.

    compile_cubins.py CUBIN_DIR PACK_DIR... [--jobs N] [--translate-only]
    compile_cubins.py CUBIN_DIR --compile-only [PACK_OR_BATCH...] [--jobs N]

CUBIN_DIR/index.json maps "<kernel> <constants>" to its cubin. Translating needs the simulator's
source step (g++ -E); compiling needs nvcc: --translate-only writes the .cu files and the index
where the recording was made, --compile-only compiles every .cu without an up-to-date cubin
where nvcc has cores to spare (the GPU machine); given packs or batches, only the cubins their
launches use.
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
METAL = HERE.parents[1] / "metal-flash-sdpa" / "metal"

# 114 ("referenced but not defined") is an error: a function constant the launch does not set is
# left undefined by the translation, and a kernel that reads one must not build.
NVCC = ["nvcc", "-arch=sm_90", "-std=c++17", "-O3", "-cubin", "-DMSL_CUDA_MMA_EXACT",
        "-diag-suppress=177,550,186", "-diag-error=114", "-I", str(HERE)]


def file_of(kernel: str) -> str:
    """The .metal file that instantiates a [[host_name]]."""
    if kernel.startswith("mfs_prefill"):
        return "attention_prefill"
    if kernel.startswith(("mfs_decode", "mfs_clear_rows")):
        return "attention_decode"
    if kernel.startswith("mfs_mask_tiles"):
        return "attention_mask_summary"
    if kernel.startswith("mfs_attention_probs"):
        return "attention_probabilities"
    return "attention_backward"


def translation_constants(constants: dict) -> dict:
    """A launch's function constants as the translation takes them. A constant the file declares
    and the launch leaves unset (decode's pair count on mfs_clear_rows and mfs_decode_reduce) is
    left undefined by translate_cuda: a kernel that read it would not build."""
    return {int(k): v for k, v in constants.items()}


def constants_key(constants: dict) -> str:
    return "_".join(f"{k}-{v}" for k, v in sorted(constants.items(), key=lambda kv: int(kv[0])))


def kernel_key(kernel: str, constants: dict) -> str:
    return f"{kernel} {constants_key(constants)}"


def packed_launches(pack: Path):
    """The launches of a pack, or of one of its batches."""
    if not (pack / "index.json").exists():
        yield from json.loads((pack / "manifest.json").read_text())["launches"]
        return
    for batch in json.loads((pack / "index.json").read_text())["batches"]:
        yield from json.loads((pack / batch["name"] / "manifest.json").read_text())["launches"]


def needed(packs: list[Path]) -> dict[tuple[str, str], tuple[dict, set]]:
    out: dict[tuple[str, str], tuple[dict, set]] = {}
    for pack in packs:
        for launch in packed_launches(pack):
            key = (file_of(launch["kernel"]), constants_key(launch["constants"]))
            constants = translation_constants(launch["constants"])
            out.setdefault(key, (constants, set()))[1].add(launch["kernel"])
    return out


def translate_one(file: str, stem: str, constants: dict, kernels: set, out_dir: Path) -> Path:
    from translate_cuda import translate_cuda
    text, made = translate_cuda(str(METAL / f"{file}.metal"), constants, only=kernels)
    missing = kernels - {i.name for i in made}
    if missing:
        raise RuntimeError(f"{file}: no instantiation named {sorted(missing)}")
    cu = out_dir / f"{stem}.cu"
    if not cu.exists() or cu.read_text() != text:
        cu.write_text(text)
    return cu


def compile_one(cu: Path) -> str:
    cubin = cu.with_suffix(".cubin")
    if cubin.exists() and cubin.stat().st_mtime >= cu.stat().st_mtime:
        return f"{cubin.name}: up to date"
    subprocess.run([*NVCC, str(cu), "-o", str(cubin)], check=True)
    return f"{cubin.name}: compiled"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("packs", nargs="*")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=6, help="kernels per translation unit")
    ap.add_argument("--translate-only", action="store_true")
    ap.add_argument("--compile-only", action="store_true")
    a = ap.parse_args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(HERE))
    if not a.compile_only:
        # Chunks of a few kernels per translation unit: a compile per core.
        work, index = [], {}
        for (file, key), (constants, kernels) in sorted(needed([Path(p) for p in a.packs]).items()):
            names = sorted(kernels)
            for i in range(0, len(names), a.chunk):
                stem = f"{file}.{key}.{i // a.chunk}"
                work.append((file, stem, constants, set(names[i:i + a.chunk])))
                index.update({f"{name} {key}": f"{stem}.cubin" for name in names[i:i + a.chunk]})
        with cf.ThreadPoolExecutor(max_workers=a.jobs) as ex:
            list(ex.map(lambda w: translate_one(*w, out), work))
        (out / "index.json").write_text(json.dumps(index, indent=1, sort_keys=True))
        print(f"compile_cubins: {len(index)} kernels in {len(work)} translation units", flush=True)
    if not a.translate_only:
        index = json.loads((out / "index.json").read_text())
        cubins = set(index.values())
        if a.compile_only and a.packs:
            cubins = {index[kernel_key(launch["kernel"], launch["constants"])]
                      for pack in a.packs for launch in packed_launches(Path(pack))}
        units = sorted({out / Path(c).with_suffix(".cu") for c in cubins})
        with cf.ThreadPoolExecutor(max_workers=a.jobs) as ex:
            for line in ex.map(compile_one, units):
                print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
