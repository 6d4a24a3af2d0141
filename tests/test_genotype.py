import json

import pytest

from tfnas.errors import GenotypeError
from tfnas.genotype import DartsTuple, Edge, Genotype

# DARTS V2 as published (Liu et al. 2019), in the DARTS tuple form.
DARTS_V2 = DartsTuple(
    normal=[("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
            ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)],
    normal_concat=[2, 3, 4, 5],
    reduce=[("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
            ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1)],
    reduce_concat=[2, 3, 4, 5])
NB201_STR = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|none~1|" \
            "skip_connect~2|"


def test_darts_tuple_and_json_round_trip():
    g = Genotype.from_darts_tuple(DARTS_V2, meta={"name": "darts_v2"})
    assert g.cells["normal"]["edges"][4] == Edge(4, 0, "skip_connect")  # sorted by input
    obj = g.to_json()
    assert obj["format"] == "tfnas.genotype/1" and obj["space"] == "darts"
    again = Genotype.loads(json.dumps(obj))
    assert again.to_json() == obj
    t = again.to_darts_tuple()
    assert t.normal == sorted(DARTS_V2.normal[:2]) + DARTS_V2.normal[2:4] + \
        [("skip_connect", 0), ("sep_conv_3x3", 1)] + DARTS_V2.normal[6:]
    assert Genotype.from_darts_tuple(t).to_json()["cells"] == obj["cells"]


def test_nb201_string_round_trip():
    g = Genotype.from_nb201_string(NB201_STR)
    assert g.to_nb201_string() == NB201_STR
    obj = g.to_json()
    assert obj["arch_str"] == NB201_STR and len(obj["cells"]["cell"]["edges"]) == 6
    assert Genotype.from_json(obj).to_nb201_string() == NB201_STR
    with pytest.raises(GenotypeError, match="only for nb201"):
        Genotype.from_darts_tuple(DARTS_V2).to_nb201_string()


def _darts_obj():
    return Genotype.from_darts_tuple(DARTS_V2).to_json()


@pytest.mark.parametrize("mutate,message", [
    (lambda o: o["cells"]["normal"]["edges"][0].update(op="conv_9x9"),
     r"cells.normal.edges\[0\]: op 'conv_9x9' is not in space 'darts' for edge 0->2"),
    (lambda o: o["cells"]["normal"]["edges"].append({"node": 2, "input": 1, "op": "sep_conv_3x3"})
     or o["cells"]["normal"]["edges"][1].update(input=1),
     r"duplicate edge 1->2"),
    (lambda o: o["cells"]["reduce"]["edges"].pop(),
     r"cells.reduce: node 5 has 1 input edge\(s\), expected 2"),
    (lambda o: o["cells"]["normal"]["edges"][2].update(input=4),
     r"edges\[2\]: input 4 of node 3 must be in 0..2"),
    (lambda o: o["cells"]["normal"]["edges"][0].update(node=7),
     r"edges\[0\]: node 7 is not an intermediate node"),
    (lambda o: o["cells"].pop("reduce"), r"has cell types \['normal', 'reduce'\]"),
    (lambda o: o.pop("space"), r"missing key 'space'"),
    (lambda o: o.update(space="nope"), r"unknown search space 'nope'"),
    (lambda o: o.update(format="other/2"), r"unsupported format 'other/2'"),
    (lambda o: o["cells"]["normal"]["edges"][0].pop("op"), r"expected keys node, input, op"),
    (lambda o: o["cells"]["normal"].update(concat=[2, 9]), r"concat: \[2, 9\]"),
])
def test_malformed_genotypes(mutate, message):
    obj = _darts_obj()
    mutate(obj)
    with pytest.raises(GenotypeError, match=message):
        Genotype.from_json(obj)


def test_op_not_in_space_for_that_edge():
    obj = _darts_obj()
    obj["space"] = "s1"  # S1 normal edge 0 (0->2) allows skip_connect, dil_conv_3x3 only
    with pytest.raises(GenotypeError, match=r"op 'sep_conv_3x3' is not in space 's1' for edge "
                                            r"0->2; allowed: skip_connect, dil_conv_3x3"):
        Genotype.from_json(obj)


def test_darts_cell_cannot_keep_none():
    obj = _darts_obj()
    obj["space"] = "s3"
    for e in obj["cells"]["normal"]["edges"] + obj["cells"]["reduce"]["edges"]:
        e["op"] = "skip_connect"
    obj["cells"]["normal"]["edges"][0]["op"] = "none"
    with pytest.raises(GenotypeError, match="cannot keep a 'none' edge"):
        Genotype.from_json(obj)


def test_nb201_errors():
    with pytest.raises(GenotypeError, match="bad token 'nor_conv_3x3'"):
        Genotype.from_nb201_string("|nor_conv_3x3|+|a~0|b~1|")
    with pytest.raises(GenotypeError, match="node 3 has 2 input edge"):
        Genotype.from_nb201_string("|none~0|+|none~0|none~1|+|none~0|none~1|")
    obj = Genotype.from_nb201_string(NB201_STR).to_json()
    obj["arch_str"] = obj["arch_str"].replace("none~1", "skip_connect~1")
    with pytest.raises(GenotypeError, match="arch_str .* disagrees with the edges"):
        Genotype.from_json(obj)


def test_bad_json_and_missing_file(tmp_path):
    with pytest.raises(GenotypeError, match="not valid JSON"):
        Genotype.loads("{not json")
    with pytest.raises(GenotypeError, match="cannot read genotype"):
        Genotype.load(str(tmp_path / "missing.json"))
    with pytest.raises(GenotypeError, match="neither a file nor a zoo name"):
        Genotype.load("no_such_architecture")


def test_save_is_atomic_and_loads_back(tmp_path):
    g = Genotype.from_darts_tuple(DARTS_V2)
    path = tmp_path / "g.json"
    g.save(str(path))
    assert Genotype.load(str(path)).to_json() == g.to_json()
    assert [p.name for p in tmp_path.iterdir()] == ["g.json"]
