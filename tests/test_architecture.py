"""The module map holds: imports of proxy/ and plugins/ run only downwards, in no circle, and docs name real modules.

The import graph is read with :mod:`ast` from the files themselves (every ``import`` and ``from ... import``, also
those inside functions), so a late import cannot hide a circle. The layer table below is the one in
docs/architecture.md: a module may import its own layer, or a layer of a lower rank; two layers of one rank (the
faces) never import each other.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "architecture.md"

LAYERS: list[tuple[str, int, str]] = [
    # (layer, rank, path prefix under the repository root)
    ("package", 0, "proxy/__init__.py"),
    ("base", 1, "proxy/base/"),
    ("graph", 2, "proxy/graph/"),
    ("config", 3, "proxy/config.py"),
    ("store", 4, "proxy/store/"),
    ("blocklist", 5, "proxy/blocklist/"),
    ("metrics", 6, "proxy/metrics.py"),
    ("plugins", 6, "plugins/"),
    ("appkeys", 7, "proxy/appkeys.py"),
    ("outbound", 8, "proxy/outbound/"),
    ("inbound", 8, "proxy/inbound/"),
    ("admin", 8, "proxy/admin/"),
    ("ops", 8, "proxy/ops/"),
    ("app", 9, "proxy/app.py"),
    ("run", 9, "proxy/run/"),
    ("cli", 10, "proxy/cli.py"),
]


def layer_of(path: str) -> tuple[str, int]:
    """The layer and rank of a file given by its path from the repository root."""
    for name, rank, prefix in LAYERS:
        if path == prefix or (prefix.endswith("/") and path.startswith(prefix)):
            return name, rank
    raise AssertionError(f"{path} is in no layer of tests/test_architecture.py (add it to LAYERS and the docs)")


def module_files() -> dict[str, str]:
    """Dotted module name (``wa_blocklist.proxy.graph.classify``) → path from the root, for proxy/ and plugins/."""
    found = {}
    for top in ("proxy", "plugins"):
        for file in sorted((ROOT / top).rglob("*.py")):
            rel = file.relative_to(ROOT).as_posix()
            parts = rel[:-3].split("/")
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(["wa_blocklist", *parts])] = rel
    return found


MODULES = module_files()


def imports(path: str) -> list[tuple[str, int]]:
    """Every module of ours that the file imports (resolved to a module that exists), with its line."""
    module = next(m for m, p in MODULES.items() if p == path)
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse((ROOT / path).read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join([*base, *([node.module] if node.module else [])])
            else:
                origin = node.module or ""
            # ``from pkg import module`` imports the module; ``from module import name`` the module itself
            names = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES else origin for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in MODULES:
                name = name.rpartition(".")[0]
            if name and MODULES[name] != path:
                found.append((name, node.lineno))
    return found


GRAPH = {path: imports(path) for path in MODULES.values()}


def test_every_file_has_a_layer() -> None:
    for path in MODULES.values():
        layer_of(path)


def test_imports_point_only_downwards() -> None:
    upward = []
    for path, targets in GRAPH.items():
        layer, rank = layer_of(path)
        for target, line in targets:
            other, other_rank = layer_of(MODULES[target])
            if other != layer and other_rank >= rank:
                upward.append(f"{path}:{line} ({layer}, rank {rank}) imports {target} ({other}, rank {other_rank})")
    assert upward == []


def test_no_import_circle() -> None:
    # Tarjan's strongly connected components over the file graph
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target, _ in GRAPH[node]:
            child = MODULES[target]
            if child not in index:
                visit(child)
                low[node] = min(low[node], low[child])
            elif child in stack:
                low[node] = min(low[node], index[child])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for path in GRAPH:
        if path not in index:
            visit(path)
    assert circles == []


def test_no_bare_top_level_names() -> None:
    """Code imports ``wa_blocklist.proxy`` / ``wa_blocklist.plugins``, never the repository's bare folder names."""
    bare = []
    for path in MODULES.values():
        tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
                # importlib.import_module("proxy...") / resources.files("proxy")
                func = node.func
                called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                if called in {"import_module", "files"} and isinstance(node.args[0].value, str):
                    names = [node.args[0].value]
            bare += [f"{path}:{node.lineno}: {n}" for n in names if n.split(".")[0] in {"proxy", "plugins"}]
    assert bare == []


def test_the_layer_table_is_the_documented_one() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name, rank, prefix in LAYERS:
        row = re.compile(rf"^\|\s*{rank}\s*\|\s*`?{re.escape(name)}`?\s*\|\s*`{re.escape(prefix)}`", re.MULTILINE)
        assert row.search(text), f"docs/architecture.md has no layer row | {rank} | {name} | `{prefix}` ..."


@pytest.mark.parametrize("page", [DOC, ROOT / "README.md"], ids=lambda p: p.name)
def test_every_module_named_in_the_docs_exists(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    # the "Before and after" section names the modules as they were before issue 18, on purpose
    text = re.sub(r"^### Before and after.*?(?=^## )", "", text, flags=re.MULTILINE | re.DOTALL)
    paths = set(re.findall(r"(?<![\w/.])((?:proxy|plugins)/[\w/]*\.(?:py|yaml))\b", text))
    dotted = set(re.findall(r"\bwa_blocklist\.(?:proxy|plugins)(?:\.\w+)+", text))
    assert paths or page.name != "architecture.md"
    missing = [p for p in sorted(paths) if not (ROOT / p).is_file()]
    missing += [d for d in sorted(dotted) if d not in MODULES and d.rpartition(".")[0] not in MODULES]
    assert missing == []
