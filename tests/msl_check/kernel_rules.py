"""A kernel's interface (MSL §5.1.3 Kernel Functions, §5.2 Function Arguments and Attributes),
checked on clang's AST (ast_tree.py): the return type, argument tables and their indices, the
address spaces of pointer arguments, built-in input attributes and their types, the maximum
threads per threadgroup, and kernel names unique in the library.

Section numbers: see the note at the top of prelude/metal_prelude.h (the 3.x editions' numbers).
Every rule is listed in README.md with the planted error that tests it.
"""

from __future__ import annotations

import re

from ast_tree import Node

# MSL §5.2.3.6 Kernel Function Input Attributes: the types each built-in may be declared with.
_SCALAR = {("uint", 1), ("ushort", 1)}
_GRID = {(t, n) for t in ("uint", "ushort") for n in (1, 2, 3)}
BUILTIN_TYPES = {
    **{a: _GRID for a in (
        "thread_position_in_grid", "thread_position_in_threadgroup", "threadgroup_position_in_grid",
        "threadgroups_per_grid", "threads_per_grid", "threads_per_threadgroup",
        "dispatch_threads_per_threadgroup", "grid_origin", "grid_size")},
    **{a: _SCALAR for a in (
        "thread_index_in_simdgroup", "thread_index_in_quadgroup", "thread_index_in_threadgroup",
        "simdgroup_index_in_threadgroup", "quadgroup_index_in_threadgroup",
        "simdgroups_per_threadgroup", "quadgroups_per_threadgroup",
        "dispatch_simdgroups_per_threadgroup", "dispatch_quadgroups_per_threadgroup",
        "thread_execution_width", "threads_per_simdgroup")},
}
# §5.2.3.6, the notes under the table: these must be declared with the same type.
SAME_TYPE = [("thread_position_in_grid", "threads_per_grid"),
             ("thread_position_in_threadgroup", "threads_per_threadgroup",
              "dispatch_threads_per_threadgroup"),
             ("threadgroup_position_in_grid", "threadgroups_per_grid")]
# ... and, where they are vectors, with the same number of components.
SAME_LENGTH = ("thread_position_in_grid", "threads_per_grid", "thread_position_in_threadgroup",
               "threads_per_threadgroup", "threadgroup_position_in_grid", "threadgroups_per_grid",
               "dispatch_threads_per_threadgroup")
# The highest index of each argument table, as Apple's compiler says it ("'buffer' attribute
# parameter is out of bounds: must be between 0 and 30"; texture 127, sampler 15); threadgroup
# memory arguments have the buffer table's 31 entries.
INDEX_LIMIT = {"buffer": 30, "threadgroup": 30, "texture": 127, "sampler": 15}
MAX_THREADS = 1024        # Metal feature set tables: threads per threadgroup


def _space(type_text: str) -> str | None:
    """The address space a pointer or reference type points into ("device", "constant",
    "threadgroup", "thread", "generic"), None for a type that is neither."""
    t = re.sub(r"\s*__private\s*$", "", type_text.strip())
    if not (t.endswith("*") or t.endswith("&")):
        return None
    pointee = t[:-1]
    for word, space in (("__global_device", "device"), ("__global_host", "constant"),
                        ("__global", "device"), ("__local", "threadgroup"),
                        ("__private", "thread"), ("__constant", "constant")):
        if re.search(rf"\b{word}\b", pointee):
            return space
    return "generic"


def _scalar_vector(type_text: str) -> tuple[str, int] | None:
    """('uint' | 'ushort' | other element, components) of a scalar or ext_vector type."""
    t = re.sub(r"\b(?:__private|const)\b", "", type_text).strip()
    n = 1
    m = re.search(r"__attribute__\(\(ext_vector_type\((\d+)\)\)\)", t)
    if m:
        n = int(m.group(1))
        t = t[:m.start()].strip()
    t = " ".join(t.split())
    return ({"unsigned int": "uint", "uint": "uint", "unsigned short": "ushort",
             "ushort": "ushort"}.get(t, t), n)


def qualified_name(fn: Node) -> str:
    spaces = [a.name() for a in fn.ancestors() if a.kind == "NamespaceDecl"]
    return "::".join(list(reversed(spaces)) + [fn.name()])


def kernels(root: Node, own) -> list[Node]:
    """The kernel functions of the sources: non-template ones and each instantiation of a
    kernel template (not the template's pattern, whose types are dependent)."""
    found, seen = [], set()
    for n in root.walk():
        if n.kind != "FunctionDecl" or not own(n.file):
            continue
        if not any(a == "kernel" for a, _ in n.annotations()):
            continue
        if n.parent is not None and n.parent.kind == "FunctionTemplateDecl" and \
                not any(c.kind == "TemplateArgument" for c in n.children):
            continue
        key = (qualified_name(n), n.rest.split("'")[1] if "'" in n.rest else "")
        if key not in seen:
            seen.add(key)
            found.append(n)
    return found


def kernel_interface(fn: Node) -> list[str]:
    """MSL §5.1.3 and §5.2: one kernel's return type, arguments and attributes."""
    problems = []
    name = qualified_name(fn)
    fn_type = fn.types()[0] if fn.types() else ""
    if not fn_type.startswith("void "):
        problems.append(f"{fn.where}: kernel {name} returns {fn_type.split('(')[0].strip()}: a "
                        "kernel function's return type is void (MSL §5.1.3 Kernel Functions)")
    for attr, value in fn.annotations():
        if attr == "max_total_threads_per_threadgroup" and isinstance(value, int) and \
                not 1 <= value <= MAX_THREADS:
            problems.append(f"{fn.where}: kernel {name}: [[max_total_threads_per_threadgroup("
                            f"{value})]] is over the {MAX_THREADS} threads a threadgroup can have "
                            "(MSL §5.1.3; Metal feature set tables)")
    used: dict[tuple[str, int], Node] = {}
    builtins: dict[str, tuple[str, int]] = {}
    for p in (c for c in fn.children if c.kind == "ParmVarDecl"):
        attrs = p.annotations()
        names = [a for a, _ in attrs]
        guarded = "function_constant" in names
        bindings = [(a, v) for a, v in attrs if a in INDEX_LIMIT or a in BUILTIN_TYPES]
        ptype = p.type()
        space = _space(ptype)
        where = f"{p.where}: kernel {name}, argument {p.name()}"
        if len(bindings) > 1:
            problems.append(f"{where}: [[{bindings[0][0]}]] and [[{bindings[1][0]}]] on one "
                            "argument (MSL §5.2.1, §5.2.3.6: an argument has one binding)")
        for a, v in bindings:
            if a in INDEX_LIMIT:
                if not isinstance(v, int) or not 0 <= v <= INDEX_LIMIT[a]:
                    problems.append(f"{where}: '{a}' attribute parameter is out of bounds: must "
                                    f"be between 0 and {INDEX_LIMIT[a]} (MSL §5.2.1 Locating "
                                    "Buffer, Texture, and Sampler Arguments)")
                key = ("buffer" if a == "buffer" else a, v)
                if key in used and not (guarded and "function_constant" in
                                        [x for x, _ in used[key].annotations()]):
                    problems.append(f"{where}: [[{a}({v})]] is also argument "
                                    f"{used[key].name()}'s: each index once per kernel "
                                    "(MSL §5.2.1)")
                used.setdefault(key, p)
                wanted = {"buffer": ("device", "constant"), "threadgroup": ("threadgroup",)}
                if a in wanted and space not in wanted[a]:
                    problems.append(f"{where}: [[{a}(n)]] binds a pointer or reference to "
                                    f"{' or '.join(wanted[a])} memory, not '{ptype}' (MSL §5.2.1)")
            else:
                got = _scalar_vector(ptype)
                if space is not None or got not in BUILTIN_TYPES[a]:
                    allowed = ", ".join(sorted(t + (str(k) if k > 1 else "")
                                               for t, k in BUILTIN_TYPES[a]))
                    problems.append(f"{where}: [[{a}]] on '{ptype}': it is declared {allowed} "
                                    "(MSL §5.2.3.6 Kernel Function Input Attributes)")
                builtins[a] = got
        if space == "thread":
            problems.append(f"{where}: '{ptype}' points to thread memory: a kernel's pointer "
                            "and reference arguments are in the device, constant or threadgroup "
                            "address space (MSL §4 Address Spaces, §5.2.1)")
        if space is None and not bindings and "texture" not in ptype and "sampler" not in ptype:
            shown = re.sub(r"\b__private\s*", "", ptype)
            problems.append(f"{where}: invalid type '{shown}' for input declaration in a kernel "
                            "function (Apple's message): a by-value argument needs a built-in "
                            "attribute (MSL §5.2.3.6)")
    for group in SAME_TYPE:
        declared = {a: builtins[a] for a in group if a in builtins}
        if len(set(declared.values())) > 1:
            problems.append(f"{fn.where}: kernel {name}: {', '.join(f'[[{a}]]' for a in declared)}"
                            " are declared with different types (MSL §5.2.3.6: they must match)")
    lengths = {builtins[a][1] for a in SAME_LENGTH if a in builtins and builtins[a][1] > 1}
    if len(lengths) > 1:
        problems.append(f"{fn.where}: kernel {name}: grid and threadgroup positions and sizes are "
                        "vectors of different lengths (MSL §5.2.3.6: their components must match)")
    pos = builtins.get("thread_position_in_threadgroup")
    idx = builtins.get("thread_index_in_threadgroup")
    if pos and idx and pos[0] == "uint" and idx[0] != "uint":
        problems.append(f"{fn.where}: kernel {name}: [[thread_position_in_threadgroup]] is uint, "
                        "so [[thread_index_in_threadgroup]] must be uint (MSL §5.2.3.6)")
    return problems


def kernel_names(root: Node, own, host_names: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """(name, where) of every kernel the library will have: a non-template kernel's name (or its
    [[host_name]]), and the [[host_name]] of each template instantiation."""
    names = list((n, w) for w, n in host_names)
    for fn in kernels(root, own):
        if fn.parent is not None and fn.parent.kind == "FunctionTemplateDecl":
            continue
        host = [v for a, v in fn.annotations() if a == "host_name"]
        names.append((host[0] if host else qualified_name(fn), fn.where))
    return names


def duplicate_names(names: list[tuple[str, str]]) -> list[str]:
    first: dict[str, str] = {}
    problems = []
    for name, where in names:
        if name in first:
            problems.append(f"{where}: kernel name {name} is also the kernel at {first[name]}: "
                            "kernel functions cannot be overloaded and a library's function "
                            "names are unique (MSL §1.4.1 Overloading, §5.1 Functions)")
        else:
            first.setdefault(name, where)
    return problems
