"""The Metal launch plan as Python sees it: builds tests/metal_design/plan_probe.cpp (plain C++,
the plan and nothing else) once, then asks it for the plan of AttentionParams given as fields."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import subprocess
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
COMMON = REPO / "metal-flash-sdpa" / "common"
METAL = REPO / "metal-flash-sdpa" / "metal"
PROBE_SRC = Path(__file__).with_name("plan_probe.cpp")

# AttentionFlags (attention_params.h)
VARLEN_Q, VARLEN_K, SEQUSED_K, PAGED_KV, HAS_ALIBI, HAS_SINKS, WRITE_LSE, CLEAR_ROWS, SEQUSED_Q = (
    1 << i for i in range(9))
DROPOUT = 1 << 9  # kDropout

# PlanKernel
(PREFILL, DECODE, DECODE_REDUCE, CLEAR_ROWS_KERNEL, BWD_ROW_DOT, BWD_DKDV, BWD_DQ,
 BWD_SINKS) = range(8)

DTYPES = ("f32", "f16", "bf16")
ELEM_BYTES = {"f32": 4, "f16": 2, "bf16": 2}


@functools.lru_cache(maxsize=1)
def probe_binary() -> Path:
    sources = [PROBE_SRC, COMMON / "metal_launch_plan.cpp", COMMON / "metal_launch_plan.h",
               COMMON / "metal_kernel_config.h", COMMON / "attention_params.h",
               COMMON / "metal_backward_plan.cpp", COMMON / "metal_backward_plan.h",
               COMMON / "metal_backward_config.h", COMMON / "metal_mask_tiles.h",
               COMMON / "metal_probabilities_plan.cpp", COMMON / "metal_probabilities_plan.h",
               COMMON / "metal_probabilities_config.h"]
    key = hashlib.sha256(b"".join(p.read_bytes() for p in sources)).hexdigest()[:12]
    out = Path(tempfile.gettempdir()) / f"mfs_plan_probe_{key}"
    if not out.exists():
        tmp = out.with_suffix(".tmp")
        subprocess.run(["g++", "-std=c++17", "-O1", f"-I{COMMON}", str(PROBE_SRC),
                        str(COMMON / "metal_launch_plan.cpp"),
                        str(COMMON / "metal_backward_plan.cpp"),
                        str(COMMON / "metal_probabilities_plan.cpp"), "-o", str(tmp)], check=True)
        os.replace(tmp, out)
    return out


def plans(calls: list[tuple[str, str, dict]], backward: bool = False) -> list[dict]:
    """The plan of each (dtype, sinks_dtype, AttentionParams fields) call (its backward's)."""
    lines = []
    for dtype, sinks, fields in calls:
        fields = {"window_left": -1, "window_right": -1, **fields}
        lines.append(" ".join([*(["bwd"] if backward else []), dtype, sinks,
                               *(f"{k}={v}" for k, v in fields.items())]))
    result = subprocess.run([str(probe_binary())], input="\n".join(lines) + "\n",
                            capture_output=True, text=True, check=True)
    return [json.loads(line) for line in result.stdout.splitlines()]


def plan(dtype: str = "f16", sinks: str = "f32", **fields) -> dict:
    return plans([(dtype, sinks, fields)])[0]


def backward_plan(dtype: str = "f16", sinks: str = "f32", **fields) -> dict:
    return plans([(dtype, sinks, fields)], backward=True)[0]


def backward_kernel_names() -> list[str]:
    result = subprocess.run([str(probe_binary())], input="bwd_names\n", capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)


def probabilities_kernel_names() -> list[str]:
    """Every name the S_dmask plan (metal_probabilities_plan.cpp) can pick."""
    result = subprocess.run([str(probe_binary())], input="probs_names\n", capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)


def instantiated_probabilities_names() -> set[str]:
    """Every [[host_name]] attention_probabilities.metal instantiates, read from its macro."""
    text = (METAL / "attention_probabilities.metal").read_text()
    return {f"mfs_attention_probs_{t}"
            for t in re.findall(r"^MFS_INSTANTIATE_PROBS\(\w+, (\w+)\)", text, re.M)}


def kernel_names() -> list[str]:
    result = subprocess.run([str(probe_binary())], input="names\n", capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)


def prefill_layouts() -> dict[str, dict]:
    """The prefill threadgroup per head-dim tile and element size (metal_kernel_config.h):
    {"f32_d512": {"bk": 8, "dsplit": 4, "kv_shared": True, "barriers_per_tile": 4, ...}, ...};
    "16bit_d..." for float16 and bfloat16."""
    result = subprocess.run([str(probe_binary())], input="prefill_layout\n",
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def gpu_cores(architecture: str) -> int:
    result = subprocess.run([str(probe_binary())], input=f"cores {architecture}\n",
                            capture_output=True, text=True, check=True)
    return int(result.stdout)


def instantiated_names() -> set[str]:
    """Every [[host_name]] the .metal sources instantiate, read from their instantiation macros."""
    names = set()
    prefill = (METAL / "attention_prefill.metal").read_text()
    decode = (METAL / "attention_decode.metal").read_text()
    for text, family in ((prefill, "PREFILL"), (decode, "DECODE")):
        for dim in re.findall(rf"^MFS_INSTANTIATE_{family}_DTYPES\((\d+)\)", text, re.M):
            for dtype in DTYPES:
                names.add(f"mfs_{family.lower()}_{dtype}_d{dim}")
    for fn, suffix in re.findall(r"^MFS_INSTANTIATE_BY_DTYPE\((\w+), \w+, (\w+)\)", decode, re.M):
        names.add(fn + suffix)
    return names | mask_summary_names()


def mask_summary_names() -> set[str]:
    """attn_mask's summary kernel (attention_mask_summary.metal), in both plans."""
    summary = (METAL / "attention_mask_summary.metal").read_text()
    return set(re.findall(r"\]\] void (mfs_mask_tiles)\(", summary))


def instantiated_backward_names() -> set[str]:
    """Every [[host_name]] attention_backward.metal instantiates, read from its macros."""
    names = set()
    backward = (METAL / "attention_backward.metal").read_text()
    for dim in re.findall(r"^MFS_INSTANTIATE_BWD_TILED_DTYPES\((\d+)\)", backward, re.M):
        for dtype in DTYPES:
            names.update({f"mfs_bwd_dkdv_{dtype}_d{dim}", f"mfs_bwd_dq_{dtype}_d{dim}"})
    for dim in re.findall(r"^MFS_INSTANTIATE_BWD_ROWS_DTYPES\((\d+)\)", backward, re.M):
        for dtype in DTYPES:
            names.update({f"mfs_bwd_dkdv_rows_{dtype}_d{dim}", f"mfs_bwd_dq_rows_{dtype}_d{dim}"})
    for dim in re.findall(r"^MFS_INSTANTIATE_BWD_ROWS_16BIT\((\d+)\)", backward, re.M):
        for dtype in ("f16", "bf16"):
            names.update({f"mfs_bwd_dkdv_rows_{dtype}_d{dim}", f"mfs_bwd_dq_rows_{dtype}_d{dim}"})
    for dim in re.findall(r"^MFS_INSTANTIATE_BWD_TILED_F32\((\d+)\)", backward, re.M):
        names.update({f"mfs_bwd_dkdv_f32_d{dim}", f"mfs_bwd_dq_f32_d{dim}"})
    for suffix in re.findall(r"^MFS_INSTANTIATE_BWD_ROW_DOT\(\w+, (\w+)\)", backward, re.M):
        names.add(f"mfs_bwd_row_dot_{suffix}")
    names.update(re.findall(r"\]\] void (mfs_bwd_sinks)\(", backward))
    return names | mask_summary_names()
