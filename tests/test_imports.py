"""The import graph: the library never imports its shells (components/, pipelines/), and there is no cycle."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.helpers.params import ROOT

PACKAGES = ("geogan", "components", "pipelines")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The project modules a file imports, anywhere in it (lazy imports inside functions count too;
    `if TYPE_CHECKING:` blocks do not, as they never run)."""
    name, found = _module_name(path), set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    typing_only = {id(n) for block in ast.walk(tree)
                   if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, *filter(None, [base])])
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `from geogan.x import func` -> geogan.x
                target = target.rpartition(".")[0]
            # A module's own parent packages are imported before it anyway: that edge is no dependency.
            if target and target != name and not name.startswith(target + "."):
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    files = [p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")]
    modules = {_module_name(p) for p in files}
    return {_module_name(p): _imports(p, modules) for p in files}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path a -> ... -> a), or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt] if nxt in path else [node, nxt]
            if nxt not in state and (found := visit(nxt, [*path, nxt])):
                return found
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return None


def test_the_library_imports_none_of_its_shells():
    graph = _graph()
    bad = {m: sorted(t for t in targets if t.split(".")[0] in {"components", "pipelines"})
           for m, targets in graph.items() if m.split(".")[0] == "geogan"}
    assert not {m: t for m, t in bad.items() if t}, "geogan/ must not import components/ or pipelines/"


def test_components_never_import_pipelines():
    graph = _graph()
    assert not {m for m, t in graph.items() if m.startswith("components") and any(x.startswith("pipelines") for x in t)}


def test_there_is_no_import_cycle():
    graph = _graph()
    assert len(graph) > 50 and graph["pipelines.geogan_pipeline"] >= {"components.stages", "components.settings"}
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
