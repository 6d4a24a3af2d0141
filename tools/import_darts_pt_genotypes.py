"""Converts the DARTS-PT authors' published cells into tfnas's test data.

Usage:
    python tools/import_darts_pt_genotypes.py PATH/TO/darts-pt/sota/cnn/genotypes.py \
        tests/data/darts_pt_published.json

Reads the authors' `genotypes.py` with `ast` (nothing is executed) and keeps the DARTS-PT and
fixed-alpha-PT cells (`darts_pt_*`, `blank_pt_*`): the space (s1-s4; s5 is the DARTS space),
the dataset they were found on (cifar10, cifar100, svhn), the method, the kept edges per
cell type as [op, input] pairs in node order (two per node, nodes 2..5) and the number the
source writes after the cell (the network's parameter count in millions at C=36, 20 cells,
without the auxiliary head). The source is Apache-2.0 licensed (see tests/data/NOTICE).
"""

import ast
import json
import re
import sys


def _literal(node):
    """(op, input) pairs or a range(...) call as plain Python values."""
    if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "range":
        return list(range(*[ast.literal_eval(a) for a in node.args]))
    return [list(t) for t in ast.literal_eval(node)]


def parse(source):
    tree = ast.parse(source)
    lines = source.splitlines()
    cells = {}
    for stmt in tree.body:
        if not (isinstance(stmt, ast.Assign) and isinstance(stmt.value, ast.Call)):
            continue
        name = stmt.targets[0].id
        m = re.fullmatch(r"(darts|blank)_pt_s(\d)(?:_(c100|svhn))?_(\d)", name)
        if not m:
            continue
        kw = {k.arg: _literal(k.value) for k in stmt.value.keywords}
        tail = lines[stmt.end_lineno - 1].split("#", 1)
        num = re.match(r"\s*(\d+(?:\.\d+)?)", tail[1]) if len(tail) == 2 else None
        params = float(num.group(1)) if num else None  # e.g. "# 2.85 (param size)"
        space = "darts" if m.group(2) == "5" else f"s{m.group(2)}"
        cells[name] = {
            "space": space,
            "found_on": {"c100": "cifar100", "svhn": "svhn"}.get(m.group(3), "cifar10"),
            "method": "darts+pt" if m.group(1) == "darts" else "fixalpha+pt",
            "params_m": params,
            "normal": kw["normal"], "normal_concat": kw["normal_concat"],
            "reduce": kw["reduce"], "reduce_concat": kw["reduce_concat"]}
    return cells


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        cells = parse(f.read())
    with open(argv[2], "w") as f:
        f.write("{\n" + ",\n".join(f" {json.dumps(k)}: {json.dumps(v)}"
                                   for k, v in cells.items()) + "\n}\n")
    print(f"wrote {len(cells)} cells to {argv[2]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
