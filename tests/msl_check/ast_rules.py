"""MSL rules that clang's C++-for-OpenCL front-end does not state, checked on the AST it produces
(ast_tree.py), other than a kernel's interface (kernel_rules.py): function constants (§5.8),
program-scope and static storage (§4), goto (§1.4.4), pointers without an address space (§4),
member functions and operators called on objects of a space they are not declared for (§4),
implicit conversions to bfloat (§2.1), memory orders other than relaxed (§6.15.1), and functions
called but defined nowhere (a metallib link error).

Section numbers: see the note at the top of prelude/metal_prelude.h (the 3.x editions' numbers).
Each error names the rule; every rule is listed in README.md with the planted error that tests it.
"""

from __future__ import annotations

import re

from ast_tree import Node
from kernel_rules import qualified_name

FUNCTION_CONSTANT_MAX = 65535  # §5.8.1: a function constant's index is a 16-bit value


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
                                "program-scope constant variable is a function constant "
                                "(MSL §5.8.1)")
            elif not isinstance(index, int) or not 0 <= index <= FUNCTION_CONSTANT_MAX:
                problems.append(f"{n.where}: [[function_constant({index})]]: the index is "
                                f"between 0 and {FUNCTION_CONSTANT_MAX} (MSL §5.8.1)")
        if n.kind != "VarDecl":
            continue
        if _at_program_scope(n) and not constant:
            problems.append(f"{n.where}: program scope variable must reside in constant address "
                            "space (Apple's message; MSL §4.2 Constant Address Space): "
                            f"{n.name()}")
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


_SPACE_WORDS = (("__global_device", "device"), ("__global_host", "constant"),
                ("__local", "threadgroup"), ("__private", "thread"), ("__generic", "generic"),
                ("__global", "global"))


def _space_word(type_text: str) -> str | None:
    """The address space named in a type's text, None where it names none."""
    return next((s for w, s in _SPACE_WORDS if re.search(rf"\b{w}\b", type_text)), None)


def _this_space(method: Node) -> str:
    """The address space a member function is declared for: "device" / "constant" (the source
    step's msl:this annotation), "threadgroup", "thread", or "generic" (unqualified: thread
    through MSL 4.0)."""
    annotated = dict(method.annotations()).get("this")
    if annotated:
        return annotated
    quals = method.types()[0].rsplit(")", 1)[-1] if method.types() else ""
    return {"threadgroup": "threadgroup", "thread": "thread"}.get(_space_word(quals), "generic")


def _object_space(obj: Node, arrow: bool, decls: dict[str, Node]) -> str | None:
    """The MSL address space of a member call's object (`obj`: the object expression, or the
    pointer for `->`), seen through clang's conversion to the member function's space."""
    if obj.kind == "ImplicitCastExpr" and "<AddressSpaceConversion>" in obj.rest and obj.children:
        obj = obj.children[0]
    t = obj.type().strip()
    if arrow:
        t = t[:t.rfind("*")] if "*" in t else t
    space = _space_word(t)
    if space is None:
        return "thread"  # a temporary
    if space != "global":
        return space
    # __global: `this` inside a device/constant member function, or a `constant` variable.
    for d in obj.walk():
        if d.kind == "CXXThisExpr":
            method = next((a for a in d.ancestors() if a.kind == "CXXMethodDecl"), None)
            return dict(method.annotations()).get("this") if method is not None else None
        if d.kind == "DeclRefExpr":
            m = re.search(r"\bVar (0x[0-9a-f]+)", d.rest)
            var = decls.get(m.group(1)) if m else None
            if var is not None and "constant" in dict(var.annotations()):
                return "constant"
            return None
    return None


def _overloads(method: Node) -> list[Node]:
    """The member functions of the class declaring `method` (member templates' patterns too)."""
    parent = method.parent
    if parent is not None and parent.kind == "FunctionTemplateDecl":
        parent = parent.parent
    if parent is None:
        return []
    found = []
    for c in parent.children:
        if c.kind == "FunctionTemplateDecl":
            found += [d for d in c.children if d.kind == "CXXMethodDecl"]
        elif c.kind == "CXXMethodDecl":
            found.append(c)
    return found


def member_calls(root: Node, own) -> list[str]:
    """A member function (operators included) called on an object in an address space it is not
    declared for (MSL §4 Address Spaces). Up to MSL 4.0 an unqualified member function's implicit
    object is in thread memory (MSL 4.1 makes it generic), so one called on a device, constant
    or threadgroup object is an error; a `device` one takes device objects only, a `constant` one
    constant objects only. clang sees device and constant methods alike (both __global, see
    source_step), so the call is judged here from the source step's msl:this annotation; where a
    class declares both, clang may bind a call to the twin, which is accepted. The MSL library's
    own members (declared in the prelude) take any object."""
    decls = {n.addr: n for n in root.walk() if n.addr and n.kind in (
        "CXXMethodDecl", "CXXConversionDecl", "VarDecl")}
    problems = []
    for n in root.walk():
        if not own(n.file) or not n.children:
            continue
        if n.kind == "CXXMemberCallExpr":
            callee = n.children[0]
            m = re.search(r"(\.|->)(\S+) (0x[0-9a-f]+)", callee.rest)
            if callee.kind != "MemberExpr" or not callee.children or not m:
                continue
            arrow, addr, obj = m.group(1) == "->", m.group(3), callee.children[0]
        elif n.kind == "CXXOperatorCallExpr" and len(n.children) >= 2:
            ref = next((d for d in n.children[0].walk() if d.kind == "DeclRefExpr"), None)
            m = re.search(r"\bCXXMethod (0x[0-9a-f]+)", ref.rest) if ref is not None else None
            if not m:
                continue  # an operator that is not a member function
            arrow, addr, obj = False, m.group(1), n.children[1]
        else:
            continue
        method = decls.get(addr)
        if method is None or not own(method.file):
            continue
        wanted, space = _this_space(method), _object_space(obj, arrow, decls)
        if space is None or space == wanted or space == "generic" or \
                (wanted == "generic" and space == "thread"):
            continue
        name = method.name()
        if any(o.name() == name and o.types()[:1] == method.types()[:1] and
               _this_space(o) == space for o in _overloads(method)):
            continue  # the class declares the overload for this space; clang took its twin
        declared = "unqualified (thread)" if wanted == "generic" else wanted
        problems.append(f"{n.where}: member function {name} called on an object in {space} "
                        f"memory is not declared {space} (it is {declared}): through MSL 4.0 an "
                        "unqualified member function's object is in thread memory, a device or "
                        "constant one's in that space only (MSL §4 Address Spaces)")
    return problems


def atomic_orders(root: Node, own) -> list[str]:
    """Memory orders other than memory_order_relaxed: through MSL 4.0 the atomic functions take
    memory_order_relaxed only (MSL §6.15.1 Memory Order; see the prelude). Any use is refused,
    so an order kept in a variable first is caught too."""
    problems = []
    for n in root.walk():
        if n.kind != "DeclRefExpr" or not own(n.file):
            continue
        m = re.search(r"\bEnumConstant 0x[0-9a-f]+ '(memory_order_\w+)'", n.rest)
        if m and m.group(1) != "memory_order_relaxed":
            problems.append(f"{n.where}: {m.group(1)}: through MSL 4.0 atomic functions take "
                            "memory_order_relaxed only (MSL §6.15.1 Memory Order; MSL 2.1 "
                            "§5.13.1: \"memory_order_relaxed is the only value supported\"; "
                            "ordered atomics are Metal 4.1's)")
    return problems


def _function_key(n: Node) -> str:
    """A function's identity across translation units: qualified name and type."""
    return f"{qualified_name(n)} '{n.types()[0] if n.types() else ''}'"


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
