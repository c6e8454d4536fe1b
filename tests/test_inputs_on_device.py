"""The API tests build the kernel's inputs on the variant's device (conftest.py's `device`), so that
on a Mac their `mps` cases run on MPS tensors. No machine here has MPS: the modules below run in a
child pytest with tests/device_audit.py, the `device` fixture on the meta device and a kernel that
only checks that every tensor it is given is there (then stops the test)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from conftest import REPO

# Not here: test_transformers.py, test_training.py and test_gemma4.py (the model's own unpadding reads the mask,
# and autocast knows no meta device, before any kernel call) and test_hub_snapshot.py (its child process takes the device from conftest.VARIANTS, not from the
# fixture); both were reviewed by hand. test_random_configs.py builds paged caches from offsets in
# most cases (nothing left to audit on meta).
MODULES = ["test_bad_input.py", "test_compile_and_opcheck.py", "test_fuzz.py", "test_kvcache.py",
           "test_varlen.py", "test_fixed_and_legacy.py", "test_backward.py"]
# What stops a test before its kernel call on meta: a read of a value (paged caches built from the
# offsets, transformers' unpadding, a reference computed first). Those tests are not audited.
NO_DATA_ON_META = ("cannot be called on meta tensors", "Cannot copy out of meta tensor")


def test_every_kernel_input_is_on_the_variant_device(tmp_path):
    report = tmp_path / "audit.json"
    env = {**os.environ, "MFS_DEVICE_AUDIT_REPORT": str(report),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "tests"),
                                                       os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-m", "pytest", *MODULES, "-p", "device_audit", "-q",
                    "-p", "no:cacheprovider"],
                   cwd=REPO / "tests", env=env, capture_output=True, text=True, timeout=1800)
    outcomes = json.loads(report.read_text())
    wrong = {test: why for test, why in outcomes.items() if why.startswith("wrong device")}
    assert not wrong, wrong
    # A test stopped by anything but meta's missing values (a device mismatch inside torch, say)
    # is a finding too.
    other = {test: why for test, why in outcomes.items() if why.startswith("not reached:")
             and "without calling the kernel" not in why
             and not any(words in why for words in NO_DATA_ON_META)}
    assert not other, other
    for module in MODULES:
        reached = [t for t, why in outcomes.items() if t.startswith(module) and why == "reached"]
        assert reached, f"no test of {module} was audited"
