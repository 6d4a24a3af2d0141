"""Prints what a run's numbers depend on: the CPU model and ISA features, the oneDNN and
thread settings, and the int8 target `tfnas export --int8_target=auto` picks here.

    python tools/cpu_report.py          # text
    python tools/cpu_report.py --json   # one JSON object (what parity.json / profile.json hold)
"""

import json
import sys

from tfnas.cpuinfo import cpu_info, describe, int8_settings, int8_target, runtime_settings


def main(argv):
    info = cpu_info()
    target = int8_target("auto", info)
    report = {"cpu": info, "runtime_settings": runtime_settings(), "int8_target": target,
              "int8_settings": int8_settings(target)}
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
