"""Mixed precision (bfloat16 on CPU): search, PT selection and retraining learn with float32
state, and a bfloat16-trained network exports to float32 artefacts with parity."""

import json
import os

import keras
import tensorflow as tf

from helpers import tiny_config
from tfnas.config import SearchConfig, TrainConfig
from tfnas.export import export_model
from tfnas.genotype import Genotype
from tfnas.search import SearchLoop
from tfnas.selection.pt import SelectConfig
from tfnas.selection.run import run_select
from tfnas.train import run_train
from tfnas.errors import ConfigError


def test_bfloat16_search_learns_with_float32_alphas_bn_and_loss(tmp_path):
    cfg = tiny_config(str(tmp_path), epochs=4, steps_per_epoch=8, batch_size=64,
                      limit_examples=0, mixed_precision="mixed_bfloat16")
    wd = str(tmp_path / "run")
    loop = SearchLoop(cfg, wd, tf.distribute.get_strategy(), log=lambda s: None)
    assert keras.config.dtype_policy().name == "float32"  # the global policy is restored
    computes = {type(layer).__name__: layer.compute_dtype
                for layer in loop.model._flatten_layers()}
    assert computes["DilConv"] == computes["Pool"] == computes["MixedOp"] == "bfloat16"
    assert computes["ArchParameters"] == "float32"
    assert all(str(v.dtype) == "float32" for v in loop.model.variables)
    x = loop.pipeline.normalize(loop.data.x_train[:4])
    assert loop.model(x, training=False).dtype == tf.float32  # logits, so the loss
    from tfnas.search.workdir import prepare_workdir
    prepare_workdir(wd, cfg, False)
    loop.run()
    rows = [json.loads(line) for line in open(os.path.join(wd, "metrics.jsonl"))]
    assert rows[-1]["train_loss"] < 0.7 * rows[0]["train_loss"], rows
    assert rows[-1]["valid_acc"] > 0.5, rows  # chance is 0.1
    # PT selection on the bfloat16 supernet (it is rebuilt under the search's policy)
    g = run_select(wd, SelectConfig(selector="pt", tune_epochs_per_decision=1, score_batches=2),
                   log=lambda s: None)
    assert all(len(c["edges"]) for c in g.to_json()["cells"].values())


def test_bfloat16_training_exports_float32_artefacts_with_parity(tmp_path):
    cfg = TrainConfig(dataset="digits", channels=8, layers=3, epochs=2, batch_size=64,
                      cutout_length=4, drop_path=0.0, seed=1, mixed_precision="mixed_bfloat16")
    h = run_train(cfg, Genotype.load("darts_v2"), str(tmp_path), verbose=0, log=lambda s: None)
    assert h.history["loss"][-1] < h.history["loss"][0]
    model = keras.models.load_model(str(tmp_path / "train" / "model.keras"))
    assert {layer.compute_dtype for layer in model.layers} >= {"bfloat16"}
    r = export_model(model, str(tmp_path / "export"), formats=("keras", "onnx"))
    assert r["source_compute_dtype"] == "bfloat16"
    assert r["max_abs_diff"]["onnx"] < 1e-4 and r["max_abs_diff"]["keras"] < 1e-4
    assert 0 < r["mixed_vs_float32_max_abs_diff"] < 0.5  # bfloat16 rounding, reported
    import onnx
    graph = onnx.load(str(tmp_path / "export" / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not [n for n in graph.node if n.op_type == "Cast"]  # no bfloat16 left inside


def test_unknown_precision_is_refused():
    import pytest
    with pytest.raises(ConfigError, match="mixed_precision='mixed_float16' is invalid"):
        SearchConfig(mixed_precision="mixed_float16").validate()
