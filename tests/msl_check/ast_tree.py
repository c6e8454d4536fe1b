"""clang's text AST dump (`-Xclang -ast-dump`) as a tree of nodes, each with the file and line
it comes from, for the rules that clang's front-end cannot state itself (ast_rules.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_LOC = re.compile(r"(/[^\s:<>,']+|line):(\d+):\d+")
_NODE = re.compile(r"^(\S+)(?: (0x[0-9a-f]+))?(.*)$")


@dataclass
class Node:
    kind: str
    addr: str
    rest: str            # the node's line after its kind and address
    file: str
    line: int
    parent: "Node | None" = None
    children: list["Node"] = field(default_factory=list)
    _all: "list[Node] | None" = field(default=None, repr=False)

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}"

    def types(self) -> list[str]:
        """The quoted types of the node's line (a declaration's first is its type; with a
        second, the second is the canonical one)."""
        return re.findall(r"'([^']*)'", self.rest)

    def type(self) -> str:
        """The node's (first) type, canonical where the dump gives both ('sugar':'canonical')."""
        m = re.search(r"'([^']*)'(?::'([^']*)')?", self.rest)
        return (m.group(2) or m.group(1)) if m else ""

    def name(self) -> str:
        """A declaration's name: the word before its first quoted type."""
        head = self.rest.split("'")[0].split()
        return head[-1] if head else ""

    def flags(self) -> set[str]:
        """The words of the node's line outside its quoted types and names."""
        return set(re.sub(r"'[^']*'|\"[^\"]*\"", " ", self.rest).split())

    def walk(self):
        """This node and every node under it, depth first (the whole tree's list is kept: each
        rule walks it)."""
        if self.parent is None:
            if self._all is None:
                self._all = list(self._walk())
            return iter(self._all)
        return self._walk()

    def _walk(self):
        stack = [self]
        while stack:
            n = stack.pop()
            yield n
            stack.extend(reversed(n.children))

    def annotations(self) -> list[tuple[str, object]]:
        """This declaration's `clang::annotate` attributes (MSL attributes, from the source
        step): (name without "msl:", its argument's value: int, str or None)."""
        found = []
        for c in self.children:
            if c.kind != "AnnotateAttr":
                continue
            m = re.search(r'"msl:([^"]*)"', c.rest)
            if not m:
                continue
            found.append((m.group(1), _argument(c)))
        return found

    def ancestors(self):
        n = self.parent
        while n is not None:
            yield n
            n = n.parent


def _argument(attr: Node):
    for d in attr.walk():
        if d is attr:
            continue
        if d.kind == "value:":
            m = re.match(r"\s*Int (-?\d+)", d.rest)
            if m:
                return int(m.group(1))
        if d.kind == "IntegerLiteral":
            return int(d.rest.split()[-1])
        if d.kind == "StringLiteral":
            m = re.search(r'"((?:[^"\\]|\\.)*)"\s*$', d.rest)
            if m:
                return m.group(1)
    return None


def parse(dump: str) -> Node:
    """The tree of one translation unit's dump."""
    root = Node("root", "", "", "", 0)
    stack: list[tuple[int, Node]] = [(-1, root)]
    file, line_no = "", 0
    for text in dump.splitlines():
        if "/" in text or "line:" in text:
            for f, ln in _LOC.findall(text):
                if f != "line":
                    file = f
                line_no = int(ln)
        body = text.lstrip("| `-")
        depth = len(text) - len(body)
        m = _NODE.match(body)
        if not m:
            continue
        kind, addr, rest = m.group(1), m.group(2) or "", m.group(3)
        while stack[-1][0] >= depth:
            stack.pop()
        parent = stack[-1][1]
        node = Node(kind, addr, rest, file, line_no, parent)
        parent.children.append(node)
        stack.append((depth, node))
    return root
