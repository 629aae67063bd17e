"""The layering of docs/architecture.md, proved from the source rather than trusted.

The import graph is read with ``ast`` — every import, at module level or inside a function or an
``if TYPE_CHECKING`` block, relative ones resolved — so an import hidden in a function still counts.
Three rules: no cycle among modules; no import upward across the layers (core → ports → adapters →
services → cli); and the services' stage packages import one another only along one direction
(``STAGES``), while the shared ``services/*.py`` modules import no stage at all.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Lower rank may be imported by higher rank, never the reverse. The top package's ``__init__`` (its
# version) is not an edge; any other package's ``__init__`` is a module like the rest, so a
# registry that imports its entries while they import it is a cycle.
LAYERS = {
    "errors": 0,
    "core": 1,
    "ports": 2,
    "resources": 2,
    "adapters": 3,
    "services": 4,
    "cli": 5,
    "__main__": 6,
}

# The services' stage packages and the stages each may import; "root" is the shared services/*.py.
STAGES: dict[str, frozenset[str]] = {
    "root": frozenset(),
    "media": frozenset({"root"}),
    "build": frozenset({"root", "media"}),
    "deploy": frozenset({"root", "media"}),
    "evidence": frozenset({"root", "media", "deploy"}),
}


def _modules(package_dir: Path) -> dict[str, Path]:
    base = package_dir.parent
    found = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _targets(module: str, path: Path, node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    where = node.module or ""
    if node.level:
        parts = module.split(".")
        if path.name != "__init__.py":
            parts.pop()  # a module's relative imports start from its package
        parts = parts[: len(parts) - (node.level - 1)]
        where = ".".join([*parts, where] if where else parts)
    return [where] + [f"{where}.{alias.name}" for alias in node.names]


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Each module of the package and the modules of the same package it imports, anywhere in it."""
    modules = _modules(package_dir)
    root = package_dir.name
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for module, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(module, path, node):
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target not in (module, root):
                    graph[module].add(target)
    # ``from pkg import sub`` names both the package and the submodule: keep the submodule only
    for targets in graph.values():
        targets -= {t for t in set(targets) if any(o.startswith(t + ".") for o in targets)}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _layer(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import from a lower layer into a higher one, named."""
    found = []
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            mine, theirs = _layer(module), _layer(target)
            if mine in LAYERS and theirs in LAYERS and LAYERS[theirs] > LAYERS[mine]:
                found.append(f"{module} imports {target} ({mine} may not import {theirs})")
    return found


def _stage(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 3 or parts[1] != "services":
        return None
    return parts[2] if parts[2] in STAGES and parts[2] != "root" else "root"


def stage_edges(graph: dict[str, set[str]]) -> dict[tuple[str, str], list[str]]:
    """Between the services' stages: each (from, to) and the module imports that make it."""
    edges: dict[tuple[str, str], list[str]] = {}
    for module, targets in graph.items():
        for target in targets:
            a, b = _stage(module), _stage(target)
            if a is not None and b is not None and a != b:
                edges.setdefault((a, b), []).append(f"{module} imports {target}")
    return edges


def stage_violations(graph: dict[str, set[str]]) -> list[str]:
    """Stage edges against ``STAGES`` (a shared root module into a stage among them), and cycles of stages."""
    edges = stage_edges(graph)
    found = [
        f"services/{a} may not import services/{b}: " + "; ".join(sorted(why))
        for (a, b), why in sorted(edges.items())
        if b not in STAGES.get(a, frozenset())
    ]
    stage_graph: dict[str, set[str]] = {}
    for a, b in edges:
        stage_graph.setdefault(a, set()).add(b)
    found += [f"the stages {' ↔ '.join(c)} import one another" for c in cycles(stage_graph)]
    return found


def _write(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def _listed(problems: Iterable[str]) -> str:
    return "\n".join(problems)


def test_no_import_cycle_among_airgap_modules() -> None:
    """Function-level imports count: a cycle hidden inside a function is still a cycle."""
    found = cycles(import_graph(ROOT / "airgap"))
    assert not found, "import cycles:\n" + _listed(", ".join(c) for c in found)


def test_no_layer_imports_a_layer_above_it() -> None:
    """core imports no adapters/services/cli; adapters no services/cli; services no cli."""
    found = upward_imports(import_graph(ROOT / "airgap"))
    assert not found, "upward imports:\n" + _listed(found)


def test_services_stages_import_one_another_only_along_the_dag() -> None:
    """build → media, deploy → media, evidence → deploy/media; the shared services/*.py import no stage."""
    found = stage_violations(import_graph(ROOT / "airgap"))
    assert not found, _listed(found)


def test_every_stage_package_is_in_the_dag() -> None:
    """A new stage package must be given its place in the order, or its imports are not checked."""
    stages = {p.name for p in (ROOT / "airgap" / "services").iterdir() if (p / "__init__.py").is_file()}
    assert stages == set(STAGES) - {"root"}


def test_the_checks_report_a_cycle_an_upward_import_and_a_stage_against_the_dag(tmp_path: Path) -> None:
    """The same checks over a small package that breaks each rule once name every break; a cycle
    through a package's ``__init__`` (a registry importing its entries in a function) counts."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/core/__init__.py": "",
            "pkg/core/model.py": "from pkg.cli import main\n",
            "pkg/cli/__init__.py": "",
            "pkg/cli/main.py": "from pkg.core import model\n",
            "pkg/services/__init__.py": "",
            "pkg/services/observer.py": "from pkg.services.build import a\n",
            "pkg/services/build/__init__.py": "",
            "pkg/services/build/a.py": "def f():\n    from . import b\n",
            "pkg/services/build/b.py": "from pkg.services.build.a import f\nfrom ..deploy import d\n",
            "pkg/services/deploy/__init__.py": "",
            "pkg/services/deploy/d.py": "",
            "pkg/services/deploy/e.py": "from pkg.services.build import a\n",
            "pkg/services/media/__init__.py": "",
            "pkg/services/media/m.py": "from pkg.services import observer\n",
            "pkg/services/media/formats/__init__.py": "def _builtin():\n    from . import v1\n",
            "pkg/services/media/formats/v1.py": "from pkg.services.media.formats import register\n",
        },
    )
    graph = import_graph(tmp_path / "pkg")

    assert sorted(cycles(graph)) == [
        ["pkg.cli.main", "pkg.core.model"],
        ["pkg.services.build.a", "pkg.services.build.b"],
        ["pkg.services.media.formats", "pkg.services.media.formats.v1"],  # a registry and its entry
    ]
    assert upward_imports(graph) == ["pkg.core.model imports pkg.cli.main (core may not import cli)"]
    found = stage_violations(graph)
    root_into_stage = "pkg.services.observer imports pkg.services.build.a"
    assert f"services/root may not import services/build: {root_into_stage}" in found
    assert any(f.startswith("services/build may not import services/deploy") for f in found)
    assert any(f.startswith("services/deploy may not import services/build") for f in found)
    assert "the stages build ↔ deploy import one another" in found
    assert not any("media" in f for f in found)  # media → root is allowed
