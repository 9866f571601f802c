"""TVM compile side: ONNX import, tuning and default schedules (.tuning, .schedule), codegen and export.

Only the workstation imports this module; devices load the exported library with the runtime.
"""
from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import BackendUnavailable, EdgevisionError, InputError
from .cpu import CPUINFO_FLAGS
from .kernels import report
from .schedule import default_search, strategy_name
from .tuning import Progress, TuningOptions, tuning_database, log_targets, tune

if TYPE_CHECKING:
    from ..base import CompileSettings
    from ...targets import Target

log = logging.getLogger(__name__)


def host_mcpu() -> str:
    """LLVM's name for this CPU (e.g. znver4), so host builds use every instruction it has."""
    from tvm.target import codegen

    return str(codegen.llvm_get_system_cpu())


def tvm_target_dict(target: "Target", threads: int | None = None) -> dict[str, Any]:
    """The target's ``tvm_target`` option, or this host's CPU when it has none (0.27 takes dicts only)."""
    spec = dict(target.options.get("tvm_target") or {"kind": "llvm"})
    spec.setdefault("kind", "llvm")
    if "mtriple" not in spec and spec.get("mcpu", "host") == "host":
        spec["mcpu"] = host_mcpu()
    cores = threads or target.threads or (os.cpu_count() if "mtriple" not in spec else None)
    if cores:
        spec["num-cores"] = int(cores)
    return spec


def cpu_features(tvm_target: Any) -> list[str]:
    """The instruction-set extensions LLVM may emit for this target, as the loader checks them."""
    from tvm.target import codegen


    return sorted(str(f) for f in codegen.llvm_get_cpu_features(tvm_target) if str(f) in CPUINFO_FLAGS)


def _cross_compiler(target: "Target") -> Any:
    compiler = target.options.get("cross_compiler")
    if not compiler:
        return None
    from tvm.support import cc

    return cc.cross_compiler(compiler)


def _fold_shape_arithmetic(onnx_path: Path, work_dir: Path) -> Path:
    """TVM's ONNX importer rejects shape-computed Pad/Reshape arguments (EfficientNet's TF-style
    'same' padding). With the input shape fixed, ONNX Runtime's basic (hardware-independent) graph
    optimisations fold that arithmetic into constants; the graph is otherwise the same."""
    try:
        import onnxruntime as ort
    except ImportError:
        log.info("onnxruntime missing: importing the ONNX graph into TVM as exported")
        return onnx_path
    folded = work_dir / "static.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    options.log_severity_level = 3
    ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return folded


def fused_kernels(mod: Any, tvm_target: Any) -> Any:
    """The imported graph legalized and fused: the PrimFuncs every schedule source is keyed by."""
    import tvm
    from tvm import relax

    with tvm_target:
        return tvm.transform.Sequential([relax.transform.DecomposeOpsForInference(),
                                         relax.transform.CanonicalizeBindings(),
                                         relax.get_pipeline("zero")])(mod)


def compile_onnx(onnx_path: Path, target: "Target", settings: "CompileSettings", out_file: Path,
                 tuning: TuningOptions, progress: Progress | None = None) -> dict[str, Any]:
    """Import, (tune,) build and export one library; returns the manifest payload."""
    step = progress or (lambda msg: log.info("%s", msg))
    try:
        import onnx
        import tvm
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx
    except ImportError as err:
        raise BackendUnavailable(f"compiling with TVM needs apache-tvm and onnx ({err})",
                                 "pip install 'edgevision[tvm,compile]'") from err
    if getattr(tvm.base, "_RUNTIME_ONLY", False):
        raise BackendUnavailable("this TVM install has only the runtime, it cannot compile",
                                 "unset TVM_USE_RUNTIME_LIB or install the full apache-tvm wheel")
    if tuning.rpc is not None and tuning.trials == 0:
        raise InputError("tune_rpc was given without a tuning budget", "add --tune TRIALS")

    target_spec = tvm_target_dict(target, settings.threads)
    tvm_target = tvm.target.Target(target_spec)
    shape = [int(d) for d in settings.input_shape]
    with tempfile.TemporaryDirectory(prefix="edgevision-tvm-") as tmp:
        graph = onnx.load(str(_fold_shape_arithmetic(onnx_path, Path(tmp))))
    mod = from_onnx(graph, shape_dict={settings.input_name: shape}, keep_params_in_input=False)

    mod = fused_kernels(mod, tvm_target)
    # Weights may be repacked for a schedule (.blocked_conv, MetaSchedule's RewriteLayout): marked
    # before any schedule source sees the kernels, since the mark is part of their workload keys.
    mark_layout_free = relax.transform.AttachAttrLayoutFreeBuffers()
    tuning_record: dict[str, Any] = {"trials": 0}
    sources: list[dict[str, Any]] = []
    log_dir = tuning.log_dir
    database = None
    with tempfile.TemporaryDirectory(prefix="edgevision-tune-") as scratch:
        if tuning.trials != 0 or log_dir is not None:
            work_dir = Path(log_dir) if log_dir is not None else Path(scratch)
            if tuning.trials != 0:
                work_dir.mkdir(parents=True, exist_ok=True)
                tuning_record = tune(mark_layout_free(mod), tvm_target, tuning, work_dir, step, target_spec.get("num-cores"))
            elif not (work_dir / "database_tuning_record.json").is_file():
                raise InputError(f"tuning log {work_dir} has no database_tuning_record.json",
                                 "point --tuning-log at a folder written by --tune, or add --tune TRIALS")
            database = tuning_database(work_dir)
            applied = len(database)
            with tvm_target, database:  # logs written before the mark first, then the marked kernels
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
                mod = relax.transform.MetaScheduleApplyDatabase()(mark_layout_free(mod))
            tuning_record.update({"records": applied, "log": str(log_dir) if log_dir else None})
            step(f"applied {applied} tuning records")
            if tuning.trials != 0:
                sources.append({"strategy": "tuned on device" if tuning.rpc else "tuned on this host",
                                "runner": tuning_record["runner"], "trials": tuning_record["trials"],
                                "records": applied})
            else:
                sources.append({"strategy": "tuning log", "log": str(log_dir), "records": applied,
                                "log_targets": log_targets(work_dir)})
    mod = mark_layout_free(mod)  # a pass over marked kernels leaves them as they are
    if tuning.default_search_trials > 0:
        default_db, default_record = default_search(mod, tvm_target, target_spec, tuning.default_search_trials,
                                                     database, step, tuning.seed)
        if default_record["tasks_searched"]:
            with tvm_target, default_db:
                mod = relax.transform.MetaScheduleApplyDatabase()(mod)
            sources.append(default_record)
    # the weight repacking of the applied schedules is folded into the constants at compile time,
    # so the library's interface stays the model's
    mod = tvm.transform.Sequential([relax.transform.SplitLayoutRewritePreproc(),
                                    relax.transform.FoldConstant()])(mod)
    kernels_mod = mod

    step(f"building for {target_spec.get('mtriple', 'this host')} ({target_spec.get('mcpu', 'generic')})")
    executable = tvm.compile(mod, target=tvm_target)
    fcompile = _cross_compiler(target)
    try:
        if fcompile is None:
            executable.export_library(str(out_file))
        else:
            executable.export_library(str(out_file), fcompile=fcompile)
    except Exception as err:  # the C++ toolchain reports through RuntimeError/TVMError
        raise EdgevisionError(f"linking the TVM library failed: {str(err).splitlines()[0]}",
                              "check the (cross) compiler install, e.g. apt-get install g++-aarch64-linux-gnu") from err
    kernels = report(kernels_mod, out_file, target_spec.get("mtriple", "").split("-")[0] or None).to_dict()
    step(f"{kernels['share']:.0%} of {kernels['macs'] / 1e6:.0f} M multiply-accumulates in parallel, "
         f"vectorized loops" + (" (checked in the machine code)" if kernels["binary_checked"] else ""))
    return {"library": out_file.name, "entry": "main", "tvm_target": target_spec,
            "cpu_features": cpu_features(tvm_target),
            "cross_compiler": target.options.get("cross_compiler"), "tuning": tuning_record,
            "schedule": {"strategy": strategy_name(sources), "sources": sources}, "kernels": kernels}
