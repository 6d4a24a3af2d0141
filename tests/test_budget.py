"""Budget-aware selection: exact cost tables, decisions within the budget, clear refusals."""

import os
import shutil

import numpy as np
import pytest

from tfnas.cli import main
from tfnas.deploy import to_builtin
from tfnas.derive import magnitude_genotype
from tfnas.cost import count_macs as conv_macs, count_params as trainable_params
from tfnas.derive.budget import Budget, Network, latency_table
from tfnas.genotype import Genotype
from tfnas.io import read_jsonl
from tfnas.models import build_model
from tfnas.selection import SelectConfig
from tfnas.selection.run import run_select
from tfnas.spaces import get_space


def _random_genotypes(space, n, seed=0):
    rng = np.random.default_rng(seed)
    return [magnitude_genotype(space, {t: rng.random((space.cells[t].num_edges,
                                                      space.cells[t].max_ops))
                                       for t in space.cell_types}) for _ in range(n)]


@pytest.mark.parametrize("space,net", [
    ("darts", Network(10, (8, 8, 1), 8, 5)),
    ("s3", Network(100, (15, 15, 3), 6, 4)),
    ("nb201", Network(10, (16, 16, 3), 8, 2)),
])
def test_cost_tables_predict_params_and_macs_exactly(space, net):
    space = get_space(space)
    params = Budget(space, "params", 1e12, net)
    macs = Budget(space, "macs", 1e12, net)
    for g in _random_genotypes(space, 3):
        m = build_model(g, net.num_classes, net.input_shape, net.channels, net.layers)
        assert params.cost(g) == trainable_params(m)
        assert macs.cost(g) == conv_macs(to_builtin(m))


def _with_arch(space):
    """Fresh ArchParameters of every cell type of `space` (no decisions yet)."""
    from tfnas.supernet.mixed import ArchParameters
    return {t: ArchParameters([len(o) for o in space.cells[t].ops]) for t in space.cell_types}


def test_lower_bound_is_the_cheapest_genotype_and_refuses_an_infeasible_budget():
    space, net = get_space("darts"), Network(10, (8, 8, 1), 8, 5)
    b = Budget(space, "params", 1e12, net)
    archs = _with_arch(space)
    cheapest = min(b.cost(g) for g in _random_genotypes(space, 20, seed=1))
    assert b.lower_bound(archs) <= cheapest
    # pools and skips have no parameters: the bound is the fixed part alone
    assert b.lower_bound(archs) == b.fixed
    tight = Budget(space, "params", b.fixed - 1, net)
    with pytest.raises(Exception, match=r"--max_params=\d+ cannot be met: the cheapest "
                                        r"architecture of space 'darts' at 8 channels, 5 "
                                        r"layers costs \d+ params"):
        tight.check_feasible(archs)


def _sep_cost(budget, ctype):
    ops = budget.space.cells[ctype].ops[0]
    return budget.table[ctype][0][ops.index("sep_conv_3x3")]


@pytest.fixture(scope="module")
def unconstrained(searched, tmp_path_factory):
    wd = str(tmp_path_factory.mktemp("free") / "run")
    shutil.copytree(searched, wd)
    cfg = SelectConfig(selector="pt", tune_epochs_per_decision=0, score_batches=1)
    return wd, run_select(wd, cfg, log=lambda s: None)


def test_a_budget_forces_cheaper_ops_and_the_genotype_fits(searched, unconstrained, tmp_path):
    free_wd, free = unconstrained
    space = get_space(free.space)
    net = Network(10, (8, 8, 1), 4, 3)  # the searched run's size (digits, C=4, 3 cells)
    params = Budget(space, "params", 1e12, net)
    free_cost = params.cost(free)
    n_sep = sum(e.op == "sep_conv_3x3" for t in space.cell_types
                for e in free.cells[t]["edges"])
    assert n_sep >= 2, "the unconstrained PT choice must hold separable convs to constrain"
    limit = int(params.fixed + _sep_cost(params, "normal"))  # room for about one sep conv
    assert limit < free_cost
    wd = str(tmp_path / "run")
    shutil.copytree(searched, wd)
    cfg = SelectConfig(selector="pt", tune_epochs_per_decision=0, score_batches=1,
                       max_params=limit)
    g = run_select(wd, cfg, log=lambda s: None)
    m = build_model(g, 10, (8, 8, 1), 4, 3)
    assert trainable_params(m) <= limit < free_cost  # measured on the built network
    assert g.meta["budget"] == {"kind": "params", "limit": float(limit),
                                "network": net.to_json(), "cost": trainable_params(m)}
    assert g.cells != free.cells
    rows = read_jsonl(os.path.join(wd, "selection", "scores.jsonl"))
    assert all(r["budget_bound"] <= limit for r in rows)
    forced = [r for r in rows if r["kind"] == "op" and r.get("over_budget")]
    assert forced and all(r["choice"] not in r["over_budget"] for r in forced)
    saved = Genotype.load(os.path.join(wd, "genotype.json"))
    assert saved.meta["budget"]["cost"] == trainable_params(m)


def test_cli_refuses_an_infeasible_budget_before_any_work(searched, tmp_path, capsys):
    wd = str(tmp_path / "run")
    shutil.copytree(searched, wd)
    rc = main(["select", f"--workdir={wd}", "--max_params=10"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "--max_params=10 cannot be met" in err and len(err.splitlines()) == 1
    assert not os.path.exists(os.path.join(wd, "selection"))
    rc = main(["select", f"--workdir={wd}", "--max_params=10", "--max_macs=10"])
    assert rc == 2 and "give one budget at a time" in capsys.readouterr().err
    rc = main(["select", f"--workdir={wd}", "--max_params=10", "--selector=magnitude"])
    assert rc == 2 and "applies to --selector=pt or pt_mag" in capsys.readouterr().err


def test_latency_table_covers_every_op_shape_and_the_budget_uses_it(tmp_path):
    space = get_space(_tiny_space(tmp_path))
    net = Network(10, (8, 8, 1), 4, 3)
    table = latency_table(space, net, runs=3, warmup=1, log=lambda s: None)
    assert all(v >= 0 for v in table.values())
    assert any(k.startswith("sep_conv_3x3@8x8x4/s1") for k in table)
    assert any(k.endswith("/s2") for k in table)  # reduction edges from the cell inputs
    b = Budget(space, "latency_ms", 1e9, net, latency=table)
    ref = magnitude_genotype(space, {t: np.ones((space.cells[t].num_edges,
                                                 space.cells[t].max_ops))
                                     for t in space.cell_types})
    net_key = next(k for k in table if k.startswith("network@"))
    assert b.cost(ref) == pytest.approx(table[net_key])  # the measured whole network
    with pytest.raises(Exception, match="has no entry"):
        Budget(space, "latency_ms", 1.0, net, latency={net_key: 1.0})


def _tiny_space(folder):
    from helpers import write_tiny_space
    return write_tiny_space(str(folder))


def test_one_mac_counter_by_hand():
    """`tfnas.cost.count_macs`: each kernel once per output position, nested models too; the
    same number for budgets, export and profile."""
    import keras
    from tfnas.cost import count_macs, count_params
    inner = keras.Sequential([keras.Input((4, 4, 4)),
                              keras.layers.SeparableConv2D(8, 3, padding="same")])
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(x)                        # 3*3*3*4 * 64
    h = keras.layers.DepthwiseConv2D(3, strides=2, padding="same")(h)       # 3*3*4 * 16
    h = inner(h)                                                            # (36 + 32) * 16
    h = keras.layers.GlobalAveragePooling2D()(keras.layers.BatchNormalization()(h))
    y = keras.layers.Dense(10)(h)                                           # 8*10
    model = keras.Model(x, y)
    assert count_macs(model) == 6912 + 576 + 1088 + 80
    bn_trainable = 2 * 8
    assert count_params(model) == (108 + 4) + (36 + 4) + (36 + 32 + 8) + bn_trainable + 90
