"""What a benchmark ran on, so a number can be reproduced or explained later."""
from __future__ import annotations

import datetime as _dt
import os
import platform
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from .. import __version__
from .results import HostInfo

LIBRARIES = ("numpy", "opencv-python-headless", "opencv-python", "onnxruntime", "openvino", "apache-tvm",
             "apache-tvm-ffi", "torch", "onnx", "nncf")
# Features that decide whether bf16/int8/fp16 kernels are fast on this CPU.
NOTABLE_FEATURES = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16",
                    "amx_bf16", "amx_int8", "asimd", "asimddp", "fphp", "i8mm", "bf16")


def _cpuinfo() -> tuple[str, set[str]]:
    model, flags = "", set()
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return platform.processor() or platform.machine(), flags
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model:
            model = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), flags


def cpu_model() -> str:
    """The CPU's model name, recorded beside every figure (the machine changes between sessions)."""
    return _cpuinfo()[0]


def _versions() -> dict[str, str]:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


def _load_average() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - not on every platform
        return []


def cpus_available() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - macOS has no affinity API
        return os.cpu_count() or 1


def host_info() -> HostInfo:
    model, flags = _cpuinfo()
    return HostInfo(cpu_model=model, machine=platform.machine(), system=platform.system(),
                    kernel=platform.release(), logical_cpus=os.cpu_count() or 1,
                    cpus_available=cpus_available(),
                    cpu_features=[f for f in NOTABLE_FEATURES if f in flags],
                    load_average=_load_average(), python=platform.python_version(), libraries=_versions(),
                    date_utc=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                    edgevision=__version__)
