"""The TVM wing: everything edgevision knows about Apache TVM lives in this package.

* :mod:`.backend` the ``Backend`` (load a library with the runtime only, its CLI flags, its hooks)
* :mod:`.cpu` the CPU features a library needs, checked against /proc/cpuinfo; ELF architecture
* :mod:`.build` ONNX -> Relax -> library (compile side, workstation only)
* :mod:`.tuning` MetaSchedule tuning (--tune, --tuning-log, tune_rpc) and its database
* :mod:`.schedule` the default schedule search when nothing is tuned
* :mod:`.kernels` the static report of how the library runs its multiply-accumulates
* :mod:`.remote` timing on a board over TVM RPC; :mod:`.emulated_board` a stand-in board under qemu
* :mod:`.conformance` the runner for ONNX's node cases and the cases TVM is known to fail

Importing this package is cheap: TVM itself is imported inside functions.
"""
from .backend import BACKEND, TvmBackend, TvmRunner, import_runtime, runtime_threads
from .cpu import CPUINFO_FLAGS, elf_machine, missing_cpu_features

__all__ = ["BACKEND", "TvmBackend", "TvmRunner", "import_runtime", "runtime_threads", "CPUINFO_FLAGS",
           "elf_machine", "missing_cpu_features"]
