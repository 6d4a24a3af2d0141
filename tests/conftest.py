import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# tfds splits are cached under $TFNAS_CACHE_DIR: tests (and the processes they start) write
# their mock datasets into a folder of the session, never into the user's cache
_CACHE = __import__("tempfile").mkdtemp(prefix="tfnas-test-cache-")
os.environ["TFNAS_CACHE_DIR"] = _CACHE
__import__("atexit").register(__import__("shutil").rmtree, _CACHE, True)

# tfnas decides its CPU settings (oneDNN on AVX2 CPUs) before TensorFlow loads, as in a
# user's process (tfnas.cpuinfo)
import tfnas  # noqa: E402,F401
import numpy as np  # noqa: E402
import pytest  # noqa: E402


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


@pytest.fixture(scope="session")
def searched(tmp_path_factory):
    """A finished tiny search (digits, 2 epochs of 4 steps): copy it before changing it."""
    from helpers import tiny_config
    from tfnas.search import run_search
    tmp = tmp_path_factory.mktemp("searched")
    cfg = tiny_config(str(tmp), epochs=2, steps_per_epoch=4, channels=4)
    wd = str(tmp / "run")
    run_search(cfg, wd, log=lambda s: None)
    return wd
