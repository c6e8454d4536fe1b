"""`kernels benchmark ./` (kernels[benchmark], the command kernels-community runs) is green on
this repo: every workload of benchmarks/benchmark_*.py runs on build/ and verifies against the
float64 reference at the harness's atol=1e-2: the command itself at toy sizes
(MFS_BENCHMARK_QUICK=1, few rounds), and its check at the workloads' full sizes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import REPO, load_kernel
from reference import TOLERANCE

WORKLOADS = ["varlen_mixed_bf16", "dense_fp32", "dense_fp32_causal", "dense_bf16",
             "dense_bf16_causal"]


def test_kernels_benchmark_is_green():
    kernels_cli = Path(sys.executable).parent / "kernels"
    env = {**os.environ, "MFS_BENCHMARK_QUICK": "1", "HF_HUB_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}
    env.pop("LOCAL_KERNELS", None)
    result = subprocess.run([str(kernels_cli), "benchmark", "./", "--iterations", "3",
                             "--warmup", "1"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Verification failed" not in output
    rows = [line for line in output.splitlines() if line.startswith("│")]
    for workload in WORKLOADS:
        row = next((r for r in rows if f" {workload} " in r), None)
        assert row is not None, f"{workload} missing from the table:\n{output}"
        assert "✓" in row, f"{workload} not verified:\n{row}"


@pytest.mark.parametrize("workload", WORKLOADS)
def test_full_size_workloads_verify(workload, monkeypatch):
    """The check `kernels benchmark` makes (allclose at atol=1e-2 against verify_X), at the
    workloads' real sizes, without the timing: the toy sizes above cannot show an output that
    only the full size produces (a bf16 output past magnitude 2, where one ulp exceeds 1e-2)."""
    monkeypatch.delenv("MFS_BENCHMARK_QUICK", raising=False)
    monkeypatch.syspath_prepend(str(REPO / "benchmarks"))
    import benchmark_attention

    cls = (benchmark_attention.VarlenMixedBatch if workload.startswith("varlen")
           else benchmark_attention.DenseBatch)
    instance = cls()
    instance.kernel = load_kernel("cpu")
    torch.manual_seed(instance.seed)
    getattr(instance, f"setup_{workload}", instance.setup)()
    getattr(instance, f"benchmark_{workload}")()
    expected = getattr(instance, f"verify_{workload}")()
    assert torch.allclose(instance.out, expected, atol=1e-2), \
        (instance.out.double() - expected.double()).abs().max()
    # The harness's atol=1e-2 is loose where outputs are small (the float32 workloads' are
    # <= ~0.06: a 30 % wrong scale would pass it): the error relative to the outputs' magnitude,
    # held to the dtype's tolerance (tests/reference.py).
    error = (instance.out.double() - expected.double()).abs().max().item()
    magnitude = expected.double().abs().max().item()
    assert magnitude > 0, "the workload's outputs are all zero"
    assert error <= TOLERANCE[instance.out.dtype]["rtol"] * magnitude, \
        f"error {error:.3g} at outputs of magnitude {magnitude:.3g} ({instance.out.dtype})"
