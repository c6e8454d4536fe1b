"""The Metal host check (tests/msl_check/check_host.py, `make check-metal`) judged by itself: the
real attention_metal.mm compiles as Objective-C++ against PyTorch's ATen/mps headers and the
declared Metal API, and copies with a planted misuse of that API do not."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests" / "msl_check"))

import check_host  # noqa: E402

pytestmark = pytest.mark.skipif(shutil.which(check_host.CLANG) is None,
                                reason="clang-19 is installed by `make check-metal` / `make test`")

HOST = REPO / "metal-flash-sdpa" / "metal" / "attention_metal.mm"


def test_the_host_compiles():
    assert check_host.check_file(HOST) == []


# (name, pattern found in today's .mm, its replacement, what the failure must mention)
MISUSES = [
    ("misspelled_selector", r"\[encoder setComputePipelineState:", "[encoder setComputePipelineStat:",
     r"setComputePipelineStat"),
    ("pipeline_state_passed_as_buffer", r"\[encoder setBuffer:storage_buffer\(t\)",
     "[encoder setBuffer:states[i]", r"MTLBuffer"),
    ("size_passed_as_index", r"\[encoder setThreadgroupMemoryLength:m\.bytes atIndex:m\.index\]",
     "[encoder setThreadgroupMemoryLength:m.bytes atIndex:MTLSizeMake(1, 1, 1)]", r"MTLSize"),
    ("method_apple_does_not_have", r"\[library newFunctionWithName:name constantValues:values",
     "[library newFunctionWithName:name specializedWith:values", r"newFunctionWithName"),
]


@pytest.mark.parametrize("name,pattern,replacement,expect", MISUSES, ids=[m[0] for m in MISUSES])
def test_planted_misuse_fails(name, pattern, replacement, expect, tmp_path):
    text = HOST.read_text()
    assert re.search(pattern, text), f"{name}: the pattern is no longer in {HOST.name}"
    copy = tmp_path / HOST.name
    copy.write_text(re.sub(pattern, lambda _: replacement, text, count=1))
    problems = "\n".join(check_host.check_file(copy, [HOST.parent]))
    assert problems, f"{name} was not caught"
    assert re.search(expect, problems), f"{name} failed for another reason:\n{problems}"
