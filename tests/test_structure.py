"""The package's shape: no import cycles, small engine modules, a core that does no I/O.

Read from the source with `ast`, so that an import inside a function or under
`if TYPE_CHECKING:` is seen as well as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "fastapi_breaker"
ENGINE = (
    "_async_calls",
    "_attempt",
    "_base",
    "_breaker",
    "_buckets",
    "_clock",
    "_core",
    "_deadlines",
    "_errors",
    "_events",
    "_fleet",
    "_histogram",
    "_logs",
    "_metrics",
    "_names",
    "_options",
    "_outcome",
    "_redis_script",
    "_redis_url",
    "_registry",
    "_snapshot",
    "_state",
    "_stats",
    "_sync_calls",
    "_tickets",
    "_transitions",
    "_window",
)
# Annotation-only names allowed to point back up the layers: `Event.breaker`,
# `Attempt.breaker`, a snapshot's core and the breakers a `Coordinator` is handed are typed with
# the classes users hold, which import these modules. Nothing of them runs at import: these are
# the only back references.
TYPE_ONLY_BACK_REFERENCES = {
    ("_events", "_breaker"),
    ("_attempt", "_breaker"),
    ("_attempt", "_async_calls"),
    ("_snapshot", "_core"),
    ("_fleet", "_breaker"),
    ("_logs", "_base"),
    ("_metrics", "_base"),
}


def modules() -> dict[str, Path]:
    found = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    found["__init__"] = PACKAGE / "__init__.py"
    return found


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(modules of this package imported at run time, imported for type checking only)."""
    tree = ast.parse(path.read_text())
    type_only_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            type_only_nodes.update(id(child) for child in ast.walk(node))
    runtime: set[str] = set()
    type_only: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                names = [node.module.split(".")[0]]
            elif node.level == 1:
                names = [alias.name for alias in node.names]
            elif node.module and node.module.startswith("fastapi_breaker."):
                names = [node.module.split(".")[1]]
        elif isinstance(node, ast.Import):
            names = [
                alias.name.split(".")[1]
                for alias in node.names
                if alias.name.startswith("fastapi_breaker.")
            ]
        target = type_only if id(node) in type_only_nodes else runtime
        target.update(names)
    return runtime, type_only


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of `graph` as a path that starts and ends at the same module, or None."""
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        for child in sorted(graph.get(node, ())):
            cycle = visit(child, [*path, node])
            if cycle:
                return cycle
        done.add(node)
        return None

    for start in sorted(graph):
        cycle = visit(start, [])
        if cycle:
            return cycle
    return None


def test_the_package_imports_no_module_in_a_cycle_at_run_time() -> None:
    graph = {name: imports(path)[0] for name, path in modules().items()}
    assert find_cycle(graph) is None


def test_type_only_imports_close_no_cycle_but_the_listed_annotations() -> None:
    graph: dict[str, set[str]] = {}
    back_references: set[tuple[str, str]] = set()
    for name, path in modules().items():
        runtime, type_only = imports(path)
        graph[name] = set(runtime)
        for target in type_only:
            if (name, target) in TYPE_ONLY_BACK_REFERENCES:
                back_references.add((name, target))
            else:
                graph[name].add(target)
    assert find_cycle(graph) is None
    assert back_references == TYPE_ONLY_BACK_REFERENCES  # none listed that is not used


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_every_engine_module_is_listed() -> None:
    integrations = {"fastapi", "health", "httpx", "middleware", "redis", "settings", "testing"}
    integrations |= {"prometheus", "otel", "dashboard", "grpc"}
    integrations.add("__init__")
    assert set(modules()) - integrations == set(ENGINE)


@pytest.mark.parametrize(
    "name", ["_core", "_transitions", "_tickets", "_window", "_buckets", "_histogram"]
)
def test_the_core_does_no_io_reads_no_clock_and_knows_no_asyncio(name: str) -> None:
    tree = ast.parse((PACKAGE / f"{name}.py").read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
    forbidden = {"asyncio", "time", "socket", "logging", "os", "io", "concurrent", "selectors"}
    assert imported & forbidden == set()
    # Nor does it reach a clock another way: every time it uses is an argument.
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
    names |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert (
        names & {"monotonic", "perf_counter", "clock", "time", "sleep", "get_running_loop"} == set()
    )
