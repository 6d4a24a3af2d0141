import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                      "shared")


@pytest.fixture(autouse=True)
def _seed():
    import keras
    keras.utils.set_random_seed(0)
    np.random.seed(0)


@pytest.fixture
def tiny_space_file(tmp_path):
    """A 2-node DARTS-family space with two ops per edge (5 edges per cell)."""
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps({"name": "tiny", "family": "darts", "steps": 2,
                                "ops": ["max_pool_3x3", "sep_conv_3x3"]}))
    return str(path)
