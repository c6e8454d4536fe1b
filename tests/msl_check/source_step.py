"""Turns preprocessed MSL into C++ for OpenCL that clang can type-check, keeping every line where
it was (errors name .metal lines through the preprocessor's line markers).

What is rewritten, and why (everything else is left to clang):
- `[[attr]]` groups: MSL's attributes (MSL_ATTRIBUTES, from the specification) become
  `clang::annotate("msl:attr", args)`, so their integer/string arguments are still evaluated;
  an unknown name stays as written and clang rejects it (-Werror=unknown-attributes).
- `template [[host_name(..)]] [[kernel]] decl;` -> `template decl;` (clang takes no attribute on
  an explicit instantiation; the instantiation still type-checks the whole kernel body).
- `constant T x [[function_constant(i)]];` -> `extern constant T x ...;`: a value known only when
  the pipeline is built, never a compile-time constant.
- A `constant` variable (program scope, or a function-scope one that is not a pointer or
  reference) -> `__global const` marked `annotate("msl:constant")`: clang allows variables only
  in __global or __constant, and the AST rules tell a `constant` one from one without a space.
- A member function qualified `device` or `constant` gets OpenCL's `__global` (clang takes only
  OpenCL's keywords after a declarator) and `annotate("msl:this", space)`, so ast_rules.member_calls
  tells the two apart at each call; a `constant` one also becomes a member template (defaulted
  parameter), so that a class may declare both a device and a constant overload. An unqualified
  one stays generic here; MSL 4.0 puts its object in thread memory, which member_calls checks.
- `template [[host_name("n")]] ...;` names are collected (`host_names`) for the interface rules.
- A function-scope `threadgroup T a[N], s;` -> references to threadgroup storage
  (`mslc::threadgroup_storage`): OpenCL allows local variables only in kernels, which may not
  be templates.
- `floatn(...)`, `vec<T, n>(...)` -> `mslc::make<...>(...)`: clang's vector types have no
  multi-argument or converting constructors (MSL §2.2.2).
- An unsuffixed floating literal `1.0` -> `1.0f` (MSL has no double; clang would warn).
- `kernel` used as a function qualifier -> the annotation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# MSL attributes and the arguments they take: "" none, "int" an integer constant expression,
# "str" a string literal, "int|name" an integer (program scope) or a function constant's name
# (parameter). Sections of the Metal Shading Language Specification.
MSL_ATTRIBUTES = {
    # (Section numbers: see the note at the top of prelude/metal_prelude.h.)
    "kernel": "",                                   # §5.1.3 Kernel Functions
    "max_total_threads_per_threadgroup": "int",     # §5.1.3 Kernel Functions
    "host_name": "str",                             # §5.1 Functions: host_name of a template instance
    "visible": "",                                  # §5.1.4 Visible Functions
    # §5.2.1 Locating Buffer, Texture, and Sampler Arguments
    "buffer": "int", "texture": "int", "sampler": "int", "threadgroup": "int",
    # §5.8.1 Specifying Program Scope Function Constants; §5.8.1.2 function_constant on arguments
    "function_constant": "int|name",
    # §5.2.3.6 Kernel Function Input Attributes
    "dispatch_quadgroups_per_threadgroup": "", "dispatch_simdgroups_per_threadgroup": "",
    "dispatch_threads_per_threadgroup": "", "grid_origin": "", "grid_size": "",
    "quadgroup_index_in_threadgroup": "", "quadgroups_per_threadgroup": "",
    "simdgroup_index_in_threadgroup": "", "simdgroups_per_threadgroup": "",
    "thread_execution_width": "", "thread_index_in_quadgroup": "",
    "thread_index_in_simdgroup": "", "thread_index_in_threadgroup": "",
    "thread_position_in_grid": "", "thread_position_in_threadgroup": "",
    "threadgroup_position_in_grid": "", "threadgroups_per_grid": "", "threads_per_grid": "",
    "threads_per_simdgroup": "", "threads_per_threadgroup": "",
}
# Standard C++ attributes Apple's compiler (clang) also takes; clang checks them itself.
CXX_ATTRIBUTES = {"maybe_unused", "likely", "unlikely", "nodiscard", "fallthrough", "noreturn",
                  "deprecated", "clang"}

_VECTOR_TYPE = re.compile(
    r"^(?:packed_)?(?:bool|char|uchar|short|ushort|int|uint|long|ulong|half|bfloat|float)[234]$")
_FLOAT_LITERAL = re.compile(r"^(?:\d+\.\d*|\.\d+|\d+\.?\d*[eE][+-]?\d+|\d+\.\d*[eE][+-]?\d+)$")
_TOKEN = re.compile(
    r"(?P<marker>^[ \t]*#[^\n]*)|(?P<nl>\n)|(?P<ws>[ \t\r\f\v]+)|(?P<comment>//[^\n]*|/\*.*?\*/)"
    r"|(?P<str>\"(?:\\.|[^\"\\\n])*\"|'(?:\\.|[^'\\\n])*')"
    r"|(?P<num>\.?\d(?:[eEpP][+-]|[\w.])*)|(?P<id>[A-Za-z_]\w*)"
    r"|(?P<punct>::|->|<<=|>>=|<=|>=|==|!=|&&|\|\||\+\+|--|\+=|-=|\*=|/=|%=|&=|\|=|\^=|\S)",
    re.M | re.S)


class SourceError(Exception):
    """An MSL error the source step itself finds (names the .metal line)."""


@dataclass
class Tok:
    kind: str
    text: str

    @property
    def significant(self) -> bool:
        return self.kind not in ("ws", "nl", "comment", "marker")


def tokenize(text: str) -> list[Tok]:
    return [Tok(m.lastgroup, m.group()) for m in _TOKEN.finditer(text)]


def _newlines(toks: list[Tok]) -> str:
    return "".join("\n" * t.text.count("\n") for t in toks)


class _Locator:
    """The .metal file and line of a token index, from the preprocessor's line markers."""

    def __init__(self, toks: list[Tok]):
        self.toks = toks
        self.places: list[tuple[str, int]] = [("?", 1)]  # places[i]: where toks[i] is

    def where(self, index: int) -> str:
        while len(self.places) <= index:  # read on from the last place known (no rescans)
            file, line = self.places[-1]
            t = self.toks[len(self.places) - 1]
            if t.kind == "marker":
                m = re.match(r'\s*#\s*(?:line\s+)?(\d+)\s+"([^"]*)"', t.text)
                if m:
                    line, file = int(m.group(1)) - 1, m.group(2)
            else:
                line += t.text.count("\n")
            self.places.append((file, line))
        file, line = self.places[index]
        return f"{file}:{line}"


def _split_attributes(toks: list[Tok]) -> list[list[Tok]]:
    """The attributes of one [[...]] group's inside, split at top-level commas."""
    parts: list[list[Tok]] = [[]]
    depth = 0
    for t in toks:
        if t.text in "([{":
            depth += 1
        elif t.text in ")]}":
            depth -= 1
        if t.text == "," and depth == 0:
            parts.append([])
        elif t.significant:
            parts[-1].append(t)
    return [p for p in parts if p]


def _attribute(tokens: list[Tok], where: str, constants: set[str]) -> str:
    """One attribute, rewritten."""
    name = tokens[0].text
    if name in CXX_ATTRIBUTES or (len(tokens) > 1 and tokens[1].text == "::"):
        return " ".join(t.text for t in tokens)
    if name not in MSL_ATTRIBUTES:
        return " ".join(t.text for t in tokens)  # clang: unknown attribute (an error)
    kind = MSL_ATTRIBUTES[name]
    args = tokens[2:-1] if len(tokens) > 1 and tokens[1].text == "(" else None
    if args is not None and tokens[-1].text != ")":
        raise SourceError(f"{where}: malformed attribute [[{name}(...)]]")
    if kind == "" and args is not None:
        raise SourceError(f"{where}: [[{name}]] takes no argument")
    if kind and not args:
        raise SourceError(f"{where}: [[{name}(...)]] needs an argument")
    if not args:
        return f'clang::annotate("msl:{name}")'
    text = " ".join(t.text for t in args)
    if kind == "str" and not all(a.kind == "str" for a in args):
        raise SourceError(f"{where}: [[{name}(...)]] takes a string literal")
    if kind == "int|name" and len(args) == 1 and args[0].kind == "id":
        # On a kernel argument: the name of a boolean function constant (§5.8.1).
        if args[0].text not in constants:
            raise SourceError(f"{where}: [[{name}({text})]]: {text} is not a program-scope "
                              "function constant declared before this point")
        return f'clang::annotate("msl:{name}", "{text}")'
    return f'clang::annotate("msl:{name}", {text})'


_ADDRESS_SPACES = {"device", "constant", "thread", "threadgroup", "threadgroup_imageblock",
                   "ray_data", "object_data"}
CONSTANT_VARIABLE = '__attribute__((annotate("msl:constant"))) __global const'


def rewrite(text: str, host_names: list | None = None) -> str:
    """The preprocessed MSL `text`, rewritten for clang (see the module docstring). The
    `[[host_name("n")]]` of explicit instantiations are appended to `host_names` as
    (file:line, n)."""
    toks = tokenize(text)
    loc = _Locator(toks)
    out: list[str] = []
    constants: set[str] = set()  # program-scope `constant` variables declared so far
    scopes: list[str] = []       # "func", "class", "ns", "other" per open brace
    class_names: list[str] = []  # the name of each open class scope
    head: list[Tok] = []         # significant tokens of the statement being read at this level
    decl_start = 0
    i = 0
    n = len(toks)

    def next_sig(j: int) -> int:
        while j < n and not toks[j].significant:
            j += 1
        return j

    def matching(j: int, open_: str, close: str) -> int:
        depth = 0
        while j < n:
            if toks[j].text == open_:
                depth += 1
            elif toks[j].text == close:
                depth -= 1
                if depth == 0:
                    return j
            j += 1
        raise SourceError(f"{loc.where(j)}: unbalanced {open_}")

    def in_function() -> bool:
        return "func" in scopes

    def statement_end(j: int) -> int:
        depth = 0
        while j < n:
            t = toks[j].text
            if t in "([{":
                depth += 1
            elif t in ")]}":
                depth -= 1
            elif t == ";" and depth == 0:
                return j
            j += 1
        raise SourceError(f"{loc.where(j)}: statement without ';'")

    while i < n:
        t = toks[i]
        if not t.significant:
            out.append(t.text)
            i += 1
            continue
        if not head:
            decl_start = len(out)  # where the declaration or statement read now begins in out

        # [[ ... ]] attribute groups (two consecutive '[' only ever start one in C++).
        if t.text == "[" and next_sig(i + 1) < n and toks[next_sig(i + 1)].text == "[":
            inner_start = next_sig(i + 1)
            end = matching(inner_start, "[", "]")  # the inner ']'
            close = next_sig(end + 1)
            if close >= n or toks[close].text != "]":
                raise SourceError(f"{loc.where(i)}: malformed [[...]]")
            where = loc.where(i)
            attrs = [_attribute(a, where, constants)
                     for a in _split_attributes(toks[inner_start + 1:end])]
            out.append("[[" + ", ".join(attrs) + "]]" + _newlines(toks[i:close + 1]))
            head.append(Tok("attr", ""))
            i = close + 1
            continue

        # template [[...]] ... decl;  (explicit instantiation with MSL attributes)
        if t.text == "template" and toks[next_sig(i + 1)].text == "[":
            j = next_sig(i + 1)
            where = loc.where(i)
            while j < n and toks[j].text == "[":
                inner_start = next_sig(j + 1)
                end = matching(inner_start, "[", "]")
                for a in _split_attributes(toks[inner_start + 1:end]):
                    _attribute(a, where, constants)  # checked, then dropped
                    if a[0].text == "host_name" and host_names is not None:
                        host_names.append((where, "".join(
                            x.text[1:-1] for x in a[2:-1] if x.kind == "str")))
                j = next_sig(next_sig(end + 1) + 1)
            out.append("template " + _newlines(toks[i:j]))
            head.append(t)
            i = j
            continue

        # `kernel void f(...)`: the function qualifier (MSL §5.1.3).
        if t.text == "kernel" and next_sig(i + 1) < n and toks[next_sig(i + 1)].text == "void":
            out.append('[[clang::annotate("msl:kernel")]]')
            head.append(Tok("attr", ""))
            i += 1
            continue

        # Function-scope threadgroup variables.
        if t.text == "threadgroup" and in_function() and not head:
            end = statement_end(i)
            rewritten = _threadgroup_declaration(toks[i:end + 1], loc.where(i))
            if rewritten is not None:
                out.append(rewritten)
                i = end + 1
                continue

        # Program-scope function constants and other `constant` variables.
        program_scope = not in_function() and (not scopes or scopes[-1] == "ns")
        if t.text == "constant" and program_scope and _declares_a_variable(toks, i, head):
            end = statement_end(i)
            stmt = toks[i:end + 1]
            sig = [s for s in stmt if s.significant]
            names = [s.text for k, s in enumerate(sig[:-1]) if s.kind == "id" and
                     sig[k + 1].text in ("=", ";", "[", ",") and s.text not in ("constant",)]
            constants.update(names[:1])
            if any(s.text == "function_constant" for s in stmt):
                out.append("extern ")
            out.append(CONSTANT_VARIABLE)
            head.append(t)
            i += 1
            continue
        # A function-scope `constant` variable (not a pointer or reference to constant memory).
        if t.text == "constant" and in_function() and not head and \
                _declares_an_object(toks[i:statement_end(i) + 1]):
            out.append("static " + CONSTANT_VARIABLE)
            head.append(t)
            i += 1
            continue

        # `operator()`: its first parentheses are the function's name.
        if t.text == "(" and head and head[-1].text == "operator" and \
                toks[next_sig(i + 1)].text == ")":
            j = next_sig(i + 1)
            out.append("".join(x.text for x in toks[i:j + 1]))
            head.append(Tok("id", "()"))
            i = j + 1
            continue

        # A member function's address-space qualifier.
        if t.text == "(" and scopes and scopes[-1] == "class" and \
                _member_function(head, class_names[-1]):
            close = matching(i, "(", ")")
            k = next_sig(close + 1)
            quals = set()
            while k < n and toks[k].kind == "id" and toks[k].text in (
                    {"const", "volatile", "noexcept", "override", "final"} | _ADDRESS_SPACES):
                quals.add(toks[k].text)
                k = next_sig(k + 1)
            if k < n and toks[k].text in ("{", ";", "=", "&", "&&", "->"):
                for x in toks[i:close + 1]:
                    out.append(x.text)
                for x in toks[close + 1:k]:
                    # clang takes only OpenCL's keywords after a declarator: a device or
                    # constant member function's object is in __global (either subspace).
                    out.append({"device": "__global", "constant": "__global" if "const" in quals
                                else "__global const"}.get(x.text, x.text))
                space = "device" if "device" in quals else "constant" if "constant" in quals \
                    else None
                if space and toks[k].text in ("{", ";", "="):
                    # Which of the two the source said, for ast_rules.member_calls.
                    out.append(f' __attribute__((annotate("msl:this", "{space}")))')
                if space == "constant" and not any(h.text == "template" for h in head):
                    # A device and a constant overload of one function are one declaration to
                    # clang (both __global): the constant one becomes a member template, a
                    # distinct overload that a call takes only where no device twin fits.
                    out.insert(decl_start, "template <typename mslc_constant_this = void> ")
                head.append(Tok("punct", ")"))
                i = k
                continue

        # Vector constructors.
        if t.kind == "id" and _VECTOR_TYPE.match(t.text):
            j = next_sig(i + 1)
            if j < n and toks[j].text == "(" and not (head and head[-1].text in (".", "->")):
                out.append(f"mslc::make<{t.text}>")
                head.append(t)
                i += 1
                continue
        if t.kind == "id" and t.text == "vec" and next_sig(i + 1) < n and \
                toks[next_sig(i + 1)].text == "<":
            j = next_sig(i + 1)
            depth, k = 0, j
            while k < n:
                if toks[k].text == "<":
                    depth += 1
                elif toks[k].text == ">":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            after = next_sig(k + 1)
            if after < n and toks[after].text == "(":
                inner = "".join(x.text for x in toks[i:k + 1])
                out.append(f"mslc::make<{inner}>" + _newlines(toks[i:k + 1]))
                head.append(t)
                i = k + 1
                continue

        if t.kind == "num" and _FLOAT_LITERAL.match(t.text):
            out.append(t.text + "f")
            head.append(t)
            i += 1
            continue

        # Scope tracking.
        if t.text == "{":
            words = {h.text for h in head}
            if words & {"namespace"}:
                scopes.append("ns")
            elif words & {"struct", "class", "union", "enum"} and ")" not in words:
                scopes.append("class")
                keyword = next(k for k, h in enumerate(head)
                               if h.text in ("struct", "class", "union", "enum"))
                names = [h.text for h in head[keyword + 1:] if h.kind == "id"]
                class_names.append(names[0] if names else "")
            elif ")" in words or words & {"else", "do", "try"} or in_function():
                scopes.append("func")
            else:
                scopes.append("other")
            head = []
        elif t.text == "}":
            if scopes and scopes.pop() == "class":
                class_names.pop()
            head = []
        elif t.text == ";":
            head = []
        elif t.text == ":" and head and head[-1].text in ("public", "private", "protected"):
            head = []
        else:
            head.append(t)
        out.append(t.text)
        i += 1
    return "".join(out)


def _member_function(head: list[Tok], class_name: str) -> bool:
    """Whether a '(' after these tokens, at the scope of class `class_name`, opens the
    parameters of a non-static member function or constructor (not a destructor, not static,
    friend, typedef or using, not an initializer)."""
    toks = [h for h in head if h.kind != "attr"]
    words: list[str] = []
    k = 0
    if toks and toks[0].text == "template":  # template <...>
        depth = 0
        for k, t in enumerate(toks):
            depth += t.text == "<"
            depth -= t.text == ">"
            if t.text == ">" and depth == 0:
                break
        k += 1
    while k < len(toks):
        t = toks[k]
        if t.text in ("__attribute__", "alignas", "decltype") and k + 1 < len(toks) and \
                toks[k + 1].text == "(":
            depth = 0
            for k in range(k + 1, len(toks)):
                depth += toks[k].text == "("
                depth -= toks[k].text == ")"
                if depth == 0:
                    break
            words.append("decltype" if t.text == "decltype" else "")
        else:
            words.append(t.text)
        k += 1
    words = [w for w in words if w]
    if not words or {"static", "friend", "typedef", "using", "=", "(", ")"} & set(words):
        return False
    if "operator" in words or words[-1] == class_name:  # constructors may be qualified too
        return True
    last = words[-1]
    return (re.match(r"^[A-Za-z_]\w*$", last) is not None and last not in (
        "__attribute__", "alignas", "decltype", "sizeof", "noexcept")
        and len(words) >= 2 and words[-2] != "~")


def _declares_a_variable(toks: list[Tok], i: int, head: list[Tok]) -> bool:
    """Whether the declaration around toks[i] (head: its tokens before i) declares a variable:
    not a function (a '(' before any '=', '[', ';' or '{'), typedef or alias."""
    if {"(", "using", "typedef", "template"} & {h.text for h in head}:
        return False
    for t in toks[i:]:
        if t.text in ("=", "[", ";", "{", ","):
            return True
        if t.text == "(":
            return False
    return True


def _declares_an_object(stmt: list[Tok]) -> bool:
    """A declaration whose declarator (before any initializer) is not a pointer or reference."""
    depth = 0
    for t in stmt:
        if t.text in "([{":
            depth += 1
        elif t.text in ")]}":
            depth -= 1
        elif depth == 0 and t.text in ("=", ";"):
            return True
        elif depth == 0 and t.text in ("*", "&", "&&"):
            return False
    return True


def _threadgroup_declaration(stmt: list[Tok], where: str) -> str | None:
    """`threadgroup T a[N], s;` -> references to threadgroup storage; None for pointers and
    references (ordinary variables, left as written)."""
    sig = [t for t in stmt if t.significant][1:-1]  # without `threadgroup` and `;`
    depth = angle = 0
    parts: list[list[Tok]] = [[]]
    for t in sig:
        if t.text in "([{":
            depth += 1
        elif t.text in ")]}":
            depth -= 1
        elif depth == 0 and t.text == "<":
            angle += 1
        elif depth == 0 and t.text == ">":
            angle -= 1
        elif depth == 0 and t.text in ("*", "&", "&&"):
            return None  # a pointer or reference to threadgroup memory: an ordinary variable
        if t.text == "," and depth == 0 and angle == 0:
            parts.append([])
        else:
            parts[-1].append(t)
    if any(t.text == "=" for p in parts for t in p):
        raise SourceError(f"{where}: a threadgroup variable cannot have an initializer "
                          "(MSL §4.4 Threadgroup Address Space)")
    first = parts[0]
    bracket = next((k for k, t in enumerate(first) if t.text == "["), len(first))
    name_at = bracket - 1
    if name_at < 1 or first[name_at].kind != "id":
        raise SourceError(f"{where}: cannot read this threadgroup declaration")
    type_text = " ".join(t.text for t in first[:name_at])
    decls = [first[name_at:]] + parts[1:]
    pieces = []
    for d in decls:
        if not d or d[0].kind != "id":
            raise SourceError(f"{where}: cannot read this threadgroup declaration")
        name, dims = d[0].text, " ".join(t.text for t in d[1:])
        pieces.append(f"threadgroup {type_text} (&{name}){dims} = "
                      f"mslc::threadgroup_storage<{type_text} {dims}>();")
    return " ".join(pieces) + _newlines(stmt)
