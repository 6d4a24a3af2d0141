"""The package's layering: imports flow one way, no cycle (function-level imports count)."""

import ast
import os

import numpy as np
import pytest

from tfnas.spaces import SPACES, get_space

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tfnas")


def _module_name(path):
    rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
    return rel[:-len(".__init__")] if rel.endswith(".__init__") else rel


def import_graph():
    """{module: {imported tfnas modules}} over every import statement of tfnas/, at any
    depth (inside functions too)."""
    modules = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                modules[_module_name(os.path.join(dirpath, f))] = os.path.join(dirpath, f)
    graph = {}
    for name, path in modules.items():
        deps = set()
        with open(path) as fh:
            tree = ast.parse(fh.read())
        for node in ast.walk(tree):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name:
                    deps.add(t)
        graph[name] = deps
    return graph


def _layer(module):
    """The package a module belongs to: tfnas.search.loop -> search, tfnas.io -> io."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "tfnas"


def find_cycle(graph):
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_cycle_between_modules():
    assert find_cycle(import_graph()) is None


def test_no_import_cycle_between_layers():
    """search/ and selection/ (and every other subpackage) depend on each other one way."""
    layers = {}
    for mod, deps in import_graph().items():
        if mod == "tfnas" or mod.endswith("__init__"):
            continue
        for d in deps:
            a, b = _layer(mod), _layer(d)
            if a != b and d != "tfnas":
                layers.setdefault(a, set()).add(b)
    assert find_cycle(layers) is None, layers
    assert "selection" not in layers.get("search", set())
    assert "search" not in layers.get("derive", set())
    assert "selection" not in layers.get("derive", set())


@pytest.mark.parametrize("name", SPACES.names())
def test_space_candidates_own_the_none_rule(name):
    """Every registered space: a derived DARTS-family cell never keeps `none`, NB201 keeps
    any op; magnitude selection and the KerasTuner space both follow `candidates`."""
    from tfnas.derive import magnitude_genotype
    from tfnas.selection.oracle import _op_choices
    space = get_space(name)
    for ctype in space.cell_types:
        for e, ops in enumerate(space.cells[ctype].ops):
            cand = [ops[k] for k in space.candidates(ctype, e)]
            want = list(ops) if space.family == "nb201" else [o for o in ops if o != "none"]
            assert cand == want and cand
            assert _op_choices(space, ctype, e) == cand
    # mixing weights that favour `none` everywhere: it is kept only where allowed
    weights = {t: np.array([[1.0 if o == "none" else 0.1 for o in ops] + [0.0] * (
        space.cells[t].max_ops - len(ops)) for ops in space.cells[t].ops])
        for t in space.cell_types}
    g = magnitude_genotype(space, weights)
    kept = {e.op for t in space.cell_types for e in g.cells[t]["edges"]}
    assert ("none" in kept) == (space.family == "nb201" and any(
        "none" in ops for ops in space.cells[space.cell_types[0]].ops))


def test_functions_and_modules_stay_small():
    """No function over 60 lines and no module over ~400 in tfnas/ (issue: one-file
    extensions need code a reader can take in at once)."""
    long_functions, long_modules = [], []
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if not f.endswith(".py"):
                continue
            path = os.path.join(dirpath, f)
            with open(path) as fh:
                src = fh.read()
            if src.count("\n") > 420:
                long_modules.append((f, src.count("\n")))
            for node in ast.walk(ast.parse(src)):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    n = node.end_lineno - node.lineno + 1
                    if n > 60:
                        long_functions.append((f, node.name, n))
    assert not long_functions and not long_modules, (long_functions, long_modules)
