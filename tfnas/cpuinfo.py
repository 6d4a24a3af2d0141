"""What a run needs to know about the CPU it runs on: model, the ISA features that change
numbers or speed (AVX2, AVX-512, VNNI, AMX, ARM dot products), the oneDNN and thread
settings, and the int8 target that follows from them.

Why int8 depends on the CPU: onnxruntime's x86 int8 kernels multiply u8 activations by s8
weights. Without VNNI (AVX2-only x86: AMD EPYC before Zen 4, older Xeons) the instruction
used (`vpmaddubsw`) adds pairs of products into 16 bits, which saturates when both
activations are large and weights reach the full 8-bit range: a model calibrated and checked
on a VNNI machine can lose accuracy silently on such a server (measured on an AMD EPYC: the
largest output error was 48% of the output scale instead of under 25%). Quantizing weights
to 7 bits (`reduce_range`) keeps every pair sum below 2**15 (255 * 64 * 2 = 32640). VNNI
(`vpdpbusd`) and ARM (`sdot`) accumulate in 32 bits and need no such care.

Why oneDNN depends on the CPU: TensorFlow turns its oneDNN kernels on by itself only on
x86 CPUs with AVX512_VNNI, AVX_VNNI, AVX512_BF16 or AMX. On an AVX2-only server (AMD EPYC
before Zen 4, Intel before Cascade Lake) it runs its own Eigen kernels, and a DARTS supernet
step ran at less than half the speed (AMD EPYC, same sitting: DARTS C8 L5 B32 search step
7.56 img/s with TensorFlow's default, 17.1 with oneDNN on; NB201 C16 N5 B64 11.8 -> 20.1).
`configure()` runs when `tfnas` is imported, before TensorFlow: it sets
`TF_ENABLE_ONEDNN_OPTS=1` on such CPUs unless the user set that variable (any value is kept)
or opted out with `TFNAS_CPU_DEFAULTS=0`. Threads are left to TensorFlow: its oneDNN build
runs on TensorFlow's own thread pool (intra-op threads = cores), so OpenMP variables change
nothing. The numerics under each setting: `tools/cpu_report.py --check_numerics`
(tfnas.ops.numerics).

No TensorFlow import here: `tools/cpu_report.py` prints it before anything heavy loads.
"""

import os
import platform
import sys

from tfnas.errors import UsageError

INT8_TARGETS = ("auto", "vnni", "avx2", "arm")
ISA = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16",
       "amx_int8", "amx_bf16", "asimd", "asimddp", "sve")


def _proc_cpuinfo(path="/proc/cpuinfo"):
    """(vendor, model name, flags) from the first processor of /proc/cpuinfo ('' and an empty
    set where it cannot be read: another OS)."""
    vendor, model, flags = "", "", set()
    try:
        with open(path) as f:
            for line in f:
                key, _, value = line.partition(":")
                key, value = key.strip().lower(), value.strip()
                if key == "vendor_id" and not vendor:
                    vendor = value
                elif key in ("model name", "hardware", "cpu model") and not model:
                    model = value
                elif key in ("flags", "features") and not flags:
                    flags = set(value.split())
                elif not line.strip() and flags:
                    break
    except OSError:
        pass
    return vendor, model, flags


def cpu_info(path="/proc/cpuinfo"):
    """{"machine", "vendor", "model", "cores", "isa": {feature: bool}} of this machine."""
    vendor, model, flags = _proc_cpuinfo(path)
    return {"machine": platform.machine(), "vendor": vendor,
            "model": model or platform.processor() or "unknown", "cores": os.cpu_count(),
            "isa": {name: name in flags for name in ISA}}


# where TensorFlow turns oneDNN on by itself (module docstring)
ONEDNN_BY_TENSORFLOW = ("avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "amx_bf16")
OPT_OUT = "TFNAS_CPU_DEFAULTS"
_DECISION = {}


def onednn_decision(env=None, info=None, tensorflow_loaded=None):
    """What tfnas does about oneDNN here: {"set": "1" or None, "by": "user" | "tfnas" |
    "tensorflow" | "opt-out" | "too late", "reason": a sentence}. Pure: `configure` applies it.
    """
    env = os.environ if env is None else env
    loaded = "tensorflow" in sys.modules if tensorflow_loaded is None else tensorflow_loaded
    if env.get("TF_ENABLE_ONEDNN_OPTS") is not None:
        return {"set": None, "by": "user",
                "reason": f"TF_ENABLE_ONEDNN_OPTS={env['TF_ENABLE_ONEDNN_OPTS']} set by the user"}
    if env.get(OPT_OUT, "").strip().lower() in ("0", "false", "no", "off"):
        return {"set": None, "by": "opt-out", "reason": f"{OPT_OUT}={env[OPT_OUT]}: "
                "TensorFlow's own default"}
    info = info or cpu_info()
    isa = info["isa"]
    x86 = info["machine"].lower() in ("x86_64", "amd64")
    if not x86 or not (isa.get("avx2") and isa.get("fma")):
        return {"set": None, "by": "tensorflow",
                "reason": "not an AVX2 x86 CPU: TensorFlow's own default"}
    if any(isa.get(f) for f in ONEDNN_BY_TENSORFLOW):
        return {"set": None, "by": "tensorflow",
                "reason": "TensorFlow turns oneDNN on by itself on this CPU"}
    if loaded:
        return {"set": None, "by": "too late", "reason": "TensorFlow was imported before "
                "tfnas: oneDNN stays off on this AVX2 CPU (import tfnas first, or set "
                "TF_ENABLE_ONEDNN_OPTS=1)"}
    return {"set": "1", "by": "tfnas", "reason": "AVX2 x86 CPU without VNNI/BF16/AMX: "
            "TensorFlow would leave oneDNN off; tfnas turns it on (2x the step speed)"}


def configure(env=None, info=None, tensorflow_loaded=None):
    """Applies `onednn_decision()` to the environment (default this process's) once, before
    TensorFlow is imported (`import tfnas` calls it); returns the decision."""
    if env is not None:  # another environment: decided afresh, nothing remembered
        decision = onednn_decision(env, info, tensorflow_loaded)
        if decision["set"] is not None:
            env["TF_ENABLE_ONEDNN_OPTS"] = decision["set"]
        return decision
    if not _DECISION:
        _DECISION.update(configure(os.environ, info, tensorflow_loaded))
    return dict(_DECISION)


def onednn_active():
    """Whether TensorFlow's oneDNN kernels are on in this process (imports TensorFlow)."""
    from tensorflow.python.util import _pywrap_util_port  # pylint: disable=import-outside-toplevel
    return bool(_pywrap_util_port.IsMklEnabled())


def runtime_settings():
    """The environment that changes TensorFlow's CPU kernels and threads, and what tfnas
    decided about oneDNN (`tfnas_onednn`)."""
    names = ("TF_ENABLE_ONEDNN_OPTS", "ONEDNN_MAX_CPU_ISA", OPT_OUT, "OMP_NUM_THREADS",
             "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")
    out = {n: os.environ.get(n) for n in names}
    if out["TF_ENABLE_ONEDNN_OPTS"] is None:
        out["TF_ENABLE_ONEDNN_OPTS"] = ("unset: TensorFlow turns oneDNN on by itself only on "
                                        "CPUs with AVX512_VNNI, AVX_VNNI, AVX512_BF16 or AMX")
    decision = _DECISION or onednn_decision()
    out["tfnas_onednn"] = f"{decision['by']}: {decision['reason']}"
    if "tensorflow" in sys.modules:
        out["onednn_active"] = onednn_active()
    return out


def int8_target(requested="auto", info=None):
    """The int8 target `requested` resolves to: "auto" is this machine's (`info`: a
    `cpu_info()`, default this machine).

    Raises:
        UsageError: an unknown target.
    """
    if requested not in INT8_TARGETS:
        raise UsageError(f"--int8_target={requested!r} is invalid: expected one of "
                         f"{', '.join(INT8_TARGETS)}")
    if requested != "auto":
        return requested
    info = info or cpu_info()
    if info["machine"].lower() in ("aarch64", "arm64") or info["isa"].get("asimd"):
        return "arm"
    isa = info["isa"]
    return "vnni" if isa.get("avx512_vnni") or isa.get("avx_vnni") or isa.get("amx_int8") \
        else "avx2"


def int8_settings(target):
    """The quantization settings of each int8 format for a resolved `target`."""
    return {
        "onnx": {"format": "QDQ", "per_channel": True, "activation_type": "QInt8",
                 "weight_type": "QInt8",
                 # 7-bit weights where u8 x s8 pair sums saturate 16 bits (module docstring)
                 "reduce_range": target == "avx2"},
        # TFLite's converter has no such option; its int8 kernels (XNNPACK / ruy) accumulate
        # in 32 bits on every target
        "tflite": {"scheme": "full integer (TFLITE_BUILTINS_INT8), per-channel weights, "
                             "float32 input and output"},
    }


def describe(info=None):
    """One line: 'Intel(R) Xeon(R) ... (x86_64; avx2 fma avx512f avx512_vnni ...)'."""
    info = info or cpu_info()
    flags = " ".join(k for k, v in info["isa"].items() if v) or "no listed ISA features"
    return f"{info['model']} ({info['machine']}, {info['cores']} cores; {flags})"
