"""The layout is part of the design: imports point one way, down the flow, with no cycle.

Read from the source (every `import`, also inside functions and under
TYPE_CHECKING), so a new upward import fails here with the line that made it.
"""

from __future__ import annotations

import ast
from pathlib import Path

PIPELINE = Path(__file__).resolve().parents[1] / "pipeline"

# Lower layers never import higher ones. Views sit under run: the runner drives the
# progress panel and prints the summary; views only read the ledger and the tally.
LAYERS = ["vocabulary", "config", "manifest", "ledger", "gateway", "views", "run", "top"]
VOCABULARY = {"pipeline.task", "pipeline.errors"}
TOP = {"pipeline.cli", "pipeline.api", "pipeline.__main__", "pipeline"}
# The product may import the simulator only to start it.
STARTS_SIMULATOR = {"pipeline.run.runner", "pipeline.cli", "pipeline.api"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PIPELINE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    if module in VOCABULARY:
        return "vocabulary"
    if module in TOP:
        return "top"
    return module.split(".")[1]


def imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("pipeline")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "pipeline":  # from pipeline import x: x is a module
                found += [(node.lineno, f"pipeline.{a.name}") for a in node.names]
            elif node.module.startswith("pipeline"):
                found.append((node.lineno, node.module))
    return found


def graph() -> dict[str, list[tuple[int, str]]]:
    return {module_name(p): imports(p) for p in PIPELINE.rglob("*.py")}


def test_imports_point_down_the_flow() -> None:
    wrong = []
    for module, targets in graph().items():
        for line, target in targets:
            here, there = layer(module), layer(target)
            if there == "simulator" and here != "simulator":
                if module not in STARTS_SIMULATOR:
                    wrong.append(f"{module}:{line} imports {target} (only to start it)")
            elif here == "simulator":
                if there not in ("simulator", "vocabulary"):
                    wrong.append(f"{module}:{line} imports {target} (simulator stands apart)")
            elif LAYERS.index(there) > LAYERS.index(here):
                wrong.append(f"{module}:{line} imports {target}, a layer above ({there})")
    assert wrong == []


def test_no_import_cycles() -> None:
    edges = {m: {t for _, t in ts} for m, ts in graph().items()}
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(node: str, path: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if nxt not in edges or nxt == node:
                continue
            if state.get(nxt) == 1:
                return [*path, node, nxt]
            if state.get(nxt) is None and (cycle := visit(nxt, [*path, node])):
                return cycle
        state[node] = 2
        return None

    for start in sorted(edges):
        if state.get(start) is None:
            assert visit(start, []) is None


def test_the_top_stays_small_and_modules_short() -> None:
    top = sorted(p.name for p in PIPELINE.glob("*.py"))
    assert len(top) <= 6, top
    long = {module_name(p): n for p in PIPELINE.rglob("*.py")
            if (n := len(p.read_text("utf-8").splitlines())) > 400}
    assert long == {}


def test_every_subpackage_says_what_it_owns_and_must_never_do() -> None:
    for init in PIPELINE.rglob("__init__.py"):
        if init.parent == PIPELINE:
            continue
        doc = ast.get_docstring(ast.parse(init.read_text("utf-8"))) or ""
        assert "Owns" in doc and "Never" in doc, init
