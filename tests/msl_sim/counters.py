"""The design counters of launch reports (sim.Library.run's dicts, or the lines MFS_SIM_TRACE
writes), summed over one or several launches: what benchmarks/metal_traffic.py prints and the
tests hold.

- bank conflicts (`RunOptions::count_bank_conflicts`, `banks=True`, `MFS_SIM_BANKS=1`): ways
  per SIMD-group threadgroup-memory instruction under 32 banks x 4 bytes (runtime/bankcheck.h);
- barriers per tile: completed threadgroup barriers over the tiles a kernel reports visiting
  (its `MSL_SIM_COUNT` event, e.g. `kv_tiles`, once per threadgroup and tile);
- wide-load share: of the bytes read from the named buffers, those read by loads of >= 16 bytes;
- dead work: MMAs and SIMD-group collectives done for lanes the kernel declared discarded
  (`MSL_SIM_DEAD_WORK`), weighted by the share of such lanes.
"""
from __future__ import annotations


def _as_list(reports) -> list[dict]:
    return [reports] if isinstance(reports, dict) else list(reports)


def bank_conflicts(reports) -> dict | None:
    """{"instructions", "mean", "worst", "worst_site"} over the reports (None if not counted)."""
    counted = [r["bank_conflicts"] for r in _as_list(reports) if "bank_conflicts" in r]
    if not counted:
        return None
    instructions = sum(c["instructions"] for c in counted)
    worst = max(counted, key=lambda c: c["worst"])
    return dict(instructions=instructions,
                mean=sum(c["ways_sum"] for c in counted) / instructions if instructions else 0.0,
                worst=worst["worst"], worst_site=worst["worst_site"])


def barriers_per_tile(reports, event: str) -> float | None:
    """Completed threadgroup barriers per `event` (None when no tile was counted)."""
    reports = _as_list(reports)
    tiles = sum(r.get("events", {}).get(event, 0) for r in reports)
    return sum(r["threadgroup_barriers"] for r in reports) / tiles if tiles else None


def wide_load_share(reports, names) -> float | None:
    """Bytes read by >= 16-byte loads over all bytes read, of the device buffers named `names`."""
    wide = total = 0
    for r in _as_list(reports):
        for b in r["buffers"]:
            if b["index"] >= 0 and not b["set_bytes"] and b["name"] in names:
                wide += b["bytes_read_wide"]
                total += b["bytes_read"]
    return wide / total if total else None


def dead_work(reports) -> dict:
    """{"mma", "collectives"}: dead work over the reports, and the same as shares of all MMAs /
    collectives ("mma_share", "collective_share")."""
    reports = _as_list(reports)
    mma = sum(r["dead_work"]["mma"] for r in reports)
    coll = sum(r["dead_work"]["collectives"] for r in reports)
    all_mma = sum(r["simdgroup_mma"] for r in reports)
    all_coll = sum(r["simd_collectives"] for r in reports)
    return dict(mma=mma, collectives=coll, mma_share=mma / all_mma if all_mma else 0.0,
                collective_share=coll / all_coll if all_coll else 0.0)
