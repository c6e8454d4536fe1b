"""MSL rules checked on the LLVM IR clang emits for a translation unit (`-emit-llvm -O0`):
recursion (a cycle in the call graph, opt-19's print-callgraph-sccs) and each kernel's static
threadgroup memory (the threadgroup arrays of the kernel and of every function it calls)."""

from __future__ import annotations

import re
import subprocess

THREADGROUP_MEMORY_LIMIT = 32 * 1024  # bytes; Metal feature set tables (Apple GPUs)

_DEFINE = re.compile(r"^define [^@]*@(\"[^\"]+\"|[\w.$]+)\(")
_CALL = re.compile(r"@(\"[^\"]+\"|[\w.$]+)\(")
# The source step's function-scope `threadgroup T a[N];` is a reference returned by
# mslc::threadgroup_storage<T[N]>(); clang states the array's size on the call.
_STORAGE = re.compile(r"dereferenceable\((\d+)\) ptr @_ZN4mslc19threadgroup_storage")


def cycles(opt: str, llvm_ir: str) -> list[list[str]]:
    """Recursive functions: the call-graph SCCs that contain a cycle."""
    r = subprocess.run([opt, "-passes=print-callgraph-sccs", "-disable-output"], input=llvm_ir,
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(r.stderr)
    found = []
    for line in r.stderr.splitlines():
        m = re.match(r"SCC #\d+: (.*?)(?:, \(Has self-loop\)| \(Has self-loop\))?\s*$", line)
        if not m:
            continue
        names = [x.strip() for x in m.group(1).split(",") if x.strip()]
        if "Has self-loop" in line or len(names) > 1:
            found.append(names)
    return found


def _functions(llvm_ir: str) -> dict[str, tuple[set[str], int]]:
    """Each defined function: (the functions it calls, its own threadgroup bytes)."""
    functions: dict[str, tuple[set[str], int]] = {}
    current = None
    for line in llvm_ir.splitlines():
        m = _DEFINE.match(line)
        if m:
            current = m.group(1)
            functions[current] = (set(), 0)
            continue
        if current is None:
            continue
        if line.startswith("}"):
            current = None
            continue
        calls, own = functions[current]
        size = _STORAGE.search(line)
        if size and " call " in line:
            own += int(size.group(1))
        calls.update(c for c in _CALL.findall(line) if " call " in line or "invoke" in line)
        functions[current] = (calls, own)
    return functions


def _kernels(llvm_ir: str) -> list[str]:
    """The functions annotated "msl:kernel" (llvm.global.annotations)."""
    strings = dict(re.findall(r'^(@\.str(?:\.\d+)?) = .*c"([^"]*)\\00"', llvm_ir, re.M))
    m = re.search(r"^@llvm\.global\.annotations = .*$", llvm_ir, re.M)
    if not m:
        return []
    found = []
    for fn, label in re.findall(r"\{ ptr @(\"[^\"]+\"|[\w.$]+), ptr (@\.str(?:\.\d+)?)", m.group()):
        if strings.get(label) == "msl:kernel" and fn not in found:
            found.append(fn)
    return found


def threadgroup_memory(llvm_ir: str) -> list[tuple[str, int]]:
    """(kernel, bytes) for each kernel whose static threadgroup memory is over the limit."""
    functions = _functions(llvm_ir)
    over = []
    for kernel in _kernels(llvm_ir):
        seen, todo, total = set(), [kernel], 0
        while todo:
            f = todo.pop()
            if f in seen or f not in functions:
                continue
            seen.add(f)
            calls, own = functions[f]
            total += own
            todo.extend(calls)
        if total > THREADGROUP_MEMORY_LIMIT:
            over.append((kernel, total))
    return over
