"""Run the installed ``edgevision`` command and report what its process imported and mapped.

``python -m edgevision.emulation.inspect_run REPORT.json predict ARTIFACT ...`` calls the console
script's entry point (found through the installed distribution's metadata, as ``bin/edgevision``
does), then writes :func:`device_check.process_report` to REPORT.json -- whatever the exit code.
Used on the emulated Pi to prove ``predict`` and ``stream`` load no compiler, no torch, no onnx.
"""
from __future__ import annotations

import json
import sys
from importlib.metadata import distribution


def main(argv: list[str]) -> int:
    report_path, *args = argv
    entry = next(ep for ep in distribution("edgevision").entry_points
                 if ep.group == "console_scripts" and ep.name == "edgevision")
    code: object = 1
    sys.argv = ["edgevision", *args]
    try:
        code = entry.load()()
    except SystemExit as done:
        code = done.code
    finally:
        from .device_check import process_report

        with open(report_path, "w") as fh:
            json.dump({"exit": code if isinstance(code, int) else 1, **process_report()}, fh)
    return code if isinstance(code, int) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
