#!/usr/bin/env python3
"""Runs the API suite's Metal variant (every test on build-sim/, the `sim` variant of
tests/conftest.py) with the launch recorder on, for gpu_replay.py to run each launch on an NVIDIA
GPU.

    record_suite.py RECORD_DIR [pytest arguments...]   (default: tests -q)

MFS_SIM_RECORD=RECORD_DIR (metal-flash-sdpa/sim/sim_dispatch.cpp) appends every launch the
simulator runs to RECORD_DIR/launches.jsonl, with the test that ran it and the memory it binds,
before and after, in RECORD_DIR/blobs/. Tests of other variants, and tests that load no build,
are deselected here (pytest counts them). Launches are appended: start from an empty RECORD_DIR
(or record the suite file by file into one). The exit status is pytest's: a recording is only
worth replaying when the suite passed on the simulator.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class SimVariantOnly:
    """Keeps the tests that run on the `sim` variant."""

    @staticmethod
    def pytest_collection_modifyitems(config, items):
        def on_sim(item) -> bool:
            callspec = getattr(item, "callspec", None)
            return callspec is not None and callspec.params.get("variant") == "sim"
        others = [item for item in items if not on_sim(item)]
        if others:
            config.hook.pytest_deselected(items=others)
            items[:] = [item for item in items if on_sim(item)]


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    record = Path(argv[0]).resolve()
    (record / "blobs").mkdir(parents=True, exist_ok=True)
    os.environ["MFS_SIM_RECORD"] = str(record)
    args = argv[1:] or [str(REPO / "tests"), "-q", "-p", "no:cacheprovider"]
    return int(pytest.main(args, plugins=[SimVariantOnly()]))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
