"""Issue 20's design counters on our real kernels, through the sim build (the counting of
benchmarks/metal_traffic.py, `make bench-metal`): threadgroup-memory bank conflicts, barriers per
key tile, dead work and the wide-load share of 16-bit inputs are present and sane for prefill,
decode and the backward. The kernels change under other work, so their figures are not held
here: they are in metal-flash-sdpa/metal/README.md's counters table. That each counter counts
what it says is held on hand-written kernels with known answers (tests/test_msl_sim.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
import metal_traffic  # noqa: E402  (benchmarks/metal_traffic.py: the counting)

Config = metal_traffic.Config
FORWARD = [
    Config("prefill_causal", [80, 40], [80, 56], 2, 1, 64, causal=True),
    Config("prefill_f32", [48], [48], 2, 1, 32, dtype="float32"),
    Config("decode_gqa4", [1, 1], [100, 40], 8, 2, 128),
]
BACKWARD = [Config("backward_causal", [48, 20], [48, 30], 2, 1, 64, causal=True),
            Config("backward_f32_causal", [40, 20], [40, 30], 2, 1, 64, dtype="float32",
                   causal=True),
            Config("backward_d96", [40, 20], [40, 30], 2, 1, 96, causal=True)]


@pytest.fixture(scope="module")
def fa_sim():
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    return metal_traffic.load_sim_build()


def check_sane(rows: list[dict], config: Config) -> None:
    assert rows, "no tiled kernel among the launches"
    for k in rows:
        b = k["banks"]
        assert b is not None and b["instructions"] > 0, k  # every one of them uses threadgroup memory
        assert 1.0 <= b["mean"] <= b["worst"] <= 32, k
        # names the kernel line of the worst conflict (after inlined helpers); none without one
        assert b["worst"] == 1 or ".metal:" in b["worst_site"], k
        if k["family"] in ("prefill", "bwd_dkdv", "bwd_dq"):
            assert 0 < k["barriers_per_tile"] <= 8, k
        else:
            assert k["barriers_per_tile"] is None
        assert k["barriers_per_threadgroup"] > 0, k
        assert k["dead"]["mma"] >= 0 and k["dead"]["collectives"] >= 0, k
        assert k["dead"]["mma_share"] <= 1 and k["dead"]["collective_share"] <= 1, k
        if metal_traffic.ELEM[config.dtype] == 2:
            assert 0.0 <= k["wide_share"] <= 1.0, k
        else:
            assert k["wide_share"] is None


@pytest.mark.parametrize("config", FORWARD, ids=lambda c: c.name)
def test_forward_counters_present_and_sane(fa_sim, config, monkeypatch):
    monkeypatch.setenv("MFS_SIM_BANKS", "1")
    m = metal_traffic.measure(fa_sim, config)
    check_sane(m["design_counters"], config)
    families = {k["family"] for k in m["design_counters"]}
    assert families == ({"decode"} if config.name.startswith("decode") else {"prefill"})


@pytest.mark.parametrize("config", BACKWARD, ids=lambda c: c.name)
def test_backward_counters_present_and_sane(fa_sim, config, monkeypatch):
    monkeypatch.setenv("MFS_SIM_BANKS", "1")
    m = metal_traffic.measure_backward(fa_sim, config)
    check_sane(m["design_counters"], config)
    assert {k["family"] for k in m["design_counters"]} == {"bwd_dkdv", "bwd_dq"}
    # Barriers per streamed tile (metal_backward_config.h): one by full-width rows (dK/dV and
    # dQ at tiles up to 96 in 16-bit dtypes, 80 in float32, double-buffered, no partials); two
    # where the streamed tiles are double-buffered (16-bit dtypes) or read into registers (tile
    # 512), four where float32 stages one copy; a prologue barrier per threadgroup may add a
    # fraction.
    for k in m["design_counters"]:
        tile = int(k["kernel"].rsplit("_d", 1)[1])
        if "_rows_" in k["kernel"]:
            assert tile <= 96 and k["barriers_per_tile"] == 1, k
        elif metal_traffic.ELEM[config.dtype] == 2 or tile == 512:
            assert k["barriers_per_tile"] <= 2.5, k
        else:
            assert k["barriers_per_tile"] == 4, k


def test_bank_conflicts_are_off_unless_asked(fa_sim, monkeypatch):
    """The suite runs without the bank model (it costs time): MFS_SIM_BANKS unset, no counts."""
    monkeypatch.delenv("MFS_SIM_BANKS", raising=False)
    m = metal_traffic.measure(fa_sim, FORWARD[0])
    assert all("bank_conflicts" not in r for r in m["reports"])
    assert all(k["banks"] is None for k in m["design_counters"])
