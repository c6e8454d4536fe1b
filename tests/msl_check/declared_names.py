"""The MSL names a header declares, read from clang's AST dump: every declaration in the global
namespace and in namespace `metal` (with its nested namespaces, enumerators and public member
functions) whose source is one of the header's own files, plus the macros those files define.
Used to compare the simulator's compatibility header with the check's MSL declarations."""

from __future__ import annotations

import re
import subprocess

_LOC = re.compile(r"<?((?:/|\w)[^\s:<>,]*\.(?:h|inc|hpp|clcpp|cpp)):\d+:\d+")
_NAMED = {
    "FunctionDecl", "FunctionTemplateDecl", "CXXRecordDecl", "ClassTemplateDecl", "TypedefDecl",
    "TypeAliasDecl", "TypeAliasTemplateDecl", "VarDecl", "VarTemplateDecl", "EnumDecl",
    "EnumConstantDecl", "UsingDecl", "CXXMethodDecl", "NamespaceDecl", "ConceptDecl",
}
_MEMBER_KINDS = {"CXXMethodDecl", "FunctionTemplateDecl", "TypedefDecl", "TypeAliasDecl",
                 "CXXRecordDecl", "VarDecl"}


def _decl_name(kind: str, rest: str) -> str | None:
    """The declared name in the text after a declaration's kind and address."""
    rest = re.sub(r"<[^<>]*(?:<[^<>]*>[^<>]*)*>", " ", rest, count=1)  # the source range
    words = rest.replace("'", " ' ").split()
    # Drop location words, flags and quoted types: the name is the first plain identifier.
    skip = {"implicit", "used", "referenced", "invalid", "constexpr", "inline", "static", "extern",
            "struct", "class", "union", "enum", "definition", "prev", "parent", "cinit",
            "callinit", "listinit", "nrvo", "hidden", "imported", "typename", "counted_by",
            "__module_private__", "consteval", "friend", "this", "instantiated_from", "mutable"}
    quoted = False
    for w in words:
        if w == "'":
            quoted = not quoted
            continue
        if quoted or w in skip or w.startswith("0x") or re.match(r"^(line|col):", w):
            continue
        if _LOC.match(w) or ":" in w and w.split(":")[0].endswith((".h", ".inc")):
            continue
        name = w.split("::")[-1]
        if kind == "UsingDecl" or re.match(r"^[A-Za-z_~][\w~]*$", name):
            return name
        return None
    return None


def declared_names(ast_dump: str, own_file: callable) -> set[str]:
    """Qualified names (`metal::exp2`, `float4`, `metal::mem_flags::mem_none`) from a full
    `-Xclang -ast-dump` text, keeping declarations whose file satisfies own_file(path)."""
    names: set[str] = set()
    current = ""
    # Stack of (depth, scope prefix or None when the scope is not collected, is_record).
    stack: list[tuple[int, str | None, bool]] = [(0, "", False)]
    for line in ast_dump.splitlines():
        m = re.match(r"^([| `-]*)(\w+) 0x[0-9a-f]+ (.*)$", line)
        locs = _LOC.findall(line)
        decl_file = locs[0] if locs else current
        if locs:
            current = locs[-1]
        if not m:
            continue
        depth = len(m.group(1)) // 2
        if depth == 0:  # the translation unit
            continue
        kind, rest = m.group(2), m.group(3)
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent_depth, scope, is_record = stack[-1] if stack else (0, None, False)
        if depth != parent_depth + 1 or scope is None:
            continue
        if kind not in _NAMED or not own_file(decl_file) or " implicit " in f" {rest} ":
            if kind in ("NamespaceDecl", "CXXRecordDecl", "EnumDecl", "ClassTemplateDecl"):
                stack.append((depth, None, False))
            continue
        name = _decl_name(kind, rest)
        if not name or name.startswith("operator"):
            stack.append((depth, None, False))
            continue
        if is_record and kind not in _MEMBER_KINDS:
            continue
        qualified = f"{scope}{name}"
        if kind == "NamespaceDecl":
            # Only MSL's namespace and what is nested in it; the simulator's own namespaces are not
            # MSL names.
            collected = qualified.startswith("metal")
            stack.append((depth, f"{qualified}::" if collected else None, False))
            continue
        names.add(qualified)
        if kind in ("CXXRecordDecl", "ClassTemplateDecl", "EnumDecl"):
            stack.append((depth, f"{qualified}::", kind != "EnumDecl"))
    return names
