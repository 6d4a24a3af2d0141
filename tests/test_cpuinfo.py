"""What tfnas turns on per CPU before TensorFlow loads, and the numbers of every op under
each kernel setting (tfnas.cpuinfo, tfnas.numerics)."""

import subprocess
import sys

import numpy as np
import pytest

from tfnas import cpuinfo, numerics
from tfnas.ops import build_op

ISA_OFF = {name: False for name in cpuinfo.ISA}


def _info(machine="x86_64", **isa):
    return {"machine": machine, "vendor": "", "model": "planted", "cores": 2,
            "isa": {**ISA_OFF, **isa}}


AMD_AVX2 = _info(avx=True, avx2=True, fma=True)
XEON_VNNI = _info(avx=True, avx2=True, fma=True, avx512f=True, avx512_vnni=True)


def test_onednn_is_turned_on_only_on_avx2_cpus_where_tensorflow_leaves_it_off():
    env = {}
    decision = cpuinfo.configure(env, AMD_AVX2, tensorflow_loaded=False)
    assert env == {"TF_ENABLE_ONEDNN_OPTS": "1"} and decision["by"] == "tfnas"
    for info, by in ((XEON_VNNI, "tensorflow"), (_info(avx=True), "tensorflow"),
                     (_info("aarch64", asimd=True), "tensorflow")):
        env = {}
        assert cpuinfo.configure(env, info, tensorflow_loaded=False)["by"] == by
        assert env == {}


def test_a_users_setting_the_opt_out_and_a_late_import_are_respected():
    for value in ("0", "1", ""):
        env = {"TF_ENABLE_ONEDNN_OPTS": value}
        assert cpuinfo.configure(env, AMD_AVX2, tensorflow_loaded=False)["by"] == "user"
        assert env == {"TF_ENABLE_ONEDNN_OPTS": value}
    env = {"TFNAS_CPU_DEFAULTS": "0"}
    assert cpuinfo.configure(env, AMD_AVX2, tensorflow_loaded=False)["by"] == "opt-out"
    assert "TF_ENABLE_ONEDNN_OPTS" not in env
    env = {}
    decision = cpuinfo.configure(env, AMD_AVX2, tensorflow_loaded=True)
    assert decision["by"] == "too late" and "import tfnas first" in decision["reason"]
    assert env == {}


def test_import_tfnas_decides_before_tensorflow_loads():
    code = ("import sys, tfnas, tfnas.cpuinfo as c; "
            "print('tensorflow' in sys.modules, c.configure()['by'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    expected = cpuinfo.onednn_decision(tensorflow_loaded=False)["by"]
    assert out == ["False", expected]


def test_compare_measures_against_the_largest_value_and_checks_keys():
    want = {"a/out": np.array([1.0, -4.0]), "a/d_input": np.array([0.0, 2.0])}
    got = {"a/out": np.array([1.0, -3.0]), "a/d_input": np.array([0.0, 2.0])}
    errors = numerics.compare(got, want)
    assert errors == {"a/out": 0.25, "a/d_input": 0.0}
    assert numerics.worst_per_op(errors) == {"a": (0.25, "out")}
    assert numerics.worst_per_op({"op/s1/d_x/y/kernel": 0.5, "op/s1/out": 0.1}) == {
        "op/s1": (0.5, "d_x/y/kernel")}
    with pytest.raises(ValueError, match="a/out"):
        numerics.compare({"a/d_input": want["a/d_input"]}, want)


def test_every_op_computes_the_same_numbers_with_onednn_avx2_kernels_and_without_onednn():
    """On any x86 CPU: oneDNN limited to AVX2 (the kernels an AMD EPYC gets) and this
    process's setting, against TensorFlow's Eigen kernels, for every op and both supernets."""
    ref = numerics.results_in_subprocess({"TF_ENABLE_ONEDNN_OPTS": "0"})
    assert len(ref) > 600 and any(k.startswith("dil_conv_5x5/s2/d_") for k in ref)
    build_op("sep_conv_3x3", 4, 1, True)  # layer numbering moves on: keys must not depend on it
    runs = {"here": numerics.results(),
            "avx2": numerics.results_in_subprocess({"TF_ENABLE_ONEDNN_OPTS": "1",
                                                    "ONEDNN_MAX_CPU_ISA": "AVX2"})}
    for label, got in runs.items():
        errors = numerics.compare(got, ref)
        beyond = {k: e for k, e in errors.items() if e > numerics.TOLERANCE}
        assert not beyond, (label, beyond)
