"""pytest plugin (`-p device_audit`): do the API tests build the kernel's inputs on the variant's
device? No machine here has MPS, so the `mps` variant's tests never run here; this runs the `cpu`
cases with the `device` fixture set to the meta device and a kernel that only looks at what it is
given: every tensor must be on meta, then the test stops (KernelReached). A tensor built without
the variant's device (a forgotten `device=`, or a CPU tensor passed along) is reported.

Meta tensors hold no values: a test that reads one before calling the kernel (paged caches built
from the offsets, transformers' unpadding) stops there and is reported as not reached.
MFS_DEVICE_AUDIT_REPORT names the JSON file the outcome of each test is written to:
{nodeid: "reached" | "wrong device: ..." | "not reached: ..."}. tests/test_inputs_on_device.py
runs it."""

from __future__ import annotations

import json
import os

import pytest
import torch

AUDIT_DEVICE = torch.device("meta")
_outcomes: dict[str, str] = {}


class KernelReached(Exception):
    """Raised by the audited kernel once it has seen its arguments on the audit device."""


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for item in obj:
            yield from _tensors(item)
    elif isinstance(obj, dict):
        for item in obj.values():
            yield from _tensors(item)


def _look_at(name: str, args, kwargs):
    elsewhere = sorted({str(t.device) for t in _tensors((args, kwargs))
                        if t.device != AUDIT_DEVICE})
    if elsewhere:
        raise AssertionError(f"wrong device: {name} was given tensors on {elsewhere}, "
                             f"not on the variant's device")
    raise KernelReached(name)


class _AuditedOps:
    def __getattr__(self, name):
        return lambda *args, **kwargs: _look_at(f"ops.{name}", args, kwargs)


class AuditedKernel:
    """Stands for the loaded kernel module: its entry points and ops look at their arguments."""

    def __init__(self, module):
        self._module = module

    def __getattr__(self, name):
        if name in self._module.__all__:
            return lambda *args, **kwargs: _look_at(name, args, kwargs)
        if name == "_ops":
            return type("AuditedOpsModule", (), {"ops": _AuditedOps()})()
        return getattr(self._module, name)


def pytest_configure(config):
    # torch.compile would trace the audited kernel; opcheck calls the real op: both look instead.
    def compile_unchanged(fn=None, **_):
        return fn if fn is not None else (lambda f: f)

    torch.compile = compile_unchanged
    torch.library.opcheck = lambda op, args, kwargs=None, **_: _look_at(str(op), args, kwargs)


def pytest_collection_modifyitems(config, items):
    """The cpu cases only: one audit per test."""
    keep = [item for item in items
            if getattr(item, "callspec", None) is None
            or item.callspec.params.get("variant", "cpu") == "cpu"]
    config.hook.pytest_deselected(items=[item for item in items if item not in keep])
    items[:] = keep


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem):
    args = pyfuncitem.funcargs
    if "device" in args:
        args["device"] = AUDIT_DEVICE
    if "fa" in args:
        args["fa"] = AuditedKernel(args["fa"])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if call.when != "call":
        return
    if call.excinfo is None:
        _outcomes[item.nodeid] = "not reached: the test ended without calling the kernel"
    elif call.excinfo.errisinstance(pytest.skip.Exception):
        _outcomes[item.nodeid] = f"skipped: {call.excinfo.value}"
    elif call.excinfo.errisinstance(KernelReached):
        _outcomes[item.nodeid] = "reached"
        report.outcome, report.longrepr = "passed", None
    elif str(call.excinfo.value).startswith("wrong device:"):
        _outcomes[item.nodeid] = str(call.excinfo.value)
    else:
        _outcomes[item.nodeid] = f"not reached: {call.excinfo.typename}: {call.excinfo.value}"[:300]


def pytest_sessionfinish(session):
    path = os.environ.get("MFS_DEVICE_AUDIT_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(_outcomes, f, indent=1, sort_keys=True)
