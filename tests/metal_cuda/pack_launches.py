#!/usr/bin/env python3
"""Packs recorded launches (record_suite.py, dump_cases.py: MFS_SIM_RECORD) for gpu_replay.py:
identical launches once, each launch's memory as the replay needs it, compressed, in batches
small enough to travel to the GPU machine (64 MiB a call, the working tree included).

    pack_launches.py PACK_DIR RECORD_DIR... [--max-mib 48]

A launch is identical to another when its kernel, grid, function constants, bytes, memory
before it and bindings are: it must produce the same outputs. Launches the simulator faulted on
(the adversarial-offset tests) are not packed: there is nothing to compare, and on a GPU an
out-of-bounds access is no test. For each region of a launch's memory the pack keeps what the
simulator left in it after the launch and, where the launch changed it, the element ranges it
wrote (`written`); the replay starts from "after" with those ranges poisoned (all bits set:
NaN in float32, float16 and bfloat16), so the region's contents before the launch, often an
uninitialised output's garbage, never travel. An element the kernel rewrote with its old value
cannot be told from one it left alone: it is compared, not poisoned.

PACK_DIR/index.json lists the batches; PACK_DIR/batch_NNN/manifest.json holds its launches
(each with the tests that ran it) and the blob table; blobs.bin the blobs, bytes grouped by their
place in the element, zlib-compressed.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

ELEMENT_BYTES = {"Float": 4, "Half": 2, "BFloat16": 2, "Int": 4, "Long": 8, "Double": 8,
                 "Bool": 1, "Byte": 1, "Char": 1, "Short": 2}


def launch_key(launch: dict) -> str:
    return json.dumps([launch["kernel"], launch["grid"], launch["threads"], launch["constants"],
                       launch["bytes"], [(r["bytes"], r["before"]) for r in launch["regions"]],
                       [(b["index"], b["region"], b["offset"], b["bytes"]) for b in launch["buffers"]]],
                      sort_keys=True)


def written_ranges(before: bytes, after: bytes, spans: list[tuple[int, int, int]]) -> list[list[int]]:
    """Byte ranges [start, end) of the elements that differ, per span (start, end, element
    bytes) of the region: each buffer's elements are compared whole."""
    a = np.frombuffer(before, dtype=np.uint8)
    b = np.frombuffer(after, dtype=np.uint8)
    ranges: list[list[int]] = []
    for start, end, size in spans:
        n = (end - start) // size
        changed = np.zeros(0, dtype=bool)
        if n:
            changed = (a[start:start + n * size] != b[start:start + n * size]).reshape(n, size).any(axis=1)
        # elements as byte ranges; a tail shorter than an element compared byte by byte
        tail = a[start + n * size:end] != b[start + n * size:end]
        edges = np.flatnonzero(np.diff(np.concatenate(([False], changed, [False])).astype(np.int8)))
        for lo, hi in zip(edges[::2], edges[1::2]):
            ranges.append([start + int(lo) * size, start + int(hi) * size])
        for i in np.flatnonzero(tail):
            ranges.append([start + n * size + int(i), start + n * size + int(i) + 1])
    merged: list[list[int]] = []
    for r in sorted(ranges):
        if merged and r[0] <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], r[1])
        else:
            merged.append(r)
    return merged


def region_spans(launch: dict, region: int) -> list[tuple[int, int, int]]:
    """(start, end, element bytes) of each buffer's stretch of a region: a buffer runs to the
    next buffer's start (bindings run to the end of their storage)."""
    size = launch["regions"][region]["bytes"]
    starts = sorted({(b["offset"], ELEMENT_BYTES.get(b["dtype"], 1)) for b in launch["buffers"]
                     if b["region"] == region})
    spans = []
    for i, (offset, element) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else size
        if end > offset:
            spans.append((offset, end, element))
    return spans


class Batch:
    def __init__(self, path: Path):
        self.path = path
        path.mkdir(parents=True)
        self.data = open(path / "blobs.bin", "wb")
        self.blobs: dict[str, list[int]] = {}
        self.launches: list[dict] = []
        self.size = 0

    def add_blob(self, name: str, raw: bytes, element: int) -> None:
        """Stored with its bytes grouped by place in the element (exponent bytes together), which
        zlib compresses about a tenth better for floats."""
        if name not in self.blobs:
            if element > 1 and len(raw) % element == 0:
                raw = np.frombuffer(raw, dtype=np.uint8).reshape(-1, element).T.tobytes()
            else:
                element = 1
            packed = zlib.compress(raw, 6)
            self.blobs[name] = [self.size, len(packed), len(raw), element]
            self.data.write(packed)
            self.size += len(packed)

    def close(self) -> dict:
        self.data.close()
        (self.path / "manifest.json").write_text(json.dumps({"launches": self.launches, "blobs": self.blobs}))
        return {"name": self.path.name, "launches": len(self.launches), "bytes": self.size}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pack")
    ap.add_argument("records", nargs="+")
    ap.add_argument("--max-mib", type=float, default=48.0, help="compressed bytes per batch")
    a = ap.parse_args(argv)
    pack = Path(a.pack)
    if pack.exists():
        shutil.rmtree(pack)
    pack.mkdir(parents=True)

    unique: dict[str, dict] = {}
    recorded, faulted, differing = 0, 0, 0
    for record in map(Path, a.records):
        for line in (record / "launches.jsonl").read_text().splitlines():
            launch = json.loads(line)
            recorded += 1
            if "fault" in launch:
                faulted += 1
                continue
            launch["record"] = str(record)
            key = launch_key(launch)
            test = launch.pop("test") or record.name
            if key in unique:
                kept = unique[key]
                if [r["after"] for r in kept["regions"]] != [r["after"] for r in launch["regions"]]:
                    differing += 1  # the simulator gave one launch two results: reported below
                    kept.setdefault("also_after", []).append([r["after"] for r in launch["regions"]])
                if test not in kept["tests"]:
                    kept["tests"].append(test)
                continue
            launch["tests"] = [test]
            unique[key] = launch

    # Launches of one test travel together (they share their inputs); batches fill in order.
    batches, batch = [], None
    limit = int(a.max_mib * 2 ** 20)
    for launch in unique.values():
        if batch is None or batch.size >= limit:
            if batch is not None:
                batches.append(batch.close())
            batch = Batch(pack / f"batch_{len(batches):03d}")
        blobs = Path(launch.pop("record")) / "blobs"
        regions = []
        for i, r in enumerate(launch["regions"]):
            after = (blobs / r["after"]).read_bytes()
            written = None
            if r["after"] != r["before"]:
                written = written_ranges((blobs / r["before"]).read_bytes(), after, region_spans(launch, i))
            batch.add_blob(r["after"], after, max((e for _, _, e in region_spans(launch, i)), default=1))
            regions.append({"bytes": r["bytes"], "blob": r["after"], "written": written})
        launch["regions"] = regions
        batch.launches.append(launch)
    if batch is not None:
        batches.append(batch.close())

    kernels = Counter(launch["kernel"] for launch in unique.values())
    index = {"recorded": recorded, "faulted": faulted, "unique": len(unique),
             "sim_nondeterministic": differing, "batches": batches, "kernels": dict(sorted(kernels.items())),
             "tests": len({t for launch in unique.values() for t in launch["tests"]})}
    (pack / "index.json").write_text(json.dumps(index, indent=1))
    sizes = ", ".join(f"{b['bytes'] / 2 ** 20:.1f}" for b in batches)
    print(f"pack_launches: {recorded} launches recorded ({faulted} faulted in the simulator, not packed), "
          f"{len(unique)} unique, from {index['tests']} tests; {len(batches)} batches of "
          f"{sizes} MiB")
    if differing:
        print(f"pack_launches: {differing} repeated launches left other outputs than their first in the "
              "simulator (the replay compares with the first)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
