"""The MSL names a header declares, read from clang's text AST dump (`-Xclang -ast-dump`): the
declarations in the global namespace and in namespace `metal` (its nested namespaces, enumerators,
and the public members of its classes) written in the header's own files. Used to compare the
simulator's compatibility header with the check's MSL declarations (tests/test_msl_check.py)."""

from __future__ import annotations

import re

_LOC = re.compile(r"(/[^\s:<>,']+|[\w.][^\s:<>,']*\.(?:h|inc|hpp)):\d+:\d+")
_NAMESPACE_LEVEL = {
    "FunctionDecl", "FunctionTemplateDecl", "CXXRecordDecl", "ClassTemplateDecl", "TypedefDecl",
    "TypeAliasDecl", "TypeAliasTemplateDecl", "VarDecl", "VarTemplateDecl", "EnumDecl",
    "UsingDecl", "NamespaceDecl", "ConceptDecl",
}
_MEMBER_LEVEL = {"CXXMethodDecl", "FunctionTemplateDecl", "TypedefDecl", "TypeAliasDecl", "VarDecl",
                 "CXXConversionDecl"}
_FLAGS = {"implicit", "used", "referenced", "invalid", "constexpr", "inline", "static", "extern",
          "struct", "class", "union", "enum", "definition", "cinit", "callinit", "listinit",
          "nrvo", "hidden", "typename", "consteval", "friend", "mutable", "explicit", "virtual",
          "default", "delete", "trivial", "imported", "__module_private__", "instantiated_from"}


def _name(rest: str) -> str | None:
    """The declared name in the text after a node's kind and address."""
    rest = re.sub(r"^(?:(?:prev|parent) 0x[0-9a-f]+ )*", "", rest)
    if rest.startswith("<"):  # the source range
        depth = 0
        for k, ch in enumerate(rest):
            depth += ch == "<"
            depth -= ch == ">"
            if depth == 0:
                rest = rest[k + 1:]
                break
    for w in rest.split("'")[0].split():
        if w in _FLAGS or re.match(r"^(?:line|col):|.*:\d+:\d+$", w):
            continue
        return w.split("::")[-1]
    return None


def declared_names(ast_dump: str, own_file) -> set[str]:
    """Qualified names (`metal::exp2`, `float4`, `metal::mem_flags::mem_none`,
    `metal::simd_vote::all`) declared by the files for which own_file(path) is true."""
    names: set[str] = set()
    current = ""
    # Open scopes: (depth, prefix or None when not collected, kind: ns / record / enum, public?)
    stack: list[list] = []
    for line in ast_dump.splitlines():
        locs = _LOC.findall(line)
        decl_file = locs[0] if locs else current
        if locs:
            current = locs[-1]
        node = line.lstrip("| `-")
        depth = (len(line) - len(node)) // 2
        m = re.match(r"^(\w+) 0x[0-9a-f]+ ?(.*)$", node)
        if not m or depth == 0:
            continue
        kind, rest = m.groups()
        while stack and stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1] if stack else [0, "", "ns", True]
        if depth != parent[0] + 1 or parent[1] is None:
            continue
        if parent[2] == "record" and kind == "AccessSpecDecl":
            parent[3] = rest.rstrip().endswith("public")
            continue
        wanted = {"ns": _NAMESPACE_LEVEL, "record": _MEMBER_LEVEL,
                  "enum": {"EnumConstantDecl"}}[parent[2]]
        name = _name(rest)
        collect = (kind in wanted and own_file(decl_file) and " implicit " not in f" {rest} "
                   and name and not name.startswith(("operator", "~")) and parent[3])
        prefix = parent[1]
        if parent[2] == "record" and name == prefix.rstrip(":").split("::")[-1]:
            collect = False  # a constructor, or a class template's own pattern
            if kind == "CXXRecordDecl":
                stack.append([depth, prefix, "record", "class " not in f" {rest} "])
                continue
        if kind in ("NamespaceDecl", "CXXRecordDecl", "ClassTemplateDecl", "EnumDecl"):
            qualified = f"{prefix}{name}::" if name else None
            in_metal = qualified is not None and qualified.startswith("metal::")
            scope_kind = {"NamespaceDecl": "ns", "EnumDecl": "enum"}.get(kind, "record")
            # Members are MSL names only for MSL's own classes (namespace metal); the global
            # classes are the simulator's implementation of builtin types (vec, bfloat).
            keep = collect and (scope_kind != "record" or in_metal) and (
                scope_kind != "ns" or qualified == "metal::" or in_metal)
            stack.append([depth, qualified if keep else None, scope_kind,
                          "class " not in f" {rest} "])
            if kind == "NamespaceDecl":
                continue
        if collect:
            names.add(f"{prefix}{name}")
    return names


def defined_macros(preprocessed_dd: str, own_file) -> set[str]:
    """Macro names #defined by own files, from `-E -dD` output (with line markers)."""
    names: set[str] = set()
    current = ""
    for line in preprocessed_dd.splitlines():
        m = re.match(r'^# \d+ "([^"]*)"', line)
        if m:
            current = m.group(1)
            continue
        m = re.match(r"^#define (\w+)", line)
        if m and own_file(current):
            names.add(m.group(1))
    return names
