"""MSL rules that clang's C++-for-OpenCL front-end does not state, checked on the AST it produces
(ast_tree.py): a kernel's interface (MSL §5), function constants (§5.8), program-scope and static
storage (§4), goto (§1.4.4), pointers without an address space (§4), implicit conversions to
bfloat (§2.1), and functions called but defined nowhere (a metallib link error).

Section numbers: see the note at the top of prelude/metal_prelude.h (the 3.x editions' numbers).
Each error names the rule; every rule is listed in README.md with the planted error that tests it.
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
FUNCTION_CONSTANT_MAX = 65535  # §5.8.1: a function constant's index is a 16-bit value


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


def _qualified_name(fn: Node) -> str:
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
        key = (_qualified_name(n), n.rest.split("'")[1] if "'" in n.rest else "")
        if key not in seen:
            seen.add(key)
            found.append(n)
    return found


def kernel_interface(fn: Node) -> list[str]:
    """MSL §5.1.3 and §5.2: one kernel's return type, arguments and attributes."""
    problems = []
    name = _qualified_name(fn)
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
        names.append((host[0] if host else _qualified_name(fn), fn.where))
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


def _function_of(n: Node) -> Node | None:
    return next((a for a in n.ancestors() if a.kind in (
        "FunctionDecl", "CXXMethodDecl", "CXXConstructorDecl", "LambdaExpr")), None)


def _at_program_scope(n: Node) -> bool:
    return n.parent is not None and n.parent.kind in ("root", "TranslationUnitDecl",
                                                      "NamespaceDecl")


def storage_and_constants(root: Node, own) -> list[str]:
    """Function constants (§5.8.1), program-scope and static variables (§4.2), goto (§1.4.4)."""
    problems = []
    for n in root.walk():
        if not own(n.file) or " implicit " in f" {n.rest} ":
            continue
        if n.kind in ("GotoStmt", "IndirectGotoStmt"):
            problems.append(f"{n.where}: goto: MSL does not support the goto statement "
                            "(MSL §1.4.4 Restrictions)")
            continue
        if n.kind not in ("VarDecl", "ParmVarDecl", "FieldDecl"):
            continue
        attrs = dict(n.annotations())
        constant = "constant" in attrs
        if "function_constant" in attrs:
            index = attrs["function_constant"]
            if n.kind == "ParmVarDecl":
                if not isinstance(index, str):
                    problems.append(f"{n.where}: [[function_constant({index})]] on argument "
                                    f"{n.name()}: an argument names a boolean function constant "
                                    "(MSL §5.8.1 Specifying Program Scope Function Constants)")
            elif not (n.kind == "VarDecl" and _at_program_scope(n) and constant):
                problems.append(f"{n.where}: [[function_constant]] on {n.name()}: only a "
                                "program-scope constant variable is a function constant (MSL §5.8.1)")
            elif not isinstance(index, int) or not 0 <= index <= FUNCTION_CONSTANT_MAX:
                problems.append(f"{n.where}: [[function_constant({index})]]: the index is "
                                f"between 0 and {FUNCTION_CONSTANT_MAX} (MSL §5.8.1)")
        if n.kind != "VarDecl":
            continue
        if _at_program_scope(n) and not constant:
            problems.append(f"{n.where}: program scope variable must reside in constant address "
                            f"space (Apple's message; MSL §4.2 Constant Address Space): {n.name()}")
        elif _function_of(n) is not None and "static" in n.flags() and not constant and \
                "constexpr" not in n.flags():
            problems.append(f"{n.where}: static variable {n.name()} in a function: MSL keeps "
                            "variables of static storage in the constant address space only "
                            "(MSL §4.2 Constant Address Space)")
    return problems


_CHECKED_KINDS = {"ParmVarDecl", "VarDecl", "FieldDecl", "FunctionDecl", "CXXMethodDecl",
                  "TypedefDecl", "TypeAliasDecl", "CStyleCastExpr", "CXXStaticCastExpr",
                  "CXXReinterpretCastExpr", "CXXFunctionalCastExpr", "CXXConstCastExpr"}


def generic_pointers(root: Node, own) -> list[str]:
    """Declarations and explicit casts written in the sources whose type is a pointer or
    reference without an address space (OpenCL's __generic); implicit declarations (copy
    constructors...) and their parts are skipped."""
    found = []
    stack = [root]
    while stack:
        n = stack.pop()
        if " implicit " in f" {n.rest} ":
            continue  # and its children
        stack.extend(n.children)
        if n.kind not in _CHECKED_KINDS or "__generic" not in n.rest or not own(n.file):
            continue
        types = n.types()
        if not types or not re.search(r"__generic [^']*[*&]", types[0]):
            continue
        name = n.name() if n.kind.endswith("Decl") else ""
        found.append(f"{n.where}: {n.kind} {name} of type '{types[0]}': a pointer or reference "
                     "needs an explicit address space (device, constant, threadgroup or thread; "
                     "MSL §4 Address Spaces)")
    return found


def bfloat_conversions(root: Node, own) -> list[str]:
    """Implicit conversions into bfloat (from float, half or an integer) and from bfloat to half:
    MSL converts only bfloat -> float implicitly (MSL §2.1 Scalar Data Types, bfloat; §2.12
    Implicit Type Conversions). Apple's compiler: "cannot initialize a variable of type 'const
    bfloat' with an rvalue of type 'float'" (tracel-ai/cubecl issue #1522)."""
    problems = []
    for n in root.walk():
        if not own(n.file):
            continue
        if n.kind == "ImplicitCastExpr" and re.search(r"<(?:FloatingCast|IntegralToFloating)>",
                                                      n.rest) and n.children and \
                "part_of_explicit_cast" not in n.rest:
            to, frm = n.type(), n.children[0].type()
            bad = ("__bf16" in to and "__bf16" not in frm) or ("__bf16" in frm and
                                                               re.search(r"\bhalf\b", to))
            if bad and "ext_vector_type" not in to:
                problems.append(f"{n.where}: implicit conversion from '{frm}' to '{to}': write "
                                "the conversion (MSL §2.1, §2.12: bfloat converts implicitly "
                                "only to float)")
        elif n.kind == "CompoundAssignOperator" and "__bf16" in n.type():
            m = re.search(r"ComputeResultTy='([^']*)'", n.rest)
            if m and "__bf16" not in m.group(1):
                problems.append(f"{n.where}: compound assignment computes '{m.group(1)}' into a "
                                "bfloat: an implicit conversion to bfloat (MSL §2.1, §2.12)")
    return problems


def member_calls(root: Node, own) -> list[str]:
    """A member function without an address-space qualifier called on an object in device,
    constant or threadgroup memory: up to MSL 4.0 such a function's implicit object is in thread
    memory (MSL 4.1 makes it generic). clang's OpenCL default is generic, so the call shows in
    the AST as an address-space conversion of the object to __generic."""
    problems = []
    for n in root.walk():
        if n.kind != "CXXMemberCallExpr" or not own(n.file) or not n.children:
            continue
        callee = n.children[0]
        if callee.kind != "MemberExpr" or not callee.children:
            continue
        obj = callee.children[0]
        if obj.kind != "ImplicitCastExpr" or "<AddressSpaceConversion>" not in obj.rest or \
                "__generic" not in obj.type() or not obj.children:
            continue
        src = obj.children[0].type()
        space = next((s for w, s in (("__global_device", "device"), ("__global_host", "constant"),
                                      ("__local", "threadgroup"), ("__global", "device"))
                      if re.search(rf"\b{w}\b", src)), None)
        if space:
            method = re.search(r"[.>](\w+) 0x", callee.rest)
            problems.append(f"{n.where}: member function {method.group(1) if method else ''} "
                            f"called on an object in {space} memory is not declared {space}: "
                            "through MSL 4.0 an unqualified member function's object is in "
                            "thread memory (MSL §4 Address Spaces)")
    return problems


def _function_key(n: Node) -> str:
    """A function's identity across translation units: qualified name and type."""
    return f"{_qualified_name(n)} '{n.types()[0] if n.types() else ''}'"


def functions_defined(root: Node, own) -> set[str]:
    return {_function_key(n) for n in root.walk()
            if n.kind in ("FunctionDecl", "CXXMethodDecl") and own(n.file)
            and any(c.kind == "CompoundStmt" for c in n.children)}


def undefined_functions(root: Node, own) -> list[tuple[str, str]]:
    """(identity, error) of each function of the sources that is called (clang marks it `used`)
    and defined nowhere in this translation unit. Another file of the library may define it:
    check_metal judges across the files; alone, a file with one fails (its metallib would not
    link)."""
    decls: dict[str, Node] = {}
    group: dict[str, str] = {}
    for n in root.walk():
        if n.kind in ("FunctionDecl", "CXXMethodDecl") and n.addr:
            decls[n.addr] = n
            m = re.search(r"\bprev (0x[0-9a-f]+)", n.rest)
            group[n.addr] = group.get(m.group(1), m.group(1)) if m else n.addr
    defined, used, first = set(), set(), {}
    for addr, n in decls.items():
        g = group[addr]
        first.setdefault(g, n)
        if any(c.kind == "CompoundStmt" for c in n.children) or \
                {"default", "delete"} & n.flags():
            defined.add(g)
        if "used" in n.flags():
            used.add(g)
    problems = []
    for g in sorted(used - defined):
        n = first[g]
        if not own(n.file) or " implicit " in f" {n.rest} " or n.name().startswith("__"):
            continue
        problems.append((_function_key(n), f"{n.where}: {n.name()} is called but never defined: "
                         "the library cannot be linked (MSL §5.1 Functions)"))
    return problems
