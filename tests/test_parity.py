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


@pytest.mark.slow
@pytest.mark.skipif(not REFERENCE or not os.path.isdir(os.path.join(REFERENCE, "darts-pt")),
                    reason="TFNAS_REFERENCE_DIR does not name a prepared reference "
                           "(darts-pt/ and venv/)")
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
