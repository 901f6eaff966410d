"""The package's shape: no import circles (top-level or inside functions), the library below experiments and CLI."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "myopia"


def _imports(src: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules of the package ``src`` it imports anywhere (importing a.b.c also runs the package a.b)."""
    mods = {}
    for p in src.rglob("*.py"):
        parts = list(p.relative_to(src.parent).with_suffix("").parts)
        pkg = parts[:-1]
        if parts[-1] == "__init__":
            parts = parts[:-1]
            pkg = parts
        mods[".".join(parts)] = (p, pkg)
    graph = {}
    for name, (p, pkg) in mods.items():
        deps = set()
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, ast.ImportFrom):
                base = ".".join(pkg[: len(pkg) - n.level + 1] + ([n.module] if n.module else [])) if n.level else (
                    n.module or "")
                for a in n.names:
                    target = f"{base}.{a.name}"
                    deps.add(target if target in mods else base)
            elif isinstance(n, ast.Import):
                deps.update(a.name for a in n.names)
        deps = {d for d in deps if d in mods}
        for d in list(deps):
            pieces = d.split(".")
            deps.update(".".join(pieces[:k]) for k in range(2, len(pieces))
                        if not name.startswith(".".join(pieces[:k]) + ".") and name != ".".join(pieces[:k]))
        deps.discard(name)
        graph[name] = deps
    return graph


def test_no_import_circles():
    graph = _imports()
    index, low, stack, on, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    assert cycles == []


def test_the_library_never_imports_experiments_or_the_command_line():
    for name, deps in _imports().items():
        if name.startswith(("myopia.experiments", "myopia.cli")) or name == "myopia.__main__":
            continue
        bad = {d for d in deps if d.startswith(("myopia.experiments", "myopia.cli"))}
        assert not bad, f"{name} imports {sorted(bad)}"
    for name, deps in _imports().items():
        if name.startswith("myopia.experiments"):
            assert not {d for d in deps if d.startswith("myopia.cli")}, name


def _sideways(graph: dict[str, set[str]], pkg: str = "myopia") -> dict[str, set[str]]:
    """Study -> the other studies it imports (top level or inside functions, relative or absolute)."""
    studies = f"{pkg}.experiments."
    return {name: {d for d in deps if d.startswith(studies)} for name, deps in graph.items() if name.startswith(studies)}


def test_no_study_imports_another():
    """Studies are thin wiring of library pieces: what several of them share belongs in the library."""
    for name, sideways in _sideways(_imports()).items():
        assert not sideways, f"{name} imports {sorted(sideways)}"


def test_the_sideways_rule_sees_every_form_of_import(tmp_path):
    """The rule is not vacuous: relative, absolute and in-function imports of a sibling study are all found."""
    pkg = tmp_path / "pkg"
    (pkg / "experiments").mkdir(parents=True)
    for f in ("__init__.py", "lib.py", "experiments/__init__.py", "experiments/b.py", "experiments/c.py",
              "experiments/d.py"):
        (pkg / f).write_text("")
    (pkg / "experiments" / "a.py").write_text(
        "from ..lib import x\nfrom .b import y\nimport pkg.experiments.c\n\ndef f():\n    from . import d\n")
    (pkg / "experiments" / "e.py").write_text("from .. import lib\n")
    found = _sideways(_imports(pkg), "pkg")
    assert found["pkg.experiments.a"] == {"pkg.experiments.b", "pkg.experiments.c", "pkg.experiments.d"}
    assert found["pkg.experiments.e"] == set()


def test_no_function_is_longer_than_a_screen():
    """Every function of the package fits in 80 lines (a longer one is split into named steps)."""
    long = []
    for p in SRC.rglob("*.py"):
        for n in ast.walk(ast.parse(p.read_text())):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.end_lineno - n.lineno + 1 > 80:
                long.append(f"{p.relative_to(SRC)}:{n.lineno} {n.name} ({n.end_lineno - n.lineno + 1} lines)")
    assert long == []
