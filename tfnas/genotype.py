"""Genotype: the validated JSON contract that every tfnas command reads and writes.

    {"format": "tfnas.genotype/1", "space": "darts",
     "cells": {"normal": {"edges": [{"node": 2, "input": 0, "op": "sep_conv_3x3"}, ...],
                          "concat": [2, 3, 4, 5]},
               "reduce": {...}},
     "meta": {...}}

DARTS family: inputs 0 and 1 are the cell inputs, intermediate nodes 2..5, every node has
exactly two input edges and no edge is `none` (a `none` edge is simply absent). NB201: one
cell "cell", nodes 1..3 fed by every earlier node (op may be `none`), plus `arch_str`.
"""

import collections
import dataclasses
import json
import os

from tfnas.errors import GenotypeError, UsageError
from tfnas.spaces import get_space

FORMAT = "tfnas.genotype/1"

#: The DARTS tuple form: normal = [(op, input), ...] two entries per node, in node order.
DartsTuple = collections.namedtuple("DartsTuple", "normal normal_concat reduce reduce_concat")


def _no_unknown_keys(obj, known, where):
    """A misspelled key ('conact') would be ignored silently: refuse it, with its path."""
    import difflib
    for key in obj:
        if key not in known:
            near = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise GenotypeError(f"{where}: unknown key {key!r}{hint}; expected "
                                f"{', '.join(known)}")


@dataclasses.dataclass(frozen=True)
class Edge:
    node: int
    input: int
    op: str


@dataclasses.dataclass
class Genotype:
    """A discrete architecture.

    Attributes:
        space: the space name (or JSON path) it belongs to.
        cells: cell type -> {"edges": [Edge, ...], "concat": [nodes]}.
        meta: free-form provenance (method, seed, run, scores).
    """

    space: str
    cells: dict
    meta: dict = dataclasses.field(default_factory=dict)


    # --- JSON -----------------------------------------------------------------------------
    def to_json(self):
        out = {"format": FORMAT, "space": self.space, "cells": {}}
        for ctype, cell in self.cells.items():
            c = {"edges": [dataclasses.asdict(e) for e in cell["edges"]]}
            if cell.get("concat") is not None:
                c["concat"] = list(cell["concat"])
            out["cells"][ctype] = c
        if self.family == "nb201":
            out["arch_str"] = self.to_nb201_string()
        out["meta"] = dict(self.meta)
        return out

    def dumps(self):
        from tfnas.io import dumps
        return dumps(self.to_json(), indent=1)  # strict JSON: a NaN metric in meta -> null

    def save(self, path):
        """Writes the genotype atomically (temporary file, then rename)."""
        from tfnas.io import atomic_write_text
        atomic_write_text(path, self.dumps() + "\n")

    @classmethod
    def from_json(cls, obj, where="genotype"):
        """Parses and validates a JSON object. Raises GenotypeError naming what and where."""
        if not isinstance(obj, dict):
            raise GenotypeError(f"{where}: expected a JSON object, got {type(obj).__name__}")
        fmt = obj.get("format", FORMAT)
        if fmt != FORMAT:
            raise GenotypeError(f"{where}: unsupported format {fmt!r}; expected {FORMAT!r}")
        for key in ("space", "cells"):
            if key not in obj:
                raise GenotypeError(f"{where}: missing key {key!r}")
        _no_unknown_keys(obj, ("format", "space", "cells", "arch_str", "meta"), where)
        if not isinstance(obj["cells"], dict):
            raise GenotypeError(f"{where}.cells: expected an object of cell types")
        cells = {}
        for ctype, cell in obj["cells"].items():
            loc = f"{where}.cells.{ctype}"
            if not isinstance(cell, dict) or not isinstance(cell.get("edges"), list):
                raise GenotypeError(f"{loc}: expected {{'edges': [...], 'concat': [...]}}")
            _no_unknown_keys(cell, ("edges", "concat"), loc)
            edges = []
            for i, e in enumerate(cell["edges"]):
                if not isinstance(e, dict) or set(e) != {"node", "input", "op"}:
                    raise GenotypeError(f"{loc}.edges[{i}]: expected keys node, input, op; "
                                        f"got {e!r}")
                if not (isinstance(e["node"], int) and isinstance(e["input"], int)
                        and isinstance(e["op"], str)):
                    raise GenotypeError(f"{loc}.edges[{i}]: node/input must be integers and "
                                        f"op a string, got {e!r}")
                edges.append(Edge(e["node"], e["input"], e["op"]))
            concat = cell.get("concat")
            if concat is not None and not (isinstance(concat, list)
                                           and all(isinstance(n, int) for n in concat)):
                raise GenotypeError(f"{loc}.concat: expected a list of node numbers")
            cells[ctype] = {"edges": edges, "concat": concat}
        meta = obj.get("meta", {})
        if not isinstance(meta, dict):
            raise GenotypeError(f"{where}.meta: expected an object")
        g = cls(obj["space"], cells, meta)
        g.validate(where)
        if "arch_str" in obj and g.family == "nb201" and obj["arch_str"] != g.to_nb201_string():
            raise GenotypeError(f"{where}.arch_str {obj['arch_str']!r} disagrees with the edges "
                                f"({g.to_nb201_string()!r})")
        return g

    @classmethod
    def loads(cls, text, where="genotype"):
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise GenotypeError(f"{where}: not valid JSON ({e})") from e
        return cls.from_json(obj, where)

    @classmethod
    def load(cls, path):
        """Reads a genotype file, or a name from the zoo in `export/` (e.g. "darts_v2")."""
        path = resolve_genotype_path(path)
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise GenotypeError(f"cannot read genotype {path}: {e.strerror}") from e
        return cls.loads(text, where=path)

    # --- validation -------------------------------------------------------------------------
    @property
    def space_obj(self):
        try:
            return get_space(self.space)
        except UsageError as e:
            raise GenotypeError(f"genotype space: {e}") from e

    @property
    def family(self):
        return self.space_obj.family

    def validate(self, where="genotype"):
        space = self.space_obj
        if set(self.cells) != set(space.cell_types):
            raise GenotypeError(f"{where}.cells: space {space.name!r} has cell types "
                                f"{list(space.cell_types)}, got {list(self.cells)}")
        for ctype in space.cell_types:
            self._validate_cell(space, ctype, f"{where}.cells.{ctype}")
            # Canonical order (errors above name the positions as given), so equal
            # architectures serialize equally.
            self.cells[ctype]["edges"].sort(key=lambda e: (e.node, e.input))

    def _validate_cell(self, space, ctype, loc):
        cspace, cell = space.cells[ctype], self.cells[ctype]
        nodes = cspace.nodes
        seen = collections.defaultdict(list)
        for i, e in enumerate(cell["edges"]):
            if e.node not in nodes:
                raise GenotypeError(f"{loc}.edges[{i}]: node {e.node} is not an intermediate "
                                    f"node; expected one of {nodes}")
            if not 0 <= e.input < e.node:
                raise GenotypeError(f"{loc}.edges[{i}]: input {e.input} of node {e.node} must "
                                    f"be in 0..{e.node - 1}")
            allowed = cspace.ops[cspace.edge_id(e.node, e.input)]
            if e.op not in allowed:
                raise GenotypeError(f"{loc}.edges[{i}]: op {e.op!r} is not in space "
                                    f"{space.name!r} for edge {e.input}->{e.node}; allowed: "
                                    f"{', '.join(allowed)}")
            if e.input in seen[e.node]:
                raise GenotypeError(f"{loc}.edges[{i}]: duplicate edge {e.input}->{e.node}")
            seen[e.node].append(e.input)
        for node in nodes:
            n_in = len(seen[node])
            want = space.inputs_per_node or node  # NB201: every earlier node
            if n_in != want:
                raise GenotypeError(f"{loc}: node {node} has {n_in} input edge(s), expected "
                                    f"{want}")
        if space.concat(ctype) is not None:  # a cell that concatenates (DARTS family)
            if any(e.op == "none" for e in cell["edges"]):
                raise GenotypeError(f"{loc}: a DARTS-family cell cannot keep a 'none' edge")
            concat = cell["concat"] if cell["concat"] is not None else nodes
            if not concat or any(n not in nodes for n in concat) or len(set(concat)) != len(concat):
                raise GenotypeError(f"{loc}.concat: {concat} must be distinct intermediate "
                                    f"nodes from {nodes}")
            cell["concat"] = list(concat)
        elif cell["concat"] not in (None, [nodes[-1]]):
            raise GenotypeError(f"{loc}.concat: an NB201 cell outputs node {nodes[-1]} only")

    # --- other forms ----------------------------------------------------------------------
    def to_darts_tuple(self):
        if self.family != "darts":
            raise GenotypeError("the DARTS tuple form exists only for darts-family genotypes")
        parts = {}
        for ctype in ("normal", "reduce"):
            edges = sorted(self.cells[ctype]["edges"], key=lambda e: (e.node, e.input))
            parts[ctype] = [(e.op, e.input) for e in edges]
            parts[ctype + "_concat"] = list(self.cells[ctype]["concat"])
        return DartsTuple(**parts)

    @classmethod
    def from_darts_tuple(cls, t, space="darts", meta=None):
        """From DARTS's `Genotype(normal=[(op, input), ...], normal_concat, reduce, ...)`:
        entries 2k and 2k+1 are the two inputs of node k+2."""
        cells = {}
        for ctype in ("normal", "reduce"):
            pairs = list(getattr(t, ctype) if hasattr(t, ctype) else t[ctype])
            if len(pairs) % 2:
                raise GenotypeError(f"DARTS tuple {ctype}: expected two (op, input) pairs per "
                                    f"node, got {len(pairs)} entries")
            edges = [Edge(2 + i // 2, int(j), op) for i, (op, j) in enumerate(pairs)]
            concat = getattr(t, ctype + "_concat", None) if hasattr(t, ctype) \
                else t.get(ctype + "_concat")
            cells[ctype] = {"edges": edges, "concat": list(concat) if concat is not None else None}
        g = cls(space, cells, dict(meta or {}))
        g.validate("DARTS tuple")
        return g

    def to_nb201_string(self):
        if self.family != "nb201":
            raise GenotypeError("the NB201 string exists only for nb201-family genotypes")
        ops = {(e.node, e.input): e.op for e in self.cells["cell"]["edges"]}
        nodes = sorted({n for n, _ in ops})
        return "+".join("|" + "|".join(f"{ops[(n, j)]}~{j}" for j in range(n)) + "|"
                        for n in nodes)

    @classmethod
    def from_nb201_string(cls, arch_str, space="nb201", meta=None):
        """Parses `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`."""
        edges = []
        for n, part in enumerate(arch_str.split("+"), start=1):
            if not (part.startswith("|") and part.endswith("|")):
                raise GenotypeError(f"NB201 string {arch_str!r}: node {n} part {part!r} must "
                                    f"look like |op~0|op~1|")
            for tok in part.strip("|").split("|"):
                op, sep, j = tok.rpartition("~")
                if not sep or not j.isdigit():
                    raise GenotypeError(f"NB201 string {arch_str!r}: bad token {tok!r}, "
                                        f"expected op~input")
                edges.append(Edge(n, int(j), op))
        g = cls(space, {"cell": {"edges": edges, "concat": None}}, dict(meta or {}))
        g.validate("NB201 string")
        return g

    def kept_ops(self, cell_type):
        """{(node, input): op} of one cell."""
        return {(e.node, e.input): e.op for e in self.cells[cell_type]["edges"]}


def resolve_genotype_path(name_or_path):
    """A path, or a zoo name ("darts_v2") resolved to the shipped `<name>.json`."""
    from tfnas.resources import find_resource, list_resources
    if os.path.exists(name_or_path) or os.sep in name_or_path or name_or_path.endswith(".json"):
        return name_or_path
    candidate = find_resource("zoo", name_or_path)
    if candidate:
        return candidate
    raise GenotypeError(f"genotype {name_or_path!r} is neither a file nor a zoo name; "
                        f"zoo: {', '.join(list_resources('zoo')) or '(empty)'}")
