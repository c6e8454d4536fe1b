"""The cpu backend picks its tile kernels (forward and backward) by instruction set at run time.
The ones this machine would not pick run on other machines, so they are tested here too: a subset of the suite runs in a child process with MFS_CPU_ISA lowering the
choice (the choice is made once per process). MFS_CPU_ISA never raises the choice: an instruction
set this cpu lacks is skipped, saying so, and the child must report (on stderr) that it ran the
kernels asked for, not a lower set."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

SUBSET = [
    "test_random_configs.py",
    "test_varlen.py::test_every_head_dim",
    "test_varlen.py::test_long_sequences",
    "test_varlen.py::test_paged_kv",
    "test_varlen.py::test_head_dim_512_every_feature",
    "test_kvcache.py",
    # the backward kernels (portable, AVX2, AVX-512 builds of backward_tile_kernel.h; with
    # avx512_bf16, backward_kernel_avx512_bf16.cpp for bf16)
    "test_backward.py::test_varlen_gqa_zero_length_and_padding",
    "test_backward.py::test_sinks_window_softcap_alibi",
    "test_backward.py::test_every_head_dim",
    "test_backward.py::test_fixed_length",
    "test_backward.py::test_fp32_large_scores_wide_heads_long_sums",
    # scaled_dot_product_attention with attn_mask: the forward's and the backward's open, closed
    # and mixed mask tiles (mask_reader.h's bias vectors), the mask's gradient
    "test_sdpa.py::test_masks",
    "test_sdpa.py::test_backward",
    "test_sdpa.py::test_mask_gradient_is_bitwise_repeatable",
    "test_sdpa.py::test_nan_score_at_a_removed_key_as_in_torch",
    # dropout: the mask each kernel draws (dropout_tiles.h in every forward and backward kernel)
    "test_dropout.py::test_kernel_mask_is_the_stream",
    "test_dropout.py::test_varlen_forward_and_gradients",
    "test_dropout.py::test_fixed_length_every_feature",
    # numerics that differ per instruction set: tanh over softcap's range, NaN/Inf propagation
    "test_softcap_range.py",
    "test_nan_inf.py",
]

# What each instruction set needs, as /proc/cpuinfo names the flags (cpu_features.cpp's test).
NEEDS = {
    "portable": set(),
    "avx2": {"avx2", "fma", "f16c"},
    "avx512": {"avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl"},
    "avx512_bf16": {"avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512bw", "avx512vl",
                    "avx512_bf16"},
}


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


# avx512_bf16 is what a cpu with AVX512_BF16 picks by itself; named here so that a machine that
# has it runs its bf16 kernels (forward and backward) under this test too.
@pytest.mark.parametrize("isa", ["portable", "avx2", "avx512", "avx512_bf16"])
def test_cpu_kernels_of_each_instruction_set(isa):
    missing = NEEDS[isa] - cpu_flags()
    if missing:
        pytest.skip(f"this cpu lacks {isa} ({', '.join(sorted(missing))} not in /proc/cpuinfo): "
                    f"its kernels cannot run here")
    env = {**os.environ, "MFS_CPU_ISA": isa, "OPENBLAS_NUM_THREADS": "1"}
    # --capture=sys: the kernel's report on file descriptor 2 reaches result.stderr.
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-k", "cpu",
         "--capture=sys", *[str(TESTS / s) for s in SUBSET]],
        env=env, capture_output=True, text=True, cwd=TESTS.parent)
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else ""
    assert result.returncode == 0, f"MFS_CPU_ISA={isa}: {summary}\n{result.stdout[-3000:]}"
    assert " passed" in summary and "failed" not in summary
    ran = sorted(set(line for line in result.stderr.splitlines() if "cpu kernels:" in line))
    assert ran == [f"metal-flash-sdpa: MFS_CPU_ISA={isa}: cpu kernels: {isa}"], \
        f"asked for {isa}, the kernels report {ran}"
