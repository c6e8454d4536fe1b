"""Self-tests of the MSL simulator (tests/msl_sim): example kernels against float64 references,
the simdgroup_matrix lane layout, and every diagnostic on a deliberately broken kernel.

The simulator library is built (cached) once per session by tests/msl_sim/build.py.
"""
import os
import shutil
import subprocess
import sys

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # OpenBLAS threads busy-wait and steal the cores

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SIM_DIR = os.path.join(HERE, "msl_sim")
sys.path.insert(0, SIM_DIR)

import build  # noqa: E402
import counters  # noqa: E402
import sim  # noqa: E402

EXAMPLES = ["reduce", "gemm", "function_constants", "vectors", "lane_layout", "collectives", "translation",
            "threadgroup_locals", "shared_header_a", "shared_header_b", "counters", "simdgroup_exchange", "design_counters"]
BROKEN = ["missing_barrier", "divergent_barrier", "divergent_simd", "deadlock", "threadgroup_overflow",
          "out_of_bounds", "race_write_write", "race_read_write", "missing_simdgroup_barrier", "guarded_parameter"]


def _bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _f32_to_bf16(x):
    u = np.asarray(x, np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


@pytest.fixture(scope="session")
def lib():
    sources = [os.path.join(SIM_DIR, "examples", f + ".metal") for f in EXAMPLES]
    sources += [os.path.join(SIM_DIR, "broken", f + ".metal") for f in BROKEN]
    return sim.Library(build.build_library("selftest", sources))


# ---- examples ----

@pytest.mark.kernels_ci
def test_load_widths_and_events(lib):
    n = 64
    h = np.arange(4 * n, dtype=np.float16)
    f = np.arange(4 * n, dtype=np.float32)
    out = np.zeros(n, np.float32)
    r = lib.run("widths", grid=(1, 1, 1), threads=(n, 1, 1), buffers={0: h, 1: f, 2: out})
    widths = {b["index"]: b["loads_by_width"] for b in r["buffers"] if b["index"] >= 0}
    assert widths[0] == [0, 0, 0, n, 0, 0]       # 1, 2, 4, 8, 16 bytes, other
    assert widths[1] == [0, 0, n, 0, n, 0]
    assert r["events"] == {"threads": n, "even_threads_twice": n}
    np.testing.assert_allclose(out[1], 4 + 5 + 6 + 7 + 4 + 5 + 6 + 7 + 1)


# ---- design counters (issue 20): bank conflicts, barriers per tile, wide loads, dead work ----

def _bank_run(lib, kernel, stride, simdgroups=2, **kw):
    out = np.zeros(32 * simdgroups, np.float32)
    return lib.run(kernel, grid=(1, 1, 1), threads=(32 * simdgroups, 1, 1),
                   buffers={1: out}, bytes={0: np.uint32(stride)}, banks=True, **kw)["bank_conflicts"]


@pytest.mark.kernels_ci
@pytest.mark.parametrize("kernel, stride, ways", [
    ("bank_words", 1, 1), ("bank_words", 0, 1), ("bank_words", 2, 2), ("bank_words", 32, 32),
    ("bank_words", 33, 1), ("bank_words", 8, 8),
    ("bank_word_stores", 1, 1), ("bank_word_stores", 32, 32), ("bank_word_stores", 4, 4),
    ("bank_halves", 1, 1), ("bank_halves", 2, 1), ("bank_halves", 4, 2), ("bank_halves", 64, 32),
    ("bank_vectors", 1, 1), ("bank_vectors", 2, 2), ("bank_vectors", 8, 8),
])
@pytest.mark.parametrize("schedule", ["in_order", "random"])
def test_bank_conflict_ways(lib, kernel, stride, ways, schedule):
    """One threadgroup-memory read per lane, 2 SIMD-groups: each SIMD-group's read is one
    instruction of the known ways (distinct 4-byte words in one bank; same word = broadcast),
    whatever order the lanes run in; the worst site is the kernel's read."""
    c = _bank_run(lib, kernel, stride, schedule=schedule)
    assert c["instructions"] == 2
    assert c["ways_sum"] == 2 * ways
    assert c["worst"] == ways
    assert "design_counters.metal" in c["worst_site"]
    if ways > 1:
        assert [s["instructions"] for s in c["sites"]] == [2] and c["sites"][0]["worst"] == ways
        assert c["sites"][0]["write"] == kernel.endswith("_stores")
    else:
        assert c["sites"] == []


@pytest.mark.kernels_ci
def test_bank_conflicts_group_a_loop_by_iteration(lib):
    """A load in a loop with no rendezvous: lane l's i-th execution joins the other lanes' i-th
    (stride 32: every iteration is 32-way on its own bank; grouped wrongly it would not be)."""
    c = _bank_run(lib, "bank_loop", 32, simdgroups=3, schedule="reverse")
    assert (c["instructions"], c["ways_sum"], c["worst"]) == (12, 12 * 32, 32)
    c = _bank_run(lib, "bank_loop", 1, simdgroups=3)
    assert (c["instructions"], c["ways_sum"], c["worst"]) == (12, 12, 1)


@pytest.mark.kernels_ci
def test_bank_conflicts_off_by_default(lib):
    out = np.zeros(64, np.float32)
    r = lib.run("bank_words", threads=(64, 1, 1), buffers={1: out}, bytes={0: np.uint32(32)})
    assert "bank_conflicts" not in r


@pytest.mark.kernels_ci
@pytest.mark.parametrize("tiles", [1, 3, 8])
def test_barriers_per_key_tile(lib, tiles):
    out = np.zeros(128, np.float32)
    r = lib.run("tiled_barriers", grid=(3, 1, 1), threads=(128, 1, 1), buffers={1: out},
                bytes={0: np.uint32(tiles)})
    assert r["threadgroup_barriers"] == 3 * (2 * tiles + 1)
    assert r["events"]["kv_tiles"] == 3 * tiles
    assert counters.barriers_per_tile(r, "kv_tiles") == pytest.approx((2 * tiles + 1) / tiles)
    np.testing.assert_array_equal(out, [sum(t + (i + 1) % 128 for t in range(tiles)) for i in range(128)])


@pytest.mark.kernels_ci
def test_wide_load_share_of_16_bit_inputs(lib):
    n = 64
    bufs = [np.random.default_rng(i).standard_normal(8 * n).astype(np.float16) for i in range(3)]
    out = np.zeros(n, np.float32)
    r = lib.run("half_loads", threads=(n, 1, 1), buffers={0: bufs[0], 1: bufs[1], 2: bufs[2], 3: out},
                names={0: "wide", 1: "pairs", 2: "single", 3: "out"})
    by_name = {b["name"]: b for b in r["buffers"]}
    assert [by_name[k]["bytes_read_wide"] for k in ("wide", "pairs", "single")] == [16 * n, 0, 0]
    assert counters.wide_load_share([r], ["wide"]) == 1.0
    assert counters.wide_load_share([r], ["pairs", "single"]) == 0.0
    assert counters.wide_load_share([r], ["wide", "pairs", "single"]) == pytest.approx(1 / 3)
    ref = sum(b.astype(np.float32).reshape(n, 8).sum(1) for b in bufs)
    np.testing.assert_allclose(out, ref, rtol=1e-2, atol=1e-2)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("schedule", ["in_order", "reverse"])
def test_dead_work(lib, schedule):
    out = np.zeros(64, np.float32)
    r = lib.run("dead_lanes", threads=(64, 1, 1), buffers={0: out}, schedule=schedule)
    assert r["simdgroup_mma"] == 4
    assert r["dead_work"] == {"mma": 2.0, "collectives": 3.0}  # per SIMD-group: 1; 0.5 + 1


@pytest.mark.kernels_ci
@pytest.mark.parametrize("schedule", ["in_order", "reverse", "random"])
@pytest.mark.parametrize("workers", [1, 2])
def test_reduction(lib, schedule, workers):
    rng = np.random.default_rng(0)
    rows, n = 6, 1000
    x = rng.standard_normal((rows, n)).astype(np.float32)
    out = np.zeros(rows, np.float32)
    r = lib.run("row_sum", grid=(rows, 1, 1), threads=(96, 1, 1), buffers={0: x, 1: out},
                bytes={2: np.uint32(n)}, schedule=schedule, workers=workers)
    np.testing.assert_allclose(out, x.astype(np.float64).sum(1), rtol=1e-5, atol=1e-4)
    assert r["threadgroups"] == rows
    assert r["threadgroup_barriers"] == rows
    # 3 SIMD-groups' simd_sum + one final simd_sum per row
    assert r["simd_collectives"] == rows * 4
    assert r["buffers"][0]["bytes_read"] == x.nbytes  # every input element read exactly once
    assert r["buffers"][1]["bytes_written"] == out.nbytes


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype, trans_b", [("float", False), ("half", False), ("bfloat", False),
                                            ("float", True), ("half", True)])
def test_gemm(lib, dtype, trans_b):
    rng = np.random.default_rng(1)
    M, N, K = 64, 96, 48
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((N, K) if trans_b else (K, N)).astype(np.float32)
    if dtype == "float":
        ad, bd, tol = a, b, 1e-4
    elif dtype == "half":
        ad, bd, tol = a.astype(np.float16), b.astype(np.float16), 2e-3
        a, b = ad.astype(np.float32), bd.astype(np.float32)
    else:
        ad, bd, tol = _f32_to_bf16(a), _f32_to_bf16(b), 1e-3
        a, b = _bf16_to_f32(ad), _bf16_to_f32(bd)
    c = np.zeros((M, N), np.float32)
    name = f"gemm_{dtype}" + ("_bt" if trans_b else "")
    r = lib.run(name, grid=(N // 32, M // 32, 1), threads=(128, 1, 1),
                buffers={0: ad, 1: bd, 2: c}, bytes={3: np.array([M, N, K, 0], np.uint32)})
    ref = a.astype(np.float64) @ (b.T if trans_b else b).astype(np.float64)
    np.testing.assert_allclose(c, ref, rtol=tol, atol=tol * np.abs(ref).max())
    # Each threadgroup: 4 SIMD-groups x 4 fragments x K/8 steps.
    assert r["simdgroup_mma"] == (M // 32) * (N // 32) * 4 * 4 * (K // 8)
    # Each A tile row is read by the N/32 threadgroups of its row, once each.
    assert r["buffers"][0]["bytes_read"] == ad.nbytes * (N // 32)
    assert r["buffers"][1]["bytes_read"] == bd.nbytes * (M // 32)


@pytest.mark.kernels_ci
def test_lane_layout(lib):
    """Apple's layout: lane l holds (row, col), (row, col + 1) with qid = l / 4,
    row = (qid & 4) + (l / 2) % 4, col = (qid & 2) * 2 + (l % 2) * 2."""
    matrix = np.arange(64, dtype=np.float32)
    loaded = np.zeros(64, np.float32)
    stored = np.full(64, -1, np.float32)
    lib.run("lane_layout", threads=(32, 1, 1), buffers={0: matrix, 1: loaded, 2: stored})
    expect_loaded = np.zeros(64, np.float32)
    expect_stored = np.zeros(64, np.float32)
    for lane in range(32):
        qid = lane // 4
        row = (qid & 4) + (lane // 2) % 4
        col = (qid & 2) * 2 + (lane % 2) * 2
        for k in range(2):
            expect_loaded[2 * lane + k] = row * 8 + col + k
            expect_stored[row * 8 + col + k] = 2 * lane + k
    np.testing.assert_array_equal(loaded, expect_loaded)
    np.testing.assert_array_equal(stored, expect_stored)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("dtype", ["float", "half", "bfloat"])
def test_function_constants(lib, dtype):
    n = 40
    base = np.linspace(-2, 2, n).astype(np.float32)
    bias = np.linspace(0, 1, n).astype(np.float32)
    to = {"float": lambda v: v.copy(), "half": lambda v: v.astype(np.float16), "bfloat": _f32_to_bf16}[dtype]
    back = {"float": lambda v: v, "half": lambda v: v.astype(np.float32), "bfloat": _bf16_to_f32}[dtype]
    tol = {"float": 1e-6, "half": 2e-3, "bfloat": 1e-2}[dtype]
    cases = [
        ({0: True, 1: 3, 2: 0.5, 3: False}, back(to(base)) * 0.5 + 6),
        ({0: True, 1: 0, 3: False}, back(to(base)) * 2.0),  # scale_value undefined -> 2.0
        ({0: False, 1: 1, 3: True}, back(to(base)) + 2 + back(to(bias))),
        ({}, back(to(base))),  # nothing defined: all zero/false
    ]
    for constants, expect in cases:
        x = to(base)
        buffers = {0: x}
        if constants.get(3):
            buffers[1] = to(bias)
        lib.run(f"affine_{dtype}", grid=(2, 1, 1), threads=(32, 1, 1), buffers=buffers,
                bytes={2: np.uint32(n)}, constants=constants)
        np.testing.assert_allclose(back(x), expect, rtol=tol, atol=tol)


@pytest.mark.kernels_ci
def test_function_constant_guarded_buffer_must_be_bound(lib):
    x = np.zeros(8, np.float32)
    with pytest.raises(sim.SimError) as e:
        lib.run("affine_float", threads=(8, 1, 1), buffers={0: x}, bytes={2: np.uint32(8)}, constants={3: True})
    assert e.value.kind == "InvalidDispatch"
    assert "'bias' [[buffer(1)]] is not bound" in str(e.value)


@pytest.mark.kernels_ci
def test_swizzles(lib):
    rng = np.random.default_rng(2)
    v = rng.standard_normal((16, 4)).astype(np.float32)
    out = np.zeros_like(v)
    out_half = np.zeros((16, 4), np.float16)
    lib.run("swizzles", grid=(1, 1, 1), threads=(16, 1, 1), buffers={0: v, 1: out, 2: out_half})
    x, y, z, w = v.T
    expect = np.stack([y + w, x, 2 * x + (np.maximum(z, w) - np.maximum(w, z)), 2 * y + x + y + 1], 1)
    np.testing.assert_allclose(out, expect, rtol=1e-6, atol=1e-6)
    h = v[:, ::-1].astype(np.float16)  # wzyx
    h[:, [1, 2]] = h[:, [2, 1]]
    np.testing.assert_array_equal(out_half, h * np.float16(2))


@pytest.mark.kernels_ci
def test_simd_collectives(lib):
    n = 64
    x = np.arange(n, dtype=np.float32) % 37
    out = np.zeros(10 * n, np.float32)
    lib.run("collectives", threads=(n, 1, 1), buffers={0: x, 1: out})
    out = out.reshape(10, n)
    for sg in range(n // 32):
        xs = x[sg * 32:(sg + 1) * 32]
        o = out[:, sg * 32:(sg + 1) * 32]
        lanes = np.arange(32)
        np.testing.assert_array_equal(o[0], xs.sum())
        np.testing.assert_array_equal(o[1], xs.max())
        np.testing.assert_array_equal(o[2], np.cumsum(xs))
        np.testing.assert_array_equal(o[3], np.cumsum(xs) - xs)
        np.testing.assert_array_equal(o[4], xs[(lanes * 7) % 32])
        np.testing.assert_array_equal(o[5], xs[lanes ^ 1])
        np.testing.assert_array_equal(o[6], np.where(lanes >= 3, xs[np.maximum(lanes - 3, 0)], xs))
        np.testing.assert_array_equal(o[7], np.where(lanes + 5 < 32, xs[np.minimum(lanes + 5, 31)], xs))
        np.testing.assert_array_equal(o[8], xs[7])
        ballot = sum(1 << i for i in range(32) if xs[i] > 16) & 0xFFFF
        np.testing.assert_array_equal(o[9], ballot)


# ---- diagnostics ----

@pytest.mark.kernels_ci
def test_missing_barrier_shows_under_some_schedule(lib):
    """Without the race detector, the poison shows a missing barrier only under some schedule."""
    x = np.arange(1, 129, dtype=np.float32)
    expect = np.concatenate([[0], x[:-1]])
    results = {}
    for schedule in ["in_order", "reverse", "random"]:
        out = np.zeros(128, np.float32)
        lib.run("shift_no_barrier", threads=(128, 1, 1), buffers={0: x, 1: out}, schedule=schedule,
                races=False)
        results[schedule] = out
    # In order, every thread's neighbour ran first: the bug hides. Reversed, it reads poison.
    np.testing.assert_array_equal(results["in_order"], expect)
    assert np.isnan(results["reverse"][1:]).all()
    assert np.isnan(results["random"]).any()


def _race(lib, kernel, threads, schedule, n=None):
    """The DataRace message of running `kernel` (fails if it runs clean or fails otherwise)."""
    x = np.arange(1, (n or threads) + 1, dtype=np.float32)
    out = np.zeros_like(x)
    with pytest.raises(sim.SimError) as e:
        lib.run(kernel, threads=(threads, 1, 1), buffers={0: x, 1: out}, schedule=schedule)
    assert e.value.kind == "DataRace", str(e.value)
    assert f"data race on threadgroup memory in kernel '{kernel}'" in str(e.value)
    return str(e.value)


@pytest.mark.kernels_ci
@pytest.mark.parametrize("schedule", ["in_order", "reverse", "random"])
def test_race_detector_finds_missing_barrier_whatever_the_schedule(lib, schedule):
    """In order, the missing barrier of shift_no_barrier computes the right values; the detector
    reports it anyway (happens-before, not the values), with both lines."""
    msg = _race(lib, "shift_no_barrier", 128, schedule)
    where = "on `tile` (threadgroup variable at tests/msl_sim/broken/missing_barrier.metal:10)"
    kinds = {"in_order": ["read after write"], "reverse": ["write after read"]}  # who ran first
    assert any(f"{kind} {where}" in msg
               for kind in kinds.get(schedule, ["read after write", "write after read"])), msg
    assert "missing_barrier.metal:11" in msg  # the write
    assert "missing_barrier.metal:13" in msg  # the read


@pytest.mark.kernels_ci
@pytest.mark.parametrize("schedule", ["in_order", "reverse", "random"])
def test_race_detector_write_write(lib, schedule):
    msg = _race(lib, "race_write_write", 64, schedule)
    assert "write after write on `slot`" in msg
    assert "race_write_write.metal:11" in msg
    assert "race_write_write.metal:13" in msg
    assert "with no threadgroup_barrier (mem_threadgroup)" in msg  # different SIMD-groups


@pytest.mark.kernels_ci
@pytest.mark.parametrize("schedule", ["in_order", "reverse"])
def test_race_detector_write_after_read(lib, schedule):
    """Each thread overwrites the slot its neighbour reads: depending on who runs first, a thread
    writes after its neighbour read (write after read) or reads after the neighbour wrote; both
    happen under either schedule, and both are reported with the two lines."""
    msg = _race(lib, "race_read_write", 128, schedule)
    assert "write after read on `tile`" in msg and "read after write on `tile`" in msg
    assert "race_read_write.metal:14" in msg  # the read of the neighbour's slot
    assert "race_read_write.metal:15" in msg  # the overwrite of the own slot


@pytest.mark.kernels_ci
@pytest.mark.parametrize("schedule", ["in_order", "reverse", "random"])
def test_race_detector_missing_simdgroup_barrier(lib, schedule):
    """Lanes of one SIMD-group need a simdgroup_barrier (a simd_sum between orders no memory);
    a threadgroup_barrier without mem_threadgroup orders no threadgroup memory."""
    msg = _race(lib, "missing_simdgroup_barrier", 64, schedule)
    assert "read after write on `mine`" in msg
    assert "missing_simdgroup_barrier.metal:14" in msg
    assert "missing_simdgroup_barrier.metal:16" in msg
    assert "with no threadgroup_barrier or simdgroup_barrier (mem_threadgroup)" in msg
    msg = _race(lib, "barrier_without_threadgroup_flag", 64, schedule)
    assert "barrier_without_threadgroup_flag" in msg and "missing_simdgroup_barrier.metal:23" in msg and "missing_simdgroup_barrier.metal:25" in msg


@pytest.mark.kernels_ci
@pytest.mark.parametrize("schedule", ["in_order", "reverse", "random"])
@pytest.mark.parametrize("workers", [1, 2])
def test_race_detector_silent_on_ordered_exchanges(lib, schedule, workers):
    """simdgroup_barrier orders one SIMD-group's lanes, threadgroup_barrier everyone; neighbours
    writing the two halves (or bytes) of one word do not race."""
    n = 128
    x = np.arange(n, dtype=np.float32) * 0.5
    out = np.full(n, np.nan, np.float32)  # every threadgroup writes the same values
    r = lib.run("simdgroup_exchange", grid=(3, 1, 1), threads=(n, 1, 1), buffers={0: x, 1: out},
                schedule=schedule, workers=workers)
    assert r["threadgroups"] == 3
    tid = np.arange(n)
    a = x[(tid // 32) * 32 + ((tid % 32) ^ 1)]
    b = x[(tid + 32) % n] + ((tid + 32) % n)
    np.testing.assert_array_equal(out, (a + b)[::-1])


@pytest.mark.kernels_ci
def test_divergent_barrier(lib):
    out = np.zeros(64, np.float32)
    with pytest.raises(sim.SimError) as e:
        lib.run("divergent_barrier", threads=(64, 1, 1), buffers={0: out})
    msg = str(e.value)
    assert e.value.kind == "Divergence"
    assert "kernel 'divergent_barrier'" in msg
    assert "divergent_barrier.metal:9" in msg and "divergent_barrier.metal:12" in msg


@pytest.mark.kernels_ci
def test_divergent_simd_collective(lib):
    out = np.zeros(32, np.float32)
    with pytest.raises(sim.SimError) as e:
        lib.run("divergent_simd", threads=(32, 1, 1), buffers={0: out})
    msg = str(e.value)
    assert e.value.kind == "Divergence"
    assert "simd_sum (tests/msl_sim/broken/divergent_simd.metal:10)" in msg
    assert "simd_max (tests/msl_sim/broken/divergent_simd.metal:12)" in msg


@pytest.mark.kernels_ci
def test_deadlock(lib):
    out = np.zeros(64, np.float32)
    with pytest.raises(sim.SimError) as e:
        lib.run("deadlock", threads=(64, 1, 1), buffers={0: out})
    msg = str(e.value)
    assert e.value.kind == "Deadlock"
    assert "kernel 'deadlock'" in msg
    assert "threadgroup_barrier (tests/msl_sim/broken/deadlock.metal:11)" in msg
    assert "simd_sum (tests/msl_sim/broken/deadlock.metal:13)" in msg


@pytest.mark.kernels_ci
def test_threadgroup_memory_limit(lib):
    out = np.zeros(64, np.float32)
    with pytest.raises(sim.SimError) as e:
        lib.run("threadgroup_overflow", threads=(64, 1, 1), buffers={0: out})
    assert e.value.kind == "ThreadgroupMemoryLimit"
    assert "big at tests/msl_sim/broken/threadgroup_overflow.metal:8" in str(e.value)
    # Static 16 KiB fits alone, and with 8 KiB of dynamic memory; 20 KiB more does not.
    lib.run("threadgroup_dynamic", threads=(64, 1, 1), buffers={0: out}, threadgroup_memory={0: 8192})
    with pytest.raises(sim.SimError) as e:
        lib.run("threadgroup_dynamic", threads=(64, 1, 1), buffers={0: out}, threadgroup_memory={0: 20480})
    assert e.value.kind == "ThreadgroupMemoryLimit"
    with pytest.raises(sim.SimError) as e:  # dynamic memory alone over the limit: refused at dispatch
        lib.run("threadgroup_dynamic", threads=(64, 1, 1), buffers={0: out}, threadgroup_memory={0: 40000})
    assert e.value.kind == "ThreadgroupMemoryLimit"


@pytest.mark.kernels_ci
def test_guarded_parameter_touched_when_its_constant_is_off(lib):
    # Nothing is bound at a [[buffer(i), function_constant(c)]] parameter whose constant is off;
    # a kernel that touches it anyway is reported, naming the parameter (broken/guarded_parameter).
    out = np.zeros(32, np.float32)
    extra = np.zeros(32, np.float32)
    lib.run("guarded_write_when_off", threads=(32, 1, 1), buffers={0: out, 1: extra},
            constants={0: True})
    np.testing.assert_array_equal(extra, 2.0)
    with pytest.raises(sim.SimError) as e:
        lib.run("guarded_write_when_off", threads=(32, 1, 1), buffers={0: out}, constants={0: False})
    msg = str(e.value)
    assert e.value.kind == "OutOfBounds"
    assert "absent parameter 'extra' (its function constant is off) [[buffer(1)]]" in msg
    assert "guarded_parameter.metal:12" in msg


@pytest.mark.kernels_ci
def test_out_of_bounds_read_before_start(lib):
    x = np.arange(64, dtype=np.float32)
    out = np.zeros(64, np.float32)
    with pytest.raises(sim.SimError) as e:
        lib.run("read_before_start", grid=(2, 1, 1), threads=(32, 1, 1), buffers={0: x, 1: out},
                names={0: "in", 1: "out"})
    msg = str(e.value)
    assert e.value.kind == "OutOfBounds"
    assert "kernel 'read_before_start'" in msg
    assert "read of 4 bytes 4 bytes before the start of in [[buffer(0)]]" in msg
    assert "thread (0, 0, 0) of threadgroup (0, 0, 0)" in msg
    assert "out_of_bounds.metal:9" in msg
    assert "1 access(es)" in msg


@pytest.mark.kernels_ci
def test_out_of_bounds_write_past_end(lib):
    x = np.arange(64, dtype=np.float32)
    out = np.zeros(64, np.float32)
    with pytest.raises(sim.SimError) as e:
        lib.run("write_past_end", grid=(2, 1, 1), threads=(32, 1, 1), buffers={0: x, 1: out},
                names={0: "in", 1: "out"})
    msg = str(e.value)
    assert e.value.kind == "OutOfBounds"
    assert "write of 4 bytes at byte 256, 4 bytes past the end of out [[buffer(1)]]" in msg
    assert "out_of_bounds.metal:15" in msg
    # The in-bounds writes still reached the caller's memory.
    np.testing.assert_array_equal(out[1:], x[:-1])


@pytest.mark.kernels_ci
def test_out_of_bounds_far_past_end_and_in_bounds_ok(lib):
    x = np.zeros(1000, np.float16)
    out = np.zeros(10, np.float16)
    lib.run("read_past_end", threads=(10, 1, 1), buffers={0: x, 1: out}, bytes={2: np.uint32(111)})
    with pytest.raises(sim.SimError) as e:
        lib.run("read_past_end", threads=(10, 1, 1), buffers={0: x, 1: out}, bytes={2: np.uint32(5000)})
    assert e.value.kind == "OutOfBounds" and "past the end of buffer0 [[buffer(0)]]" in str(e.value)


def _simulator_compilers() -> list[str]:
    """The simulator's compiler, and clang-19 where it is installed (make check-tools): GCC and
    clang instrument wide accesses differently (tests/msl_sim/build.py)."""
    compilers = [build.CXX]
    if shutil.which("clang++-19") and "clang++-19" not in compilers:
        compilers.append("clang++-19")
    return compilers


@pytest.mark.parametrize("cxx", _simulator_compilers())
def test_contiguous_runs_are_checked_counted_and_written(cxx):
    """Whatever the optimiser makes of a lane's contiguous elements, every one is counted, lands in
    the caller's memory, and a run past the end is reported."""
    out_dir = os.path.join(build.BUILD, "by_compiler", os.path.basename(cxx))
    lib = sim.Library(build.build_library("contiguous_runs", [os.path.join(SIM_DIR, "examples", "contiguous_runs.metal")],
                                          out_dir=out_dir, cxx=cxx))
    n = 16
    x = np.random.default_rng().standard_normal(8 * n).astype(np.float32)
    out = np.full(8 * n, np.nan, np.float32)
    r = lib.run("scale_runs", threads=(n, 1, 1), buffers={0: x, 1: out})
    np.testing.assert_array_equal(out, 2 * x)
    counted = {b["index"]: (b["bytes_read"], b["bytes_written"]) for b in r["buffers"] if b["index"] >= 0}
    assert counted == {0: (32 * n, 0), 1: (0, 32 * n)}
    short = np.full(8 * n - 1, np.nan, np.float32)
    with pytest.raises(sim.SimError) as e:
        lib.run("scale_runs", threads=(n, 1, 1), buffers={0: x, 1: short})
    assert e.value.kind == "OutOfBounds" and "past the end of buffer1 [[buffer(1)]]" in str(e.value)


@pytest.mark.kernels_ci
def test_unknown_kernel(lib):
    with pytest.raises(sim.SimError) as e:
        lib.run("no_such_kernel")
    assert e.value.kind == "KernelNotFound" and "row_sum" in str(e.value)


@pytest.mark.kernels_ci
def test_aliased_buffers_share_memory(lib):
    """Two bindings of overlapping memory (like q/k/v views of one packed tensor) see each
    other's data and are counted separately."""
    data = np.arange(64, dtype=np.float32)
    # gemm-free check with the reduction: in = whole array, out = a view of its tail.
    view = data[60:]
    lib.run("row_sum", grid=(1, 1, 1), threads=(32, 1, 1), buffers={0: data, 1: view},
            bytes={2: np.uint32(60)})
    assert view[0] == np.arange(60).sum()


def test_translate_cli_reports_line_of_bad_kernel(tmp_path):
    src = tmp_path / "bad.metal"
    src.write_text("#include <metal_stdlib>\nusing namespace metal;\n\n"
                   "kernel void k(device float* x [[buffer(0)]], uint i) { x[i] = 0; }\n")
    r = subprocess.run([sys.executable, os.path.join(SIM_DIR, "translate.py"), str(src), "-o",
                        str(tmp_path / "bad.cpp")], capture_output=True, text=True)
    assert r.returncode == 1
    assert "bad.metal:4" in r.stderr and "parameter 'i' has no binding attribute" in r.stderr


@pytest.mark.kernels_ci
@pytest.mark.parametrize("mode", [0, 2])
def test_translation_corner_cases(lib, mode):
    n = 37
    x = np.linspace(-1, 1, n).astype(np.float16)
    out = np.zeros(n, np.float32)
    params = np.zeros(1, dtype=[("scale", np.float32), ("n", np.uint32)])
    params["scale"], params["n"] = 3.0, n
    lib.run("scaled_copy", grid=(2, 1, 1), threads=(32, 1, 1), buffers={0: x, 1: out}, bytes={2: params},
            constants={10: mode})
    expect = x.astype(np.float32) * 3.0 + 0.5
    np.testing.assert_allclose(out, -expect if mode == 2 else expect, rtol=1e-6)


@pytest.mark.kernels_ci
def test_out_of_bounds_threadgroup_memory(lib):
    out = np.zeros(32, np.float32)
    with pytest.raises(sim.SimError) as e:
        lib.run("threadgroup_past_end", threads=(32, 1, 1), buffers={0: out})
    msg = str(e.value)
    assert e.value.kind == "OutOfBounds"
    assert "read of 4 bytes at byte 128, 4 bytes past the end of threadgroup memory" in msg
    # The line comes from -O2 line tables: best effort (here it may name the kernel's first line).
    assert "thread (31, 0, 0)" in msg and "out_of_bounds.metal:" in msg


@pytest.mark.kernels_ci
@pytest.mark.parametrize("schedule", ["in_order", "reverse", "random"])
def test_every_function_scope_threadgroup_variable_is_shared(lib, schedule):
    out = np.zeros(32, np.float32)
    r = lib.run("threadgroup_locals", threads=(32, 1, 1), buffers={0: out}, schedule=schedule)
    j = 31 - np.arange(32)
    np.testing.assert_array_equal(out, 21 * j + 1000)  # a + b + c + pairs.x + pairs.y + grid + total
    # a, b, c (128 B each), total (4), pairs (256), grid (128), each 16-byte aligned.
    assert r["threadgroup_memory_bytes"] == 784


@pytest.mark.parametrize("decl, error", [
    ("threadgroup float x[4] = {0};", "threadgroup variable 'x' has an initializer"),
    ("[[maybe_unused]] threadgroup float x[4];", "unsupported threadgroup variable 'x'"),
])
def test_translate_rejects_unsupported_threadgroup_declaration(tmp_path, decl, error):
    src = tmp_path / "tg.metal"
    src.write_text("#include <metal_stdlib>\nusing namespace metal;\n\n"
                   "kernel void k(device float* o [[buffer(0)]]) {\n"
                   f"  {decl}\n"
                   "}\n")
    r = subprocess.run([sys.executable, os.path.join(SIM_DIR, "translate.py"), str(src), "-o",
                        str(tmp_path / "tg.cpp")], capture_output=True, text=True)
    assert r.returncode == 1
    assert "tg.metal:5" in r.stderr and error in r.stderr


@pytest.mark.kernels_ci
def test_shared_header_helper_reads_its_own_files_function_constant(lib):
    """Two files include one header helper reading a function constant; the linker must not
    merge the helper's copies, or one kernel reads the other file's constant."""
    for bias_a, bias_b in [(1, 2), (30, 40)]:
        out = np.zeros(1, np.int32)
        lib.run("shared_header_a", threads=(1, 1, 1), buffers={0: out}, constants={20: bias_a})
        assert out[0] == 100 + bias_a
        lib.run("shared_header_b", threads=(1, 1, 1), buffers={0: out}, constants={20: bias_b})
        assert out[0] == 200 + bias_b


FIBER_CHECK = r"""
#include "fiber.h"
#include <cstdio>
using namespace msl_sim::fiber;
static void* sched_sp;
static void* fiber_sp[2];
static int steps = 0;
static double total = 0;
static void body(void* arg) {
  long id = (long)arg;
  for (int i = 0; i < 3; ++i) {
    volatile double x = id + 0.5 * i;
    total += x;
    steps++;
    msl_sim_fiber_switch(&fiber_sp[id], sched_sp);
  }
  void* dead;
  msl_sim_fiber_switch(&dead, sched_sp);
}
int main() {
  StackArena stacks = acquire_stacks(2, 65536);
  for (long i = 0; i < 2; ++i) fiber_sp[i] = init_stack(stacks.top(i), &body, (void*)i);
  volatile double kept = 3.25;  // lives across the switches
  for (int round = 0; round < 4; ++round)
    for (int i = 0; i < 2; ++i) msl_sim_fiber_switch(&sched_sp, fiber_sp[i]);
  std::printf("%d %g %g\n", steps, total, (double)kept);
  return steps == 6 && total == 6.0 && kept == 3.25 ? 0 : 1;
}
"""


@pytest.mark.kernels_ci
def test_fiber_switch_on_every_machine(tmp_path):
    """The fibers' context switch (runtime/fiber_switch.cpp) runs two fibers to completion on this
    machine. On Linux also: cross-built for arm64 Linux, under qemu (the arm64 code macOS runs,
    with Mach-O symbols), and compiled for arm64 macOS by clang-19 (no Apple SDK: not run)."""
    runtime = os.path.join(SIM_DIR, "runtime")
    sources = [os.path.join(runtime, "fiber.cpp"), os.path.join(runtime, "fiber_switch.cpp")]
    main = tmp_path / "main.cpp"
    main.write_text(FIBER_CHECK)
    machines = [("native", [os.environ.get("CXX", "c++")], [])]
    if sys.platform == "linux":  # the cross tools: `make aarch64-setup` (pinned), run by `make test`
        machines.append(("arm64", ["aarch64-linux-gnu-g++", "-static"], ["qemu-aarch64"]))
    for name, cxx, runner in machines:
        exe = tmp_path / name
        subprocess.run([*cxx, "-std=c++20", "-O2", "-I", runtime, str(main), *sources, "-o",
                        str(exe)], check=True, capture_output=True, text=True)
        run = subprocess.run([*runner, str(exe)], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.split() == ["6", "6", "3.25"], (name, run.stdout)
    if sys.platform == "linux":
        result = subprocess.run(["clang++-19", "--target=arm64-apple-macos13", "-std=c++20", "-O2",
                                 "-c", sources[1], "-o", str(tmp_path / "switch-macos.o")],
                                capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
