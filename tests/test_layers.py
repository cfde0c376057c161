"""Imports point down the layers of ARCHITECTURE.md, and no two packages import each other.

Every ``import`` / ``from ... import`` in ``src/affectlab`` is read with :mod:`ast`
(module level, inside functions and under ``TYPE_CHECKING`` alike: a lazy import is still
a dependency). An import from a package to one in a higher layer fails, and so does a
cycle in the package graph (packages of one layer may use each other one way only).
A module in no layer fails too, so a new package gets its place on purpose.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "affectlab"

#: Top to bottom; a package may import its own layer (without cycles) and every layer below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli", "__main__", "demo"),
    ("analyze",),
    ("interpret", "evaluate", "train"),
    ("runtime",),
    ("perception",),
    ("methods",),
    ("features",),
    ("losses", "metrics", "temporal"),
    ("data",),
    # leaves: exceptions, the model-file format (safe loading), the asset hub (perception fetches
    # its weights there), packaged presets and weights
    ("errors", "modelfile", "runtime.assets", "presets", "models", "__version__"),
)
LEVEL = {name: i for i, names in enumerate(LAYERS) for name in names}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    """The layer unit of ``affectlab.X.Y``: ``X.Y`` when LAYERS places that module, else ``X``."""
    parts = module.split(".")
    if len(parts) > 2 and ".".join(parts[1:3]) in LEVEL:
        return ".".join(parts[1:3])
    return parts[1] if len(parts) > 1 else ""


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported affectlab module) for every import statement of a file."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == "affectlab":
                # `from affectlab import losses` imports a module; `__version__` is the leaf constant
                for alias in node.names:
                    sub = SRC / alias.name
                    is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                    found.append((node.lineno, f"affectlab.{alias.name}" if is_module else "affectlab.__version__"))
            else:
                found.append((node.lineno, target))
    return [(line, t) for line, t in found if t == "affectlab" or t.startswith("affectlab.")]


def _graph():
    edges: dict[str, set[str]] = defaultdict(set)
    where: dict[tuple[str, str], str] = {}
    unknown, upward = [], []
    for path in sorted(SRC.rglob("*.py")):
        if path == SRC / "__init__.py":
            continue  # the public facade: lazy re-exports of every layer
        source = _unit(_module_name(path))
        if source not in LEVEL:
            unknown.append(str(path.relative_to(SRC)))
            continue
        for line, target in _imports(path):
            dest = _unit(target)
            if target == "affectlab":
                dest = "cli"  # importing the facade from inside is importing the top
            if dest == source:
                continue
            if dest not in LEVEL:
                unknown.append(f"{target} (imported at {path.relative_to(SRC)}:{line})")
                continue
            here = f"{path.relative_to(SRC.parent)}:{line} imports {target}"
            edges[source].add(dest)
            where.setdefault((source, dest), here)
            if LEVEL[dest] < LEVEL[source]:
                upward.append(here)
    return edges, where, unknown, upward


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one package (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def test_every_module_has_a_layer():
    _, _, unknown, _ = _graph()
    assert not unknown, "modules in no layer (add them to LAYERS and ARCHITECTURE.md): " + "; ".join(unknown)


def test_no_upward_import():
    _, _, _, upward = _graph()
    assert not upward, f"{len(upward)} upward import(s):\n" + "\n".join(sorted(set(upward)))


def test_no_cycle_between_packages():
    edges, where, _, _ = _graph()
    cycles = _cycles(edges)
    detail = []
    for comp in cycles:
        detail += [where[(a, b)] for a in comp for b in comp if (a, b) in where]
    assert not cycles, f"package cycles {cycles}:\n" + "\n".join(detail)


def test_the_checker_sees_a_planted_violation(tmp_path):
    # the test must be able to fail: a data module importing training, and a two-package cycle
    fake = tmp_path / "affectlab"
    for rel, text in {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/x.py": "def f():\n    from affectlab.train.engine import train\n",
        "train/__init__.py": "",
        "train/engine.py": "from affectlab.evaluate.engine import evaluate\n",
        "evaluate/__init__.py": "",
        "evaluate/engine.py": "from ..train import engine\n",
    }.items():
        (fake / rel).parent.mkdir(parents=True, exist_ok=True)
        (fake / rel).write_text(text)
    global SRC
    saved, SRC = SRC, fake
    try:
        edges, _, unknown, upward = _graph()
        assert not unknown
        assert any("data/x.py:2 imports affectlab.train.engine" in u for u in upward)
        assert _cycles(edges) == [["evaluate", "train"]]
    finally:
        SRC = saved


def test_sources_cite_papers_and_docs_in_the_repo():
    # papers are cited by title / arXiv (ARCHITECTURE.md, Papers), never by a file outside the repo
    import re

    pattern = re.compile(r"\.\./shared|DESIGN\.md|\b00[0-3]_[0-9a-f]{16}\b")
    found = [
        f"{path.relative_to(SRC.parent)}:{i}: {line.strip()}"
        for path in sorted(SRC.rglob("*.py"))
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not found, "\n".join(found)
