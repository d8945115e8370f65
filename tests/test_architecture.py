"""The package's shape (docs/architecture.md), read from the source with `ast`: imports between packages point one
way (no cycles), the worker's folder (what the wall ships) imports nothing of the host side, pairs/ nothing of
stage 0, and the program templates are real Python files."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "scraper"
# What the worker may import: its own folder and the shared modules at the top of the package.
SHARED = {"scraper", "scraper.accuracy", "scraper.fileio", "scraper.kernelbench", "scraper.phases",
          "scraper.records", "scraper.repos", "scraper.suiterun", "scraper.suites", "scraper.sandbox.inside"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py") if "__pycache__" not in path.parts}


def imports(path: Path, known: dict[str, Path]) -> set[str]:
    """The scraper modules one file imports (at any depth of the file: imports inside functions count)."""
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name.startswith("scraper") and name != module_name(path):
                found.add(name)
    return found


def package_of(name: str) -> str:
    """scraper.x for every module below scraper/x/, scraper for the top-level modules."""
    parts = name.split(".")
    return ".".join(parts[:2]) if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else "scraper"


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, known) for name, path in known.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan, iterative)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter[0]
        counter[0] += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_and_no_package_imports_itself_in_a_circle(graph):
    assert cycles(graph) == []
    packages: dict[str, set[str]] = defaultdict(set)
    for name, targets in graph.items():
        for target in targets:
            if package_of(name) != package_of(target) and package_of(name) != "scraper":
                packages[package_of(name)].add(package_of(target))
    assert cycles(packages) == []


def test_the_worker_folder_imports_nothing_of_the_host_side(graph):
    worker = {name: targets for name, targets in graph.items() if name.startswith("scraper.worker")}
    assert len(worker) >= 10
    for name, targets in worker.items():
        foreign = {t for t in targets if not t.startswith("scraper.worker") and package_of(t) not in SHARED
                   and t not in SHARED}
        assert not foreign, f"{name} imports {sorted(foreign)}"


def test_pairs_and_modules_discovery_import_nothing_of_stage_0(graph):
    for prefix in ("scraper.pairs", "scraper.modules"):
        for name, targets in graph.items():
            if name.startswith(prefix):
                stage0 = {t for t in targets if t.startswith("scraper.suite.") or t == "scraper.suite"}
                assert not stage0, f"{name} imports {sorted(stage0)}"
    assert not any(t.startswith("scraper.worker") for name, targets in graph.items()
                   if name.startswith("scraper.pairs") for t in targets)


def test_the_wall_ships_the_worker_folder_whole():
    from scraper.sandbox.wall import imported_closure
    from scraper.suite.confined import SUITE_WALL

    shipped = set(imported_closure(SUITE_WALL.modules))
    folder = {p.relative_to(PACKAGE.parent).as_posix() for p in (PACKAGE / "worker").rglob("*.py")
              if "__pycache__" not in p.parts}
    assert folder <= shipped and "scraper/worker/templates/timm.py" in shipped
    assert not [f for f in shipped if f.startswith(("scraper/suite/", "scraper/modules/", "scraper/inductor/"))]


@pytest.mark.parametrize("template", ["timm", "huggingface", "torchbench"])
def test_program_templates_are_real_programs(template):
    from scraper.worker import programs

    path = PACKAGE / "worker" / "templates" / f"{template}.py"
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert any(isinstance(node, ast.FunctionDef) and node.name == "build" for node in tree.body)
    compile(path.read_text(encoding="utf-8"), str(path), "exec")
    rendered = {"timm": lambda: programs.timm_program("m", 2, "bfloat16", True),
                "huggingface": lambda: programs.huggingface_program("m", 2, "bfloat16", True, 16, 1),
                "torchbench": lambda: programs.torchbench_program("m", 2, "bfloat16", True, "/ck")}[template]()
    assert "MODEL = 'm'" in rendered and "DTYPE = torch.bfloat16" in rendered and "# --- " not in rendered
    compile(rendered, "rendered", "exec")


def test_renamed_modules_keep_their_old_import_paths():
    """Renamed for reading (issue #27): the old path is the same module object, so what callers set on it holds."""
    import scraper.suite.lists as old_lists
    import scraper.suite.model_lists as model_lists
    import scraper.validate.confine as confine
    import scraper.validate.sandbox as old_sandbox

    assert old_lists is model_lists and old_sandbox is confine
    from scraper.suite.lists import ModelSpec
    from scraper.validate.sandbox import run_confined
    assert ModelSpec is model_lists.ModelSpec and run_confined is confine.run_confined
