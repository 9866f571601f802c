"""What a TVM library needs from a CPU: the instruction-set extensions it was compiled to use, checked
against /proc/cpuinfo, and the architecture an ELF library was built for (read without loading it)."""
from __future__ import annotations

import platform
import re
from pathlib import Path

CPU_FEATURE = re.compile(r"^[a-z0-9][a-z0-9_.+-]{0,31}$")  # e.g. avx512bw, sse4.2, neon, fp-armv8
# ELF e_machine values, to say what a library was built for without loading it.
ELF_MACHINES = {0x3E: "x86_64", 0xB7: "aarch64", 0x28: "arm"}


# LLVM's name for an instruction-set extension -> the flag /proc/cpuinfo shows when a CPU has it.
# Only extensions generated code may execute; LLVM's tuning features (fast-*, slow-*) cannot fault.
CPUINFO_FLAGS = {
    "ssse3": "ssse3", "sse4.1": "sse4_1", "sse4.2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma",
    "f16c": "f16c", "bmi": "bmi1", "bmi2": "bmi2", "avx512f": "avx512f", "avx512bw": "avx512bw",
    "avx512dq": "avx512dq", "avx512vl": "avx512vl", "avx512cd": "avx512cd", "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16", "avx512fp16": "avx512_fp16", "avxvnni": "avx_vnni",
    "amx-tile": "amx_tile", "amx-int8": "amx_int8", "amx-bf16": "amx_bf16",
    "neon": "asimd", "dotprod": "asimddp", "fullfp16": "asimdhp", "i8mm": "i8mm", "sve": "sve",
}
CPUINFO = Path("/proc/cpuinfo")


def missing_cpu_features(required: list[str], cpuinfo: str | None = None) -> list[str]:
    """The extensions a library was compiled to use that this CPU lacks; [] when the CPU cannot be
    asked (no /proc/cpuinfo, or one that describes another architecture, as under qemu-user)."""
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text()
        except OSError:
            return []
    key = "Features" if platform.machine() in ("aarch64", "arm64") else "flags"
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() == key:
            have = set(value.split())
            return [feature for feature in required if CPUINFO_FLAGS.get(feature, feature) not in have]
    return []


def elf_machine(path: Path) -> str | None:
    """The architecture an ELF shared library was built for; None when it is not ELF."""
    with open(path, "rb") as fh:
        header = fh.read(20)
    if len(header) < 20 or header[:4] != b"\x7fELF":
        return None
    order = "little" if header[5] == 1 else "big"
    code = int.from_bytes(header[18:20], order)
    return ELF_MACHINES.get(code, f"e_machine {code:#x}")
