"""Prints what a run's numbers depend on: the CPU model and ISA features, the oneDNN and
thread settings, and the int8 target `tfnas export --int8_target=auto` picks here.

    python tools/cpu_report.py          # text
    python tools/cpu_report.py --json   # one JSON object (what parity.json / profile.json hold)
    python tools/cpu_report.py --check_numerics   # every op's outputs and gradients under
        # this process's settings and under oneDNN's AVX2 kernels, against oneDNN off
        # (TensorFlow's Eigen kernels); exit status 1 if one differs beyond the tolerance
"""

import json
import sys

from tfnas.cpuinfo import cpu_info, describe, int8_settings, int8_target, runtime_settings


SETTINGS = {"oneDNN off (reference)": {"TF_ENABLE_ONEDNN_OPTS": "0"},
            "oneDNN on, AVX2 kernels": {"TF_ENABLE_ONEDNN_OPTS": "1",
                                        "ONEDNN_MAX_CPU_ISA": "AVX2"}}


def check_numerics():
    """Prints the worst relative difference per op and setting; 0 if all within tolerance."""
    from tfnas import numerics
    from tfnas.cpuinfo import onednn_active
    ref = numerics.results_in_subprocess(SETTINGS["oneDNN off (reference)"])
    runs = {f"this process (oneDNN {'on' if onednn_active() else 'off'})": numerics.results(),
            "oneDNN on, AVX2 kernels": numerics.results_in_subprocess(
                SETTINGS["oneDNN on, AVX2 kernels"])}
    failed = 0
    for label, got in runs.items():
        worst = numerics.worst_per_op(numerics.compare(got, ref))
        print(f"{label} against oneDNN off (tolerance {numerics.TOLERANCE:g} of the largest "
              "value):")
        for group, (err, array) in sorted(worst.items()):
            bad = err > numerics.TOLERANCE
            failed += bad
            print(f"  {group:<24} {err:.2e} ({array}){'  BEYOND TOLERANCE' if bad else ''}")
    return 1 if failed else 0


def main(argv):
    info = cpu_info()
    target = int8_target("auto", info)
    report = {"cpu": info, "runtime_settings": runtime_settings(), "int8_target": target,
              "int8_settings": int8_settings(target)}
    if "--check_numerics" in argv:
        return check_numerics()
    if "--json" in argv:
        print(json.dumps(report, indent=1))
        return 0
    print(f"cpu: {describe(info)}")
    for k, v in report["runtime_settings"].items():
        print(f"{k}: {v if v is not None else 'unset'}")
    print(f"int8 target (auto): {target}; ONNX reduce_range="
          f"{report['int8_settings']['onnx']['reduce_range']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
