"""tfnas against the authors' PyTorch code, step for step (`tools/reference_parity.py`).

Runs only where TFNAS_REFERENCE_DIR names a reference prepared outside the repository (a CPU
export of ruocwang/darts-pt in DIR/darts-pt and a Python with PyTorch in DIR/venv)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
REFERENCE = os.environ.get("TFNAS_REFERENCE_DIR", "")


needs_reference = pytest.mark.skipif(
    not REFERENCE or not os.path.isdir(os.path.join(REFERENCE, "darts-pt")),
    reason="TFNAS_REFERENCE_DIR does not name a prepared reference (darts-pt/ and venv/)")


@pytest.mark.slow
@needs_reference
def test_every_quantity_matches_the_reference(tmp_path):
    out = tmp_path / "parity.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "reference_parity.py"),
                           f"--reference_dir={REFERENCE}", f"--json={out}"],
                          capture_output=True, text=True, timeout=2400)
    rows = json.loads(out.read_text())["rows"]
    assert {r["config"] for r in rows} == {"darts_c8_l5", "s1_c8_l5", "s2_c8_l5", "s3_c8_l5",
                                           "nb201_c8_n1"}
    bad = [r for r in rows if not r["ok"]]
    assert proc.returncode == 0 and not bad, (bad, proc.stdout[-3000:])
    chosen = [r for r in rows if r["quantity"] == "PT: the op chosen"]
    assert len(chosen) == 5 and all(r["abs"] == 0 for r in chosen)
    kept = [r for r in rows if r["quantity"] == "topology: the inputs kept"]
    assert len(kept) == 4 and all(r["ok"] for r in kept)


@pytest.mark.slow
@needs_reference
@pytest.mark.parametrize("space,layers", [("darts", 5), ("s1", 5), ("s2", 5), ("s3", 5),
                                          ("s4", 5), ("nb201", 1)])
def test_import_of_a_reference_checkpoint_computes_its_logits(tmp_path, space, layers):
    """Every space: a checkpoint the authors' code writes (C=4, with the SGD state) imports
    into a run whose supernet gives the reference's eval-mode logits; S4, whose noise op
    draws fresh noise in every call in both codes, holds every tensor of the checkpoint."""
    import numpy as np
    from tfnas.cli import main
    from tfnas.selection.run import load_search
    ckpt = str(tmp_path / "ckpt.pth.tar")
    subprocess.run([os.path.join(REFERENCE, "venv", "bin", "python"),
                    os.path.join(ROOT, "tools", "make_darts_pt_checkpoint.py"),
                    f"--darts_pt={os.path.join(REFERENCE, 'darts-pt')}", f"--space={space}",
                    "--channels=4", f"--layers={layers}", f"--out={ckpt}"],
                   check=True, capture_output=True, timeout=600)
    x = np.random.default_rng(0).integers(0, 255, (64, 16, 16, 3)).astype(np.uint8)
    data = str(tmp_path / "images.npz")
    np.savez(data, x_train=x, y_train=np.arange(64) % 10)
    wd = str(tmp_path / "run")
    assert main(["import", ckpt, f"--workdir={wd}", f"--dataset=npz:{data}",
                 "--batch_size=16"]) == 0
    loop = load_search(wd, log=lambda s: None)
    assert loop.space.name == space
    ref = np.load(ckpt + ".npz")
    if space == "s4":
        from tfnas.interop.darts_pt import map_variables, to_tf
        from tfnas.interop.torch_file import read_torch_file
        sd = {k: v for k, v in read_torch_file(ckpt)["state_dict"].items()
              if not k.endswith("num_batches_tracked")}
        pairs = map_variables(loop.model, loop.space, list(sd),
                              {k: v.shape for k, v in sd.items()}, layers)
        for key, var in pairs.items():
            np.testing.assert_array_equal(var.numpy(), to_tf(var.path, sd[key]))
        return
    ours = loop.model(ref["x"].transpose(0, 2, 3, 1), training=False).numpy()
    np.testing.assert_allclose(ours, ref["logits"], rtol=1e-5, atol=1e-5)
