"""The package's shape: stage folders whose imports flow one way, no import cycles, functions and modules of a size
one can read. (The limits the code is reviewed against, checked on every run so they hold without anyone looking.)"""

import ast
import functools
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
PACKAGE = TESTS.parent / "lits"
# A module may import from its own stage and the stages before it: training validates with the predictor and the
# metrics that evaluate.py uses, so train comes last.
STAGES = ("core", "data", "infer", "evaluate", "train")
MAX_FUNCTION_LINES = 80
MAX_MODULE_LINES = 400


# the runnable folders beside the package: user commands, benchmarks, studies (each imports lits as a package)
TOOLS = ("scripts", "benchmarks", "studies")


def parse_folder(folder: Path) -> dict[str, ast.Module]:
    out = {}
    for path in sorted(folder.rglob("*.py")):
        name = ".".join(path.relative_to(folder.parent).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(path.read_text(), str(path))
        out[name].line_count = len(path.read_text().splitlines())
    return out


@functools.cache
def modules() -> dict[str, ast.Module]:
    return parse_folder(PACKAGE)


@functools.cache
def tool_modules() -> dict[str, ast.Module]:
    out = {}
    for folder in TOOLS:
        out.update(parse_folder(PACKAGE.parent / folder))
    return out


def lits_imports(name: str, tree: ast.Module) -> set[str]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("lits"):
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("lits"))
    return found


def stage(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else None


def test_every_module_lives_in_a_stage_folder():
    loose = [m for m in modules() if m != "lits" and stage(m) is None]
    assert not loose, f"modules outside the stage folders {STAGES}: {loose}"


def test_imports_flow_from_earlier_stages_only():
    wrong = []
    for name, tree in modules().items():
        for target in lits_imports(name, tree):
            if stage(name) is not None and stage(target) is not None and stage(target) > stage(name):
                wrong.append(f"{name} imports {target}")
    assert not wrong, wrong


def test_no_import_cycles():
    mods = modules()
    graph = {}
    for name, tree in mods.items():
        graph[name] = {t for t in lits_imports(name, tree) if t in mods and t != name and not name.startswith(t + ".")}
    state, cycle = {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycle.extend(path[path.index(nxt) :] + [node, nxt] if nxt in path else [node, nxt])
                return True
            if nxt not in state and visit(nxt, path + [node]):
                return True
        state[node] = "done"
        return False

    assert not any(visit(n, []) for n in sorted(graph) if n not in state), f"import cycle: {' -> '.join(cycle)}"


@pytest.mark.parametrize("name", sorted(modules()) + sorted(tool_modules()))
def test_functions_and_modules_stay_readable(name):
    tree = {**modules(), **tool_modules()}[name]
    lines = tree.line_count
    assert lines <= MAX_MODULE_LINES, f"{name}: {lines} lines (limit {MAX_MODULE_LINES})"
    long = [
        f"{node.name} {node.end_lineno - node.lineno + 1}"
        for node in ast.walk(tree)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
    ]
    assert not long, f"{name}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def imported_names(tree: ast.Module) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def test_the_package_never_imports_the_tools_beside_it():
    wrong = [f"{m} imports {n}" for m, t in modules().items() for n in imported_names(t) if n.split(".")[0] in TOOLS]
    assert not wrong, wrong


def test_tools_import_packages_not_paths():
    """scripts/, benchmarks/ and studies/ reach lits and each other as packages (`python -m benchmarks ...` from the
    checkout): no sys.path edits, no relative imports, no import of a script as a loose module."""
    tools = tool_modules()
    loose = {name.rsplit(".", 1)[-1] for name in tools if "." in name} - {"__main__"} - set(TOOLS)
    wrong = []
    for name, tree in tools.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "sys":
                wrong += [f"{name} edits sys.path"] if node.attr == "path" else []
        wrong += [f"{name} imports {n}" for n in imported_names(tree) if n.startswith(".") or n in loose]
    assert not wrong, wrong


def test_no_import_cycles_among_the_tools():
    tools = tool_modules()
    graph = {name: {n for n in imported_names(tree) if n in tools and n != name} for name, tree in tools.items()}
    both_ways = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if a in graph[b]})
    assert not both_ways, both_ways


def test_test_modules_share_helpers_through_conftest_only():
    """A helper two test modules need lives in conftest.py: a test module importing another would also import (and
    let pytest collect twice) that module's fixtures and state."""
    offenders = []
    for path in sorted(TESTS.rglob("test_*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            names += [a.name for a in node.names] if isinstance(node, ast.Import) else []
            offenders += [f"{path.name} imports {n}" for n in names if n.startswith("test_")]
    assert not offenders, offenders


TEST_STAGES = ("core", "data", "infer", "evaluate", "train", "e2e")  # the package's stages, and end-to-end runs


def test_tests_live_in_stage_folders():
    """tests/<stage>/test_*.py, as the package's stages (e2e: runs through every stage); tests/ holds only the
    shared toolbox (conftest.py) and the fixtures."""
    loose = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert not loose, f"test modules outside the stage folders {TEST_STAGES}: {loose}"
    folders = sorted(p.parent.name for p in TESTS.glob("*/test_*.py"))
    assert set(folders) == set(TEST_STAGES), sorted(set(folders))
