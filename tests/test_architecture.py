"""The layers of docs/architecture.md, enforced: imports go downward only (however hidden in a
function), nothing but `__main__` imports the CLI, below the CLI nothing prints, exits (`os._exit`
included), reads argv, stdin or the environment, runs the CLI, or unpickles, and nothing uses Click's
private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "bonuscli"

# rank of each module: a module may import only modules of a strictly lower rank
# (the rules package is one layer; inside it, RULES_ORDER)
LAYERS = {
    "bonuscli": 6,  # the package: the Python API (bonuscli.api), imported when first used
    "bonuscli.version": 0,
    "bonuscli.model": 0,
    "bonuscli.paths": 1,
    "bonuscli.render": 1,
    "bonuscli.channels": 1,
    "bonuscli.requests": 1,
    "bonuscli.workers": 1,
    "bonuscli.signing": 1,
    "bonuscli.catalog": 2,
    "bonuscli.rules": 1,
    "bonuscli.ledger": 2,
    "bonuscli.commands": 2,
    "bonuscli.service": 3,
    "bonuscli.batch": 4,
    "bonuscli.fleet": 4,
    "bonuscli.simulate": 4,
    "bonuscli.scenario": 4,
    "bonuscli.audit": 5,
    "bonuscli.diff": 5,
    "bonuscli.export": 5,
    "bonuscli.api": 5,
    "bonuscli.dask_engine": 6,
    "bonuscli.cli": 7,
    "bonuscli.__main__": 8,
}
RULES_ORDER = ["dates", "links", "member", "replay", "status", "decide", "views", "__init__"]


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] if parts[:-1] != ["bonuscli"] else parts[:-1]
    return ".".join(parts)


def modules() -> dict:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def imports_of(path: Path, name: str) -> set:
    """Every bonuscli module this file imports, anywhere in it (functions included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("bonuscli"))
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                mod = ".".join(base + ([mod] if mod else []))
            if not mod.startswith("bonuscli"):
                continue
            for a in node.names:
                full = f"{mod}.{a.name}"
                out.add(full if full in modules() else mod)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("bonuscli"):
                    out.add(arg.value)
        elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "_Lazy":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and str(arg.value).startswith("bonuscli"):
                    out.add(arg.value)
    out.discard(name)
    return out


def graph() -> dict:
    mods = modules()
    return {name: {i for i in imports_of(path, name) if i in mods} for name, path in mods.items()}


def layer(name: str):
    if name.startswith("bonuscli.rules.") or name == "bonuscli.rules":
        return LAYERS["bonuscli.rules"]
    return LAYERS.get(name)


def test_every_module_has_a_layer():
    missing = [m for m in modules() if layer(m) is None]
    assert not missing, f"add these modules to LAYERS (and to docs/architecture.md): {missing}"


def test_imports_go_downward_only():
    bad = []
    for name, deps in graph().items():
        for dep in deps:
            if name.startswith("bonuscli.rules") and dep.startswith("bonuscli.rules"):
                a = RULES_ORDER.index(name.rpartition(".")[2] if name != "bonuscli.rules" else "__init__")
                b = RULES_ORDER.index(dep.rpartition(".")[2] if dep != "bonuscli.rules" else "__init__")
                if b >= a:
                    bad.append(f"{name} -> {dep} (rules modules import only those before them)")
            elif layer(dep) >= layer(name) and dep != "bonuscli":
                bad.append(f"{name} (layer {layer(name)}) -> {dep} (layer {layer(dep)})")
    assert not bad, "upward or sideways imports:\n" + "\n".join(sorted(bad))


def test_the_import_graph_has_no_cycle():
    g = graph()
    state: dict = {}
    cycle: list = []

    def visit(n, stack):
        state[n] = 1
        for d in sorted(g.get(n, ())):
            if state.get(d) == 1:
                cycle.extend(stack[stack.index(d):] + [d] if d in stack else [n, d])
                return True
            if state.get(d) is None and visit(d, stack + [d]):
                return True
        state[n] = 2
        return False

    for n in sorted(g):
        if state.get(n) is None and visit(n, [n]):
            break
    assert not cycle, " -> ".join(cycle)


def test_only_main_imports_the_cli():
    importers = [n for n, deps in graph().items() if "bonuscli.cli" in deps]
    assert importers == ["bonuscli.__main__"]


def test_the_rules_are_pure():
    for name, deps in graph().items():
        if name.startswith("bonuscli.rules"):
            assert deps <= {"bonuscli.model"} | {d for d in deps if d.startswith("bonuscli.rules")}, (name, deps)
            text = modules()[name].read_text(encoding="utf-8")
            for word in ("open(", "os.environ", "datetime.now", "dt.datetime.now", "time.time", "import os"):
                assert word not in text, f"{name}: rules read no files, clock or environment ({word})"


def test_rules_modules_stay_small():
    for name, path in modules().items():
        if name.startswith("bonuscli.rules"):
            n = len(path.read_text(encoding="utf-8").splitlines())
            assert n < 600, f"{name} has {n} lines; split it along a seam"


FORBIDDEN_BELOW_CLI = {
    "print(": "library code returns values; the CLI prints",
    "sys.exit": "library code raises typed errors; the CLI picks the exit code",
    "sys.argv": "Click parses argv, in the CLI",
    "os.environ": "the CLI reads the environment and passes values down",
    "CliRunner": "nothing in the package runs its own CLI",
    "sys.stdout": "only render and the CLI write to stdout",
    "sys.stderr": "only render and the CLI write to stderr",
    "import click": "Click belongs to the CLI",
    "pickle": "nothing read from the data directory is unpickled",
}


@pytest.mark.parametrize("name", [m for m in modules() if m not in ("bonuscli.cli", "bonuscli.__main__")])
def test_below_the_cli_nothing_prints_exits_or_reads_argv(name):
    text = modules()[name].read_text(encoding="utf-8")
    for word, why in FORBIDDEN_BELOW_CLI.items():
        if name == "bonuscli.render" and word in ("sys.stdout", "sys.stderr"):
            continue
        assert word not in text, f"{name} uses {word}: {why}"


def test_the_cli_reads_no_argv_by_hand():
    text = (PKG / "cli.py").read_text(encoding="utf-8")
    assert '"--json" in args' not in text and '"--debug" in args' not in text and '"--explain" in args' not in text


# ---------------------------------------------------------------- by the syntax tree (an alias or a
# `from` import hides nothing)


def _module_aliases(tree) -> dict:
    """name bound in the file -> the module (or `module.name`) it stands for, from its imports."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                out[a.asname or a.name.partition(".")[0]] = a.name if a.asname else a.name.partition(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                out[a.asname or a.name] = f"{node.module}.{a.name}"
    return out


def _dotted(node, aliases):
    """`sys.stdin` -> "sys.stdin", `click.Option(...)._x` -> "click.Option()._x": the chain of
    attributes from a name bound to an import (through calls and subscripts), or None."""
    parts = []
    while True:
        if isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        elif isinstance(node, ast.Call):
            parts.append("()")
            node = node.func
        elif isinstance(node, ast.Subscript):
            parts.append("[]")
            node = node.value
        elif isinstance(node, ast.Name) and node.id in aliases:
            return ".".join([aliases[node.id]] + parts[::-1]).replace(".()", "()").replace(".[]", "[]")
        else:
            return None


def uses(path: Path) -> set:
    """Every dotted name the file reaches from its imports: `os._exit`, `sys.stdin` (also when imported as
    `from sys import stdin`, or read with getattr), `click.parser._OptionParser` ..., and every module
    it imports."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    aliases = _module_aliases(tree)
    out = set(aliases.values())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):  # `import click._compat` binds `click` only
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.Attribute):
            name = _dotted(node, aliases)
            if name:
                out.add(name)
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("getattr", "hasattr", "setattr")
              and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)):
            base = _dotted(node.args[0], aliases)
            if base:
                out.add(f"{base}.{node.args[1].value}")
    return out


FORBIDDEN_NAMES_BELOW_CLI = {
    "os._exit": "library code raises typed errors; only the CLI ends the process",
    "sys.stdin": "the CLI opens stdin and passes the stream down",
}


@pytest.mark.parametrize("name", [m for m in modules() if m not in ("bonuscli.cli", "bonuscli.__main__")])
def test_below_the_cli_nothing_ends_the_process_or_reads_stdin(name):
    used = uses(modules()[name])
    for word, why in FORBIDDEN_NAMES_BELOW_CLI.items():
        hits = sorted(u for u in used if u == word or u.startswith((word + ".", word + "(", word + "[")))
        assert not hits, f"{name} uses {hits}: {why}"


def _private(dotted: str) -> bool:
    """A name of the chain starts with `_` (dunders such as `__init__` are not private)."""
    names = dotted.replace("()", ".").replace("[]", ".").split(".")
    return any(n.startswith("_") and not (n.startswith("__") and n.endswith("__")) for n in names if n)


@pytest.mark.parametrize("name", list(modules()))
def test_nothing_uses_clicks_private_names(name):
    """Click's `_`-names (`click.parser._OptionParser`, `click._compat`, ...) change without notice
    between releases; the package uses its public API only."""
    bad = sorted(u for u in uses(modules()[name]) if (u == "click" or u.startswith(("click.", "click(", "click[")))
                 and _private(u))
    assert not bad, f"{name} uses Click's private names: {bad}"
