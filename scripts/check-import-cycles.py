#!/usr/bin/env python3
"""Fails when a crate's source files import each other in a cycle.

For every crate of the workspace (each directory holding a Cargo.toml and a
src/lib.rs or src/main.rs), this reads every file under src/, maps it to its
module (src/a/b.rs and src/a/b/mod.rs are `a::b`), and collects the paths it
names: `use` trees (`crate::`, `super::`, `self::` and child modules
declared in the file), and qualified paths in code (`crate::a::B`,
`super::c::D`). A path resolves to the deepest module file it reaches.

An import from a module into one of its ancestors (a child using its
parent's items, `use super::*` in tests, a macro or re-export at the crate
root) is not counted: the parent declares the child, and Rust intends the
child to see the parent's private items. Every other import is an edge; a
cycle of edges (a.rs -> b.rs -> a.rs, or longer) fails the check, naming the
files and the import lines that close it.

Limits: items reached through a re-export at the crate root (`crate::Item`)
count as imports of the root only; `#[path]` modules and inline `mod x { }`
blocks are read as part of their file; macros are not expanded.

Usage: scripts/check-import-cycles.py [ROOT...]   (default: the workspace)
       scripts/check-import-cycles.py --self-test    (checks the checker)
Exit status: 0 without cycles, 1 with, 2 on bad usage.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip_comments_and_strings(text: str) -> str:
    """Blanks out comments, string and char literals, keeping line breaks."""
    out = []
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:]) and (i == 0 or not re.match(r"\w", text[i - 1])):
            hashes = re.match(r"r(#*)\"", text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            j = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            j = min(j + 1, n)
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "'":
            # A char literal ('a', '\n', '\u{1F600}'), not a lifetime ('a).
            m = re.match(r"'(\\.[^']*|[^'\\])'", text[i:])
            if m:
                out.append(" " * len(m.group(0)))
                i += len(m.group(0))
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def module_of(src: Path, file: Path) -> tuple[str, ...]:
    """The module path of `file` inside the crate whose sources are `src`."""
    parts = list(file.relative_to(src).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main"):
        parts.pop()
    return tuple(parts)


def expand_use_tree(tree: str) -> list[list[str]]:
    """`a::{b, c::{d, e as f}, *}` -> [[a, b], [a, c, d], [a, c, e], [a]]."""
    tree = re.sub(r"\s+", "", tree)

    def parse(s: str, i: int, prefix: list[str]) -> tuple[list[list[str]], int]:
        paths: list[list[str]] = []
        segs = list(prefix)
        while i < len(s):
            if s[i] == "{":
                i += 1
                while True:
                    sub, i = parse(s, i, segs)
                    paths.extend(sub)
                    if i < len(s) and s[i] == ",":
                        i += 1
                        if i < len(s) and s[i] == "}":
                            i += 1
                            return paths, i
                        continue
                    if i < len(s) and s[i] == "}":
                        i += 1
                    return paths, i
            m = re.match(r"(::)?(" + IDENT + r"|\*)", s[i:])
            if not m:
                break
            name = m.group(2)
            i += len(m.group(0))
            if name == "*":
                paths.append(list(segs))
                return paths, i
            if name == "self" and segs:
                paths.append(list(segs))
                return paths, i
            segs.append(name)
            m = re.match(r"as" + IDENT, s[i:]) if s.startswith("as", i) else None
            if s.startswith("as", i) and not s.startswith("as::", i):
                m = re.match(r"as(" + IDENT + ")", s[i:])
                i += len(m.group(0)) if m else 0
                paths.append(list(segs))
                return paths, i
            if i < len(s) and s[i] in ",}":
                paths.append(list(segs))
                return paths, i
            if s.startswith("::{", i):
                i += 2
                continue
        if segs != list(prefix):
            paths.append(segs)
        return paths, i

    paths, _ = parse(tree, 0, [])
    return paths


class Crate:
    def __init__(self, root: Path):
        self.root = root
        self.src = root / "src"
        self.files: dict[tuple[str, ...], Path] = {}
        for file in sorted(self.src.rglob("*.rs")):
            if file.name == "main.rs" and (self.src / "lib.rs").exists() and file.parent == self.src:
                continue  # the binary is a crate of its own, reading the library by name
            if file.parent.name == "bin" and file.parent.parent == self.src:
                continue
            self.files.setdefault(module_of(self.src, file), file)
        self.children: dict[tuple[str, ...], set[str]] = {}
        for module in self.files:
            if module:
                self.children.setdefault(module[:-1], set()).add(module[-1])

    def resolve(self, here: tuple[str, ...], path: list[str]) -> tuple[str, ...] | None:
        """The deepest module file `path` (as written in `here`) reaches."""
        if not path:
            return None
        head, rest = path[0], path[1:]
        if head == "crate":
            base: tuple[str, ...] = ()
        elif head == "self":
            base = here
        elif head == "super":
            base = here[:-1]
            while rest and rest[0] == "super":
                base, rest = base[:-1], rest[1:]
        elif head in self.children.get(here, set()):
            base, rest = here + (head,), rest
        else:
            return None  # another crate, or the standard library
        module = base
        for seg in rest:
            if module + (seg,) in self.files:
                module = module + (seg,)
            else:
                break
        return module if module in self.files else None

    def edges(self) -> dict[tuple[str, ...], dict[tuple[str, ...], list[str]]]:
        """module -> imported module -> the lines that import it."""
        graph: dict[tuple[str, ...], dict[tuple[str, ...], list[str]]] = {}
        for module, file in self.files.items():
            text = strip_comments_and_strings(file.read_text(encoding="utf-8"))
            found: list[tuple[int, list[str]]] = []
            for m in re.finditer(r"\buse\s+([^;]*);", text):
                line = text.count("\n", 0, m.start()) + 1
                for path in expand_use_tree(m.group(1)):
                    found.append((line, path))
            for m in re.finditer(r"(?<![\w:])((?:crate|super|self)(?:::" + IDENT + r")+)", text):
                if re.search(r"\buse\s+[^;]*$", text[: m.start()][-400:]):
                    continue  # inside a use tree, read above
                line = text.count("\n", 0, m.start()) + 1
                found.append((line, m.group(1).split("::")))
            rel = file.relative_to(self.root)
            for line, path in found:
                target = self.resolve(module, path)
                if target is None or target == module or module[: len(target)] == target:
                    continue  # nothing local, itself, or an ancestor
                graph.setdefault(module, {}).setdefault(target, []).append(
                    f"{rel}:{line}: {'::'.join(path)}"
                )
        return graph

    def cycles(self) -> list[list[tuple[str, ...]]]:
        """One cycle per strongly connected component of the import graph."""
        graph = self.edges()
        index: dict[tuple[str, ...], int] = {}
        low: dict[tuple[str, ...], int] = {}
        stack: list[tuple[str, ...]] = []
        on_stack: set[tuple[str, ...]] = set()
        components: list[list[tuple[str, ...]]] = []

        def strongconnect(v: tuple[str, ...]) -> None:
            index[v] = low[v] = len(index)
            stack.append(v)
            on_stack.add(v)
            for w in sorted(graph.get(v, {})):
                if w not in index:
                    strongconnect(w)
                    low[v] = min(low[v], low[w])
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == v:
                        break
                if len(component) > 1:
                    components.append(sorted(component))

        sys.setrecursionlimit(10000)
        for v in sorted(self.files):
            if v not in index:
                strongconnect(v)
        self.graph = graph
        self.components = components
        return [self.shortest_cycle(c) for c in components]

    def shortest_cycle(self, component: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
        members = set(component)
        best: list[tuple[str, ...]] | None = None
        for start in component:
            # Breadth-first from start back to start, inside the component.
            parents: dict[tuple[str, ...], tuple[str, ...]] = {}
            frontier = [start]
            found = None
            while frontier and found is None:
                nxt = []
                for v in frontier:
                    for w in sorted(self.graph.get(v, {})):
                        if w not in members:
                            continue
                        if w == start:
                            found = v
                            break
                        if w not in parents:
                            parents[w] = v
                            nxt.append(w)
                    if found is not None:
                        break
                frontier = nxt
            if found is None:
                continue
            path = [found]
            while path[-1] != start:
                path.append(parents[path[-1]])
            path.reverse()
            if best is None or len(path) < len(best):
                best = path
        return best or component

    def name(self, module: tuple[str, ...]) -> str:
        return str(self.files[module].relative_to(self.root))


def crates(roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        for manifest in sorted(root.rglob("Cargo.toml")):
            if "target" in manifest.parts:
                continue
            src = manifest.parent / "src"
            if (src / "lib.rs").exists() or (src / "main.rs").exists():
                found.append(manifest.parent)
    return found


def self_test() -> int:
    """Runs the check on a made-up crate: a sibling cycle (through a use
    tree and through a qualified path) must be found, a child importing its
    parent must not."""
    import tempfile

    files = {
        "Cargo.toml": "[package]\nname = \"t\"\n",
        "src/lib.rs": "mod a;\nmod b;\nmod c;\nmod e;\nmod f;\n",
        "src/a.rs": "use crate::{b::{self as bee, B}, c};\npub struct A;\n",
        "src/b.rs": "// use crate::a::A; (a comment)\npub fn b() { let _ = crate::a::A; }\npub struct B;\n",
        "src/c/mod.rs": "mod d;\nuse d::D;\npub struct C;\n",
        "src/c/d.rs": "use super::C;\npub struct D;\n",
        "src/e.rs": "use super::f::F;\npub struct E;\n",
        "src/f.rs": "const S: &str = \"crate::e::E\";\npub struct F;\n",
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "t"
        for name, text in files.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text(text)
        crate = Crate(root)
        found = [[crate.name(m) for m in cycle] for cycle in crate.cycles()]
    if found != [["src/a.rs", "src/b.rs"]]:
        print(f"check-import-cycles self-test FAILED: found {found}", file=sys.stderr)
        return 1
    print("check-import-cycles self-test: ok")
    return 0


def main(argv: list[str]) -> int:
    if argv[1:] == ["--self-test"]:
        return self_test()
    workspace = Path(__file__).resolve().parent.parent
    roots = [Path(a) for a in argv[1:]] or [workspace / "crates", workspace / "apps"]
    for root in roots:
        if not root.is_dir():
            print(f"check-import-cycles: no such directory: {root}", file=sys.stderr)
            return 2
    failed = 0
    checked = 0
    for root in crates(roots):
        crate = Crate(root)
        checked += 1
        for cycle, component in zip(crate.cycles(), crate.components):
            failed += 1
            loop = cycle + [cycle[0]]
            print(f"import cycle in {root.parent.name}/{root.name}: " + " -> ".join(crate.name(m) for m in loop))
            if len(component) > len(cycle):
                print(f"  (one of the cycles among: {', '.join(crate.name(m) for m in component)})")
            for a, b in zip(loop, loop[1:]):
                for where in crate.graph[a][b][:3]:
                    print(f"    {where}")
    if failed:
        print(f"check-import-cycles: {failed} import cycle(s) in {checked} crates: FAILED", file=sys.stderr)
        return 1
    print(f"check-import-cycles: no import cycles in {checked} crates")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
