"""`kernels benchmark ./` (kernels[benchmark], the command kernels-community runs) is green on
this repo: every workload of benchmarks/benchmark_*.py runs on build/ and verifies against the
float64 reference at the harness's atol=1e-2. Toy sizes (MFS_BENCHMARK_QUICK=1), few rounds."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import REPO

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
