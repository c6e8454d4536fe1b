#!/usr/bin/env python3
"""Source step of the MSL simulator: turns a .metal file into C++ that includes the compat header.

    translate.py SRC.metal -o OUT.cpp [-I DIR]... [-D NAME[=VALUE]]...

1. The C preprocessor expands the file with <metal_stdlib> & co. resolving to stubs
   (include/stub/), __METAL_VERSION__ defined, and line markers kept, so compiler errors and
   debuggers point at the original .metal lines.
2. A token-level pass rewrites what C++ cannot say, without adding or removing lines:
   - kernel parameter attributes ([[buffer(n)]], [[thread_position_in_grid]], ...) are stripped and
     recorded; each kernel gets a static ParamDesc table and a KernelRegistration (its
     [[host_name]] or function name) so the runtime can bind arguments at launch;
   - `template [[host_name("x")]] [[kernel]] decltype(f<A>) f<A>;` becomes the registration of x;
   - `constant T n [[function_constant(i)]];` becomes a global set at each dispatch, and program-
     scope constants computed from function constants are recomputed at each dispatch;
     is_function_constant_defined(n) reads a per-constant flag;
   - each declarator of a function-scope `threadgroup T a[N], s;` becomes a reference into
     per-threadgroup storage (other forms of a threadgroup variable are errors);
   - 1.0h becomes a half, unsuffixed floating literals become float (MSL has no double);
   - function definitions that differ only by address space (identical once device/constant/
     threadgroup/thread are erased) are kept once (a warning is printed if the bodies differ).
3. The result is wrapped in an unnamed namespace, so the linker cannot merge one file's inline
   helpers (which may read its function constants) with another file's.
Standard library only (Python 3.11).
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

HERE = os.path.dirname(os.path.abspath(__file__))
STUB_DIR = os.path.join(HERE, "include", "stub")
METAL_VERSION = "400"

ADDRESS_SPACES = {"device", "constant", "threadgroup", "thread", "threadgroup_imageblock", "ray_data",
                  "object_data"}
STANDARD_ATTRIBUTES = {"maybe_unused", "likely", "unlikely", "fallthrough", "nodiscard", "noreturn",
                       "deprecated", "gnu", "clang", "no_unique_address", "carries_dependency"}

# Kernel parameter attribute -> ParamKind enumerator (those with an index take it as argument).
PARAM_KINDS = {
    "buffer": "Buffer",
    "threadgroup": "Threadgroup",
    "thread_position_in_grid": "ThreadPositionInGrid",
    "threadgroup_position_in_grid": "ThreadgroupPositionInGrid",
    "thread_position_in_threadgroup": "ThreadPositionInThreadgroup",
    "thread_index_in_threadgroup": "ThreadIndexInThreadgroup",
    "threads_per_threadgroup": "ThreadsPerThreadgroup",
    "dispatch_threads_per_threadgroup": "ThreadsPerThreadgroup",
    "threadgroups_per_grid": "ThreadgroupsPerGrid",
    "threads_per_grid": "ThreadsPerGrid",
    "grid_size": "ThreadsPerGrid",
    "simdgroup_index_in_threadgroup": "SimdgroupIndexInThreadgroup",
    "thread_index_in_simdgroup": "ThreadIndexInSimdgroup",
    "simdgroups_per_threadgroup": "SimdgroupsPerThreadgroup",
    "dispatch_simdgroups_per_threadgroup": "SimdgroupsPerThreadgroup",
    "threads_per_simdgroup": "ThreadsPerSimdgroup",
    "thread_execution_width": "ThreadsPerSimdgroup",
    "quadgroup_index_in_threadgroup": "QuadgroupIndexInThreadgroup",
    "thread_index_in_quadgroup": "ThreadIndexInQuadgroup",
    "quadgroups_per_threadgroup": "QuadgroupsPerThreadgroup",
}


class TranslateError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Tokens

@dataclass
class Tok:
    kind: str  # id, num, str, chr, punct, ws, dir
    text: str
    file: str = ""
    line: int = 0
    orig: str = ""  # text before any rewrite: structure decisions read this


TOKEN_RE = re.compile(
    r"""
    (?P<dir>^[ \t]*\#[^\n]*)                                  # line markers, pragmas
  | (?P<ws>[ \t\r\n\f\v]+)
  | (?P<str>(?:u8|u|U|L)?"(?:\\.|[^"\\\n])*")
  | (?P<chr>(?:u8|u|U|L)?'(?:\\.|[^'\\\n])+')
  | (?P<num>\.?[0-9](?:[eEpP][+-]|[0-9a-zA-Z_.']|)*)
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>::|->|.)
    """,
    re.VERBOSE | re.MULTILINE | re.DOTALL,
)
MARKER_RE = re.compile(r'^\s*#\s*(?:line\s+)?(\d+)\s+"((?:\\.|[^"\\])*)"')


def tokenize(text: str) -> list[Tok]:
    toks = []
    file, line = "<input>", 1
    for m in TOKEN_RE.finditer(text):
        kind = m.lastgroup
        s = m.group()
        t = Tok(kind, s, file, line, s)
        toks.append(t)
        if kind == "dir":
            mk = MARKER_RE.match(s)
            if mk:
                # The marker names the line that follows it.
                file, line = mk.group(2), int(mk.group(1)) - 1
        line += s.count("\n")
    return toks


def newlines(text: str) -> str:
    return "\n" * text.count("\n")


# ---------------------------------------------------------------------------------------------
# The translator

@dataclass
class Param:
    name: str
    attrs: list[tuple[str, str]]  # (attribute name, argument text)


@dataclass
class Kernel:
    name: str
    params: list[Param]
    is_template: bool
    table: str = ""  # name of the ParamDesc array
    host_name: str | None = None


@dataclass
class Translator:
    toks: list[Tok]
    source: str
    sig: list[int] = field(default_factory=list)  # indices of significant tokens
    match: dict[int, int] = field(default_factory=dict)  # sig position -> matching sig position
    kernels: dict[str, Kernel] = field(default_factory=dict)
    function_constants: dict[str, int] = field(default_factory=dict)
    derived_constants: set[str] = field(default_factory=set)
    seen_functions: dict[tuple, str] = field(default_factory=dict)
    counter: int = 0
    warnings: list[str] = field(default_factory=list)

    # -- helpers over significant tokens (positions p index self.sig) --
    def t(self, p: int) -> Tok:
        return self.toks[self.sig[p]]

    def txt(self, p: int) -> str:
        return self.toks[self.sig[p]].orig if 0 <= p < len(self.sig) else ""

    def uid(self) -> int:
        self.counter += 1
        return self.counter

    def span_text(self, p0: int, p1: int) -> str:
        """Current text of significant tokens p0..p1-1 on one line (for generated code)."""
        if p1 <= p0:
            return ""
        out = []
        for i in range(self.sig[p0], self.sig[p1 - 1] + 1):
            tok = self.toks[i]
            if tok.kind == "dir":
                continue
            out.append(" " if tok.kind == "ws" or not tok.text.strip() else tok.text.replace("\n", " "))
        return re.sub(r"\s+", " ", "".join(out)).strip()

    def blank(self, p0: int, p1: int, replacement: str = "") -> None:
        """Replaces tokens of sig range [p0, p1) (and whitespace between) keeping line count."""
        i0, i1 = self.sig[p0], self.sig[p1 - 1]
        nl = sum(self.toks[i].text.count("\n") for i in range(i0, i1 + 1))
        for i in range(i0, i1 + 1):
            self.toks[i].text = ""
        self.toks[i0].text = replacement + "\n" * nl

    def loc(self, p: int) -> tuple[str, int]:
        tok = self.t(p)
        return tok.file, tok.line

    def error(self, p: int, msg: str) -> TranslateError:
        f, ln = self.loc(p) if 0 <= p < len(self.sig) else ("?", 0)
        return TranslateError(f"{f}:{ln}: {msg}")

    # -- setup --
    def index(self) -> None:
        self.sig = [i for i, t in enumerate(self.toks) if t.kind not in ("ws", "dir")]
        stack = []
        pairs = {")": "(", "]": "[", "}": "{"}
        for p in range(len(self.sig)):
            s = self.txt(p)
            if s in "([{" and len(s) == 1:
                stack.append(p)
            elif s in pairs and len(s) == 1:
                if not stack or self.txt(stack[-1]) != pairs[s]:
                    raise self.error(p, f"unbalanced '{s}'")
                q = stack.pop()
                self.match[q] = p
                self.match[p] = q
        if stack:
            raise self.error(stack[-1], f"unclosed '{self.txt(stack[-1])}'")

    # -- pass: literals --
    def rewrite_literals(self) -> None:
        for tok in self.toks:
            if tok.kind != "num":
                continue
            s = tok.text.replace("'", "")
            low = s.lower()
            if low.startswith("0x"):
                if "p" in low and not low.endswith(("f", "h")):
                    tok.text = s + "f"
                continue
            is_float = "." in s or "e" in low
            if low.endswith("h") and (is_float or re.fullmatch(r"[0-9]+h", low)):
                tok.text = f"((half){s[:-1]}{'' if is_float else '.0'}f)"
            elif is_float and not low.endswith(("f", "l")):
                tok.text = s + "f"

    # -- attributes: [[ ... ]] at sig position p (p: first '[') --
    def is_attr_start(self, p: int) -> bool:
        return self.txt(p) == "[" and self.txt(p + 1) == "[" and self.match.get(p) == self.match.get(p + 1, -2) + 1

    def parse_attr(self, p: int) -> tuple[list[tuple[str, str]], int]:
        """Items (name, args) of the attribute group at p, and the position after its ']]'."""
        end = self.match[p]  # outer ']'
        items = []
        q = p + 2
        while q < end - 1:
            if self.txt(q) == ",":
                q += 1
                continue
            name = self.txt(q)
            q += 1
            while self.txt(q) == "::":
                name += "::" + self.txt(q + 1)
                q += 2
            args = ""
            if self.txt(q) == "(":
                close = self.match[q]
                args = self.span_text(q + 1, close)
                q = close + 1
            items.append((name, args))
        return items, end + 1

    def strip_attrs(self, p0: int, p1: int) -> list[tuple[str, str]]:
        """Removes non-standard attribute groups in [p0, p1); returns their items."""
        found = []
        p = p0
        while p < p1:
            if self.is_attr_start(p):
                items, after = self.parse_attr(p)
                if not all(n.split("::")[0] in STANDARD_ATTRIBUTES for n, _ in items):
                    found.extend(items)
                    self.blank(p, after, " ")
                p = after
            else:
                p += 1
        return found

    # -- structure --
    def skip_template_header(self, p: int, end: int) -> int:
        while self.txt(p) == "template" and self.txt(p + 1) == "<":
            depth, q = 0, p + 1
            while q < end:
                s = self.txt(q)
                if s in "([{" and len(s) == 1:
                    q = self.match[q]
                elif s == "<":
                    depth += 1
                elif s == ">":
                    depth -= 1
                    if depth == 0:
                        break
                q += 1
            p = q + 1
        return p

    def is_initializer_eq(self, q: int) -> bool:
        prev, nxt = self.txt(q - 1), self.txt(q + 1)
        return prev not in ("operator", "=", "!", "<", ">", "+", "-", "*", "/", "%", "&", "|", "^") and nxt != "="

    def parse_scope(self, p: int, end: int, kind: str, path: list[str]) -> None:
        while p < end:
            start = p
            while self.txt(start) in ("public", "private", "protected") and self.txt(start + 1) == ":":
                start += 2
            p = start
            if p >= end:
                break
            if self.txt(p) == ";":
                p += 1
                continue
            body_start = self.skip_template_header(p, end)
            q = body_start
            has_eq = False
            ctor_init = False
            stop = None
            while q < end:
                s = self.txt(q)
                if s == ";":
                    stop = q
                    break
                if s == "{":
                    prev = self.txt(q - 1)
                    if has_eq or (ctor_init and prev not in (")", "}")):
                        q = self.match[q] + 1
                        continue
                    stop = q
                    break
                if s in ("(", "[") and len(s) == 1:
                    q = self.match[q] + 1
                    continue
                if s == "=" and self.is_initializer_eq(q):
                    has_eq = True
                if s == ":" and self.txt(q - 1) == ")":
                    ctor_init = True
                q += 1
            if stop is None:
                break
            if self.txt(stop) == ";":
                if kind == "ns":
                    self.declaration(start, stop, path)
                p = stop + 1
                continue
            close = self.match[stop]
            head = [self.txt(x) for x in range(body_start, stop)]
            first = head[0] if head else ""
            if first == "namespace" or (first == "inline" and len(head) > 1 and head[1] == "namespace"):
                name = head[-1] if head[-1] != "namespace" else ""
                self.parse_scope(stop + 1, close, "ns", path + ([name] if name else []))
                p = close + 1
            elif first == "extern" and len(head) == 2:
                self.parse_scope(stop + 1, close, "ns", path)
                p = close + 1
            elif first in ("struct", "class", "union", "enum") or head[:2] in (["typedef", "struct"], ["typedef", "union"]):
                name = next((h for h in head[1:] if re.match(r"[A-Za-z_]\w*$", h) and h not in ("class", "struct")), "")
                if first != "enum":
                    self.parse_scope(stop + 1, close, "class", path + [name])
                r = close + 1
                while r < end and self.txt(r) != ";":
                    r = self.match[r] + 1 if self.txt(r) in ("(", "[", "{") else r + 1
                p = r + 1
            else:
                self.function(start, body_start, stop, close, kind, path)
                p = close + 1

    # -- function definitions: kernels, address-space duplicates, threadgroup locals --
    def function(self, start: int, body_start: int, brace: int, close: int, kind: str, path: list[str]) -> None:
        head_attrs = []
        is_kernel = False
        for q in range(start, brace):
            if self.txt(q) == "kernel" and self.txt(q + 1) in ("void",):
                is_kernel = True
                self.t(q).text = ""
        # The parameter list: the first '(' (outside attributes) preceded by a name.
        paren = None
        q = body_start
        while q < brace:
            if self.is_attr_start(q):
                q = self.match[q] + 1
                continue
            s = self.txt(q)
            if s == "(":
                prev = self.txt(q - 1)
                if re.match(r"[A-Za-z_]\w*$", prev) and prev not in ("__attribute__", "alignas", "decltype", "__declspec"):
                    paren = q
                    break
                q = self.match[q] + 1
                continue
            q += 1
        head_attrs = self.strip_attrs(start, paren if paren is not None else brace)
        if any(n == "kernel" for n, _ in head_attrs):
            is_kernel = True
        if paren is None:
            self.scan_body(brace, close)
            return
        fname = self.txt(paren - 1)
        if is_kernel:
            params = self.kernel_params(paren)
            host = next((a for n, a in head_attrs if n == "host_name"), None)
            k = Kernel(fname, params, self.txt(start) == "template")
            k.host_name = concat_strings(host) if host else None
            self.kernels[fname] = k
            self.emit_kernel_table(k, close, self.loc(start)[1])
        else:
            self.dedupe(start, brace, close, path)
        self.strip_attrs(paren, brace)
        self.scan_body(brace, close)

    def kernel_params(self, paren: int) -> list[Param]:
        close = self.match[paren]
        params = []
        q = paren + 1
        seg = q
        angle = 0
        while q <= close:
            s = self.txt(q)
            if q == close or (s == "," and angle == 0):
                if q > seg:
                    params.append(self.kernel_param(seg, q))
                seg = q + 1
                q += 1
                continue
            if s in ("(", "[", "{") and not self.is_attr_start(q):
                q = self.match[q] + 1
                continue
            if self.is_attr_start(q):
                q = self.match[q] + 1
                continue
            if s == "<":
                angle += 1
            elif s == ">":
                angle -= 1
            q += 1
        return params

    def kernel_param(self, p0: int, p1: int) -> Param:
        name = ""
        attrs = []
        q = p0
        while q < p1:
            if self.is_attr_start(q):
                items, after = self.parse_attr(q)
                attrs.extend(items)
                self.blank(q, after, " ")
                q = after
                continue
            if re.match(r"[A-Za-z_]\w*$", self.txt(q)) and self.txt(q) not in ADDRESS_SPACES:
                name = self.txt(q)
            q += 1
        if self.txt(p0) == "void" and p1 == p0 + 1:
            return None  # f(void)
        return Param(name, attrs)

    def emit_kernel_table(self, k: Kernel, close: int, line: int) -> None:
        k.params = [p for p in k.params if p is not None]
        n = self.uid()
        k.table = f"msl_sim_params_{k.name}_{n}"
        rows = []
        for prm in k.params:
            kind = index = None
            enabled = "nullptr"
            for name, args in prm.attrs:
                if name in PARAM_KINDS:
                    kind = PARAM_KINDS[name]
                    index = args or "0"
                elif name == "function_constant":
                    enabled = f"+[]() -> bool {{ return bool({args}); }}"
            if kind is None:
                raise self.error(close, f"kernel '{k.name}': parameter '{prm.name}' has no binding attribute "
                                 f"(one of {', '.join(sorted(PARAM_KINDS))})")
            rows.append(f"{{::msl_sim::ParamKind::{kind}, {index}, {enabled}, \"{prm.name}\"}}")
        if not rows:
            rows.append("{::msl_sim::ParamKind::Buffer, -1, nullptr, \"\"}")
        code = f" static const ::msl_sim::ParamDesc {k.table}[] = {{{', '.join(rows)}}};"
        if not k.is_template:
            reg = k.host_name or k.name
            code += self.registration(reg, f"&{k.name}", k, str(line))
        self.t(close).text += code

    def registration(self, name: str, target: str, k: Kernel, line: str = "__LINE__") -> str:
        n = self.uid()
        count = len(k.params)
        return (f" static ::msl_sim::KernelRegistration msl_sim_reg_{n}(\"{name}\", "
                f"&::msl_sim::kernel_thunk<{target}>, {k.table}, {count}, &::msl_sim_tu_constants, "
                f"__FILE__, {line});")

    def dedupe(self, start: int, brace: int, close: int, path: list[str]) -> None:
        words = [self.txt(q) for q in range(start, brace)]
        key = (tuple(path), " ".join(w for w in words if w not in ADDRESS_SPACES))
        body = " ".join(w for w in (self.txt(q) for q in range(brace, close + 1)) if w not in ADDRESS_SPACES)
        if key in self.seen_functions:
            if self.seen_functions[key] != body:
                f, ln = self.loc(start)
                self.warnings.append(f"{f}:{ln}: warning: definition differs from an earlier one only by address "
                                     f"space but has a different body; keeping the first")
            self.blank(start, close + 1, " ")
        else:
            self.seen_functions[key] = body

    def scan_body(self, brace: int, close: int) -> None:
        """Function-scope `threadgroup` variables -> references into per-threadgroup storage."""
        q = brace + 1
        while q < close:
            q = self.threadgroup_use(q, close) if self.txt(q) == "threadgroup" else q + 1

    def skip_group(self, q: int) -> int:
        return self.match[q] + 1 if self.txt(q) in ("(", "[", "{") else q + 1

    def declarator_start(self, q: int, end: int) -> int:
        """After `threadgroup` at q-1: where the type T ends (a declarator name, '*' or '&' follows)."""
        angle = 0
        while q < end:
            s = self.txt(q)
            if s == "<":
                angle += 1
            elif s == ">" and angle:
                angle -= 1
            elif s == "(" and self.txt(q - 1) in ("decltype", "alignas", "__attribute__"):
                q = self.match[q]
            elif angle == 0 and s in ("*", "&", "("):
                return q
            elif angle == 0 and s in (")", "[", "]", ",", ";", "=", "{", "}", ">"):
                return q - 1  # the name before it
            q += 1
        return q

    def threadgroup_use(self, q: int, close: int) -> int:
        """Handles the `threadgroup` at q; returns where scanning goes on.

        A statement `threadgroup T a[N], s, *p;` gets one per-threadgroup object for each array or
        scalar declarator (pointers and references stay per-thread). Elsewhere (casts, parameters,
        template arguments) only pointer and reference types are valid; any other form is an
        error rather than a silently per-thread variable.
        """
        decl = self.declarator_start(q + 1, close)
        if self.txt(q - 1) not in (";", "{", "}", ":"):
            if self.txt(decl) not in ("*", "&"):
                raise self.error(q, f"unsupported threadgroup variable '{self.txt(decl)}': declare it "
                                 f"in a statement of its own, `threadgroup T name[N];`")
            return q + 1
        if decl <= q + 1:
            raise self.error(q, "cannot read this threadgroup declaration")
        type_text = self.span_text(q + 1, decl)
        # Declarators, split at top-level commas (template argument lists may hold commas).
        decls, d0, x, angle = [], decl, decl, 0
        while x < close and self.txt(x) != ";":
            s = self.txt(x)
            angle += (s == "<") - (s == ">")
            if s == "," and angle == 0:
                decls.append((d0, x))
                d0 = x + 1
            x = self.skip_group(x)
        semi = x
        if semi >= close:
            raise self.error(q, "threadgroup declaration without ';'")
        decls.append((d0, semi))
        code, storage = [], False
        for d0, d1 in decls:
            name = self.txt(d0)
            if name in ("*", "&") or (name == "(" and self.txt(d0 + 1) in ("*", "&")):
                code.append(f"{type_text} {self.span_text(d0, d1)};")  # per-thread pointer/reference
                continue
            dims_end = d0 + 1
            while dims_end < d1 and self.txt(dims_end) == "[" and not self.is_attr_start(dims_end):
                dims_end = self.match[dims_end] + 1
            if not re.match(r"[A-Za-z_]\w*$", name) or dims_end != d1:
                what = "an initializer" if self.txt(dims_end) == "=" else "an unsupported form"
                raise self.error(d0, f"threadgroup variable '{name}' has {what}")
            n = self.uid()
            code.append(f"static constexpr ::msl_sim::rt::TgSite msl_sim_tg_{n}{{\"{name}\", __FILE__, __LINE__}}; "
                        f"auto& {name} = ::msl_sim::threadgroup_local<{type_text} {self.span_text(d0 + 1, d1)}>"
                        f"(msl_sim_tg_{n});")
            storage = True
        if storage:  # a statement of pointers only is valid C++ as it is
            self.blank(q, semi + 1, " ".join(code))
        return semi + 1

    # -- namespace-scope declarations: instantiations, function constants, derived constants --
    def declaration(self, start: int, semi: int, path: list[str]) -> None:
        if self.txt(start) == "template" and self.is_attr_start(start + 1):
            self.instantiation(start, semi)
            return
        words = [self.txt(q) for q in range(start, semi)]
        if "constant" not in words[:4]:
            self.strip_attrs(start, semi)
            return
        attrs_at = next((q for q in range(start, semi) if self.is_attr_start(q)), None)
        if attrs_at is not None:
            items, after = self.parse_attr(attrs_at)
            fc = [a for n, a in items if n == "function_constant"]
            if fc:
                name = self.txt(attrs_at - 1)
                type_text = " ".join(w for w in (self.txt(q) for q in range(start, attrs_at - 1))
                                     if w not in ("constant", "const", "constexpr", "static"))
                index = fc[0]
                self.function_constants[name] = index
                n = self.uid()
                code = (f"static {type_text} {name}; static bool msl_sim_fcdef_{name}; "
                        f"static ::msl_sim::ConstantInit msl_sim_ci_{n}(::msl_sim_tu_constants, {index}, {name}, "
                        f"msl_sim_fcdef_{name});")
                self.blank(start, semi + 1, code)
                return
        eq = next((q for q in range(start, semi) if self.txt(q) == "=" and self.is_initializer_eq(q)), None)
        if eq is None:
            return
        expr_ids = {self.txt(q) for q in range(eq + 1, semi)}
        deps = set(self.function_constants) | self.derived_constants | {"msl_sim_fcdef"}
        uses_fc = bool(expr_ids & deps) or "is_function_constant_defined" in expr_ids
        if not uses_fc:
            return
        name = self.txt(eq - 1)
        if name == "]":
            raise self.error(start, "arrays computed from function constants are not supported")
        type_text = " ".join(w for w in (self.txt(q) for q in range(start, eq - 1))
                             if w not in ("constant", "const", "constexpr", "static"))
        expr = self.span_text(eq + 1, semi)
        self.derived_constants.add(name)
        n = self.uid()
        code = (f"static {type_text} {name}; static ::msl_sim::ConstantInit msl_sim_ci_{n}(::msl_sim_tu_constants, "
                f"+[]() {{ {name} = ({expr}); }});")
        self.blank(start, semi + 1, code)

    def instantiation(self, start: int, semi: int) -> None:
        q = start + 1
        items = []
        while self.is_attr_start(q):
            its, q = self.parse_attr(q)
            items.extend(its)
        host = next((a for n, a in items if n == "host_name"), None)
        words_from = q
        if self.txt(q) == "kernel":
            words_from += 1
        if self.txt(words_from) == "decltype":
            close = self.match[words_from + 1]
            target = self.span_text(words_from + 2, close)
        else:
            # template [[host_name("x")]] [[kernel]] void f<A>(params...);
            paren = next((x for x in range(words_from, semi) if self.txt(x) == "(" and self.txt(x - 1) == ">"), None)
            if paren is None:
                raise self.error(start, "cannot read this kernel instantiation")
            lt = next(x for x in range(words_from, paren) if self.txt(x) == "<")
            target = self.span_text(lt - 1, paren)
        base = target.split("<")[0].strip().split("::")[-1].strip()
        k = self.kernels.get(base)
        if k is None:
            raise self.error(start, f"instantiation of '{base}', which is not a kernel defined earlier in this file")
        name = concat_strings(host) if host else base
        self.blank(start, semi + 1, self.registration(name, f"&{target}", k).strip())

    def replace_fc_defined(self) -> None:
        for p in range(len(self.sig) - 3):
            if self.txt(p) == "is_function_constant_defined" and self.txt(p + 1) == "(":
                close = self.match[p + 1]
                name = self.span_text(p + 2, close).strip()
                self.blank(p, close + 1, f"(msl_sim_fcdef_{name})")

    def run(self) -> str:
        for tok in self.toks:
            if tok.kind == "dir" and re.match(r"\s*#\s*pragma\s+msl_sim_compat", tok.text):
                tok.text = ""
        self.index()
        self.rewrite_literals()
        self.replace_fc_defined()
        self.parse_scope(0, len(self.sig), "ns", [])
        self.strip_attrs(0, len(self.sig))  # whatever non-standard attribute is left (e.g. in bodies)
        # The file's code goes in an unnamed namespace: an inline helper from a header shared by
        # two files, reading this file's function constants, must not be merged with the other
        # file's copy by the linker (ODR/COMDAT).
        header = ("// Generated by tests/msl_sim/translate.py from " + self.source + ": do not edit.\n"
                  "#include <msl_sim/compat.h>\n"
                  "static ::msl_sim::TuConstants msl_sim_tu_constants;\n"
                  "namespace {\n")
        return header + "".join(t.text for t in self.toks) + "\n}  // namespace\n"


def concat_strings(args: str) -> str:
    """'"a" "b"' -> 'ab' (adjacent string literals of a macro-made host_name)."""
    parts = re.findall(r'"((?:\\.|[^"\\])*)"', args)
    if not parts:
        raise TranslateError(f"host_name needs a string literal, got {args!r}")
    return "".join(parts)


def preprocess(src: str, includes: list[str], defines: list[str], cpp: str = "g++",
               stub_dir: str = STUB_DIR) -> str:
    """`stub_dir` holds the <metal_stdlib> the source sees (another target passes its own)."""
    cmd = [cpp, "-E", "-x", "c++", "-std=c++20", "-nostdinc", "-nostdinc++",
           f"-D__METAL_VERSION__={METAL_VERSION}", "-D__METAL__=1", "-D__HAVE_SIMDGROUP_MATRIX__=1",
           "-I", stub_dir]
    for d in includes:
        cmd += ["-I", d]
    for d in defines:
        cmd += ["-D", d]
    cmd.append(src)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise TranslateError(f"preprocessing {src} failed:\n{r.stderr}")
    return r.stdout


def translate(src: str, includes: list[str] = (), defines: list[str] = ()) -> tuple[str, list[str]]:
    text = preprocess(src, list(includes), list(defines))
    tr = Translator(tokenize(text), src)
    return tr.run(), tr.warnings


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("-I", dest="includes", action="append", default=[])
    ap.add_argument("-D", dest="defines", action="append", default=[])
    a = ap.parse_args(argv)
    try:
        out, warnings = translate(a.src, a.includes, a.defines)
    except TranslateError as e:
        print(f"translate.py: error: {e}", file=sys.stderr)
        return 1
    for w in warnings:
        print(w, file=sys.stderr)
    tmp = a.output + ".tmp"
    with open(tmp, "w") as f:
        f.write(out)
    os.replace(tmp, a.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
