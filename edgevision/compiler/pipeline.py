"""compile = load source -> export ONNX -> backend compile -> accuracy gate -> one artifact file."""
from __future__ import annotations

import datetime as _dt
import logging
import platform
import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..artifact import Manifest, SigningKey, TensorSpec, payload_digest, write_artifact
from ..artifact.package import hash_payload_dir
from ..artifact.manifest import AccuracyReport
from ..backends import CompileSettings, LoadOptions, get_backend
from ..diagnostics import translated
from ..errors import AccuracyGateFailed, BackendUnavailable, InputError
from ..files import atomic_output, refuse_overwriting_inputs
from ..targets import Target, get_target
from . import gate
from .export import INPUT_NAME, OUTPUT_NAME, export_onnx
from .sources import load_source
from .spec import ModelSpec

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass
class CompileRequest:
    model: str | None = None  # None: the bundled default model
    target: str = "onnxruntime-cpu"
    output: Path | None = None
    precision: str | None = None  # None: the target's default
    arch: str | None = None
    dynamic_batch: bool = False
    input_size: tuple[int, int] | None = None
    labels_file: Path | None = None
    val_dir: Path | None = None
    gate: bool = True
    min_agreement: float | None = None
    accuracy_report: Path | None = None
    trust_remote_code: bool = False
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # backend and precision flags
    signer: SigningKey | None = None  # sign the artifact as it is written (edgevision.artifact.SigningKey)


@dataclass(frozen=True)
class CompileResult:
    path: Path
    manifest: Manifest


def _labels(spec: ModelSpec, request: CompileRequest, classes: int) -> list[str]:
    if request.labels_file is not None:
        try:
            labels = [ln.strip() for ln in Path(request.labels_file).read_text().splitlines() if ln.strip()]
        except OSError as err:
            raise InputError(f"cannot read labels file {request.labels_file}", "pass a text file, one label a line") from err
    elif spec.labels is not None:
        labels = list(spec.labels)
    elif classes == 1000:
        from ..models import imagenet_labels
        labels = imagenet_labels()
    else:
        labels = [f"class_{i}" for i in range(classes)]
    if len(labels) != classes:
        raise InputError(f"{len(labels)} labels for a model with {classes} outputs",
                         "pass a labels file with one line per class")
    return labels


def _reference(spec: ModelSpec, onnx_path: Path) -> tuple[str, gate.Predict]:
    if spec.module is not None:
        import torch

        def predict(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return spec.module(torch.from_numpy(x)).numpy()
        return "torch", predict
    return "onnxruntime (source ONNX)", _onnxruntime_predict(onnx_path)


def _onnxruntime_predict(onnx_path: Path) -> gate.Predict:
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise BackendUnavailable("the accuracy gate needs ONNX Runtime as its reference",
                                 "pip install 'edgevision[compile]'") from err
    options = ort.SessionOptions()
    options.log_severity_level = 4  # its failure comes back as one line below, not as an extra log line
    with translated("onnxruntime", "run this ONNX model (the accuracy gate's reference)"):
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def _toolchain(backend_name: str, backend_version: str | None) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version(), "edgevision": __version__,
             backend_name: backend_version or "not installed"}
    for pkg in ("torch", "onnx", "onnxruntime"):
        try:
            found.setdefault(pkg, version(pkg))
        except PackageNotFoundError:
            pass
    return found


def _precision(target: Target, requested: str | None) -> str:
    precision = requested or target.default_precision
    if precision not in target.precisions:
        raise InputError(f"target {target.name} does not support precision {precision}",
                         f"choose one of {', '.join(target.precisions)}")
    return precision


def _check_options(options: dict[str, Any], target: Target, backend: Any, precision: str) -> None:
    """Every option must be read by someone: the backend, or the quantizer at int8. A key nobody reads
    (a typo, --tune for a backend that does not tune) would otherwise be dropped in silence."""
    unknown = sorted(set(options) - backend.option_keys)
    if not unknown:
        return
    from ..quantize import OPTION_KEYS as QUANTIZE_KEYS

    if precision == "int8":
        unknown = [key for key in unknown if key not in QUANTIZE_KEYS]
    for key in unknown:
        if key in QUANTIZE_KEYS:
            raise InputError(f"option {key} is used only with --precision int8, not {precision}",
                             "add --precision int8 or drop it")
        from ..backends import get_backend as backend_named
        from ..targets import available_targets

        takers = []
        for name, other in sorted(available_targets().items()):
            try:
                if key in backend_named(other.backend).option_keys:
                    takers.append(name)
            except Exception:  # a target whose backend plugin is missing takes nothing here
                continue
        takes = ", ".join(sorted(backend.option_keys)) or "no options"
        where = f"; it applies to {', '.join(takers)}" if takers else ""
        raise InputError(f"option {key} is not used by target {target.name} ({backend.name}), which takes {takes}",
                         f"drop it{where}")


def _input_files(request: CompileRequest) -> dict[str, Path | None]:
    """What compile reads, to make sure no output overwrites it."""
    found: dict[str, Path | None] = {"--labels": request.labels_file}
    for flag, ref in (("the model", request.model), ("--arch", request.arch)):
        if ref:
            found[flag] = Path(ref)
            file_part = ref.rsplit(":", 1)[0]  # module.py:factory
            if file_part != ref:
                found[f"{flag} file"] = Path(file_part)
    calib = request.options.get("calib")
    found["--calib"] = Path(calib) if calib else None
    return found


def compile_model(request: CompileRequest, progress: Progress | None = None) -> CompileResult:
    step = progress or (lambda msg: log.info("%s", msg))
    target = get_target(request.target)
    backend = get_backend(target.backend)
    precision = _precision(target, request.precision)
    if request.min_agreement is not None and not 0.0 <= request.min_agreement <= 1.0:
        raise InputError(f"min_agreement {request.min_agreement} is not between 0 and 1", "pass e.g. 0.95")
    if request.threads is not None and request.threads < 1:
        raise InputError(f"threads must be at least 1, not {request.threads}", "or leave it out")
    _check_options(request.options, target, backend, precision)
    refuse_overwriting_inputs({"-o/--output": request.output, "--accuracy-report": request.accuracy_report},
                              _input_files(request))
    missing = backend.compile_requirements(target)
    if missing:
        raise BackendUnavailable(f"cannot compile for {target.name} with {backend.name} here", "; ".join(missing))

    step("loading model")
    spec = load_source(request.model, arch=request.arch, trust_remote_code=request.trust_remote_code)
    if request.input_size is not None:
        h, w = request.input_size
        spec.preprocess = replace(spec.preprocess, input_size=(h, w), resize_short=round(min(h, w) / 0.875))
    if target.static_shapes and request.dynamic_batch:
        raise InputError(f"target {target.name} needs static shapes", "compile without --dynamic-batch")
    out_path = Path(request.output or f"{spec.name}.{target.name}.evpkg")
    inputs = {**_input_files(request), "the ONNX model": Path(spec.onnx_path) if spec.onnx_path else None}
    refuse_overwriting_inputs({"the artifact": out_path, "--accuracy-report": request.accuracy_report}, inputs)

    with tempfile.TemporaryDirectory(prefix="edgevision-compile-") as tmp:
        work = Path(tmp)
        if spec.onnx_path is not None:
            onnx_path = Path(spec.onnx_path)
        else:
            step("exporting to ONNX")
            onnx_path = export_onnx(spec, work / "model.onnx", dynamic_batch=request.dynamic_batch)
        float_onnx = onnx_path

        step("reading validation images")
        val_inputs = gate.validation_tensors(spec.preprocess, request.val_dir)
        ref_name, ref_predict = _reference(spec, float_onnx)
        ref_batch = len(val_inputs) if request.dynamic_batch else 1
        reference = gate.run_batched(ref_predict, val_inputs, ref_batch)
        labels = _labels(spec, request, reference.shape[1])

        settings = CompileSettings(precision=precision, dynamic_batch=request.dynamic_batch,
                                   threads=request.threads, input_name=INPUT_NAME,
                                   input_shape=spec.preprocess.tensor_shape("batch" if request.dynamic_batch else 1),
                                   options=request.options, progress=step)
        onnx_path, quantization = _apply_precision(onnx_path, spec, request, settings, work, step)

        step(f"compiling for {target.name} with {backend.name} {backend.version() or ''}".rstrip())
        payload_dir = work / "payload"
        payload_dir.mkdir()
        with translated(backend.name, f"compile this model for {target.name}"):
            payload = backend.compile(onnx_path, target, settings, payload_dir)
        if quantization:
            payload["quantization"] = quantization

        manifest = Manifest(
            model_name=spec.name, target=target, backend=backend.name,
            backend_version=backend.version() or "not installed", precision=precision,
            input=TensorSpec(INPUT_NAME, settings.input_shape, "float32", spec.preprocess.layout),
            output=TensorSpec(OUTPUT_NAME, ("batch" if request.dynamic_batch else 1, len(labels)), "float32", "NC"),
            preprocess=spec.preprocess, labels=labels, payload=payload,
            toolchain=_toolchain(backend.name, backend.version()),
            created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            host={"machine": platform.machine(), "system": platform.system(), "node_cpu": platform.processor()},
            source=spec.source)

        comparison = None
        if request.gate:
            step("checking accuracy against the original")
            manifest.accuracy, comparison = _gate(backend, target, manifest, payload_dir, onnx_path, val_inputs,
                                                  reference, ref_name, request, precision, labels, batch=ref_batch)
            # Bind the record to what it measured: a payload swapped in later no longer matches it.
            manifest.accuracy = replace(manifest.accuracy,
                                        payload_sha256=payload_digest(hash_payload_dir(payload_dir)[0]))
        step(f"writing {out_path}")
        write_artifact(manifest, payload_dir, out_path, signer=request.signer)
        if request.accuracy_report is not None and comparison is not None:
            # Only once the gate passed and the artifact exists: a failed gate writes nothing.
            with atomic_output(Path(request.accuracy_report)) as tmp:
                gate.write_report(comparison, labels, tmp)
    return CompileResult(path=out_path, manifest=manifest)


def _apply_precision(onnx_path: Path, spec: ModelSpec, request: CompileRequest, settings: CompileSettings,
                     work: Path, step: Progress) -> tuple[Path, dict[str, Any]]:
    """INT8: calibrate and rewrite the float graph as QDQ ONNX. fp16/bf16 are the backend's business."""
    if settings.precision != "int8":
        return onnx_path, {}
    from ..quantize import quantize_for_compile

    return quantize_for_compile(onnx_path, spec.preprocess, settings.input_name, request.options, work, step,
                                backend=get_backend(get_target(request.target).backend))


def _gate(backend: Any, target: Target, manifest: Manifest, payload_dir: Path, onnx_path: Path,
          val_inputs: np.ndarray, reference: np.ndarray, ref_name: str, request: CompileRequest,
          precision: str, labels: list[str], batch: int) -> tuple[AccuracyReport, gate.Comparison]:
    threshold = request.min_agreement if request.min_agreement is not None else gate.DEFAULT_THRESHOLDS[precision]
    can_run, why = backend.can_run(target)
    if can_run:
        with translated(backend.name, "load the compiled model"):
            runner = backend.load(payload_dir, manifest, LoadOptions())
        candidate_name, predict, note = f"{backend.name} {target.device} {precision}", runner.run, ""
        executed = getattr(runner, "executed_precision", None)
        if precision in ("fp16", "bf16") and executed not in (None, precision):
            # The gate reports what it measured: this host ran the fallback, not the requested precision.
            candidate_name += f" (ran as {executed})"
            note = f"this host's {target.device} has no native {precision} and ran {executed}; verify on the device"
    else:
        # The payload cannot execute here; check what can be checked: the exported graph itself.
        candidate_name = f"onnxruntime on the exported {'QDQ ' if precision == 'int8' else ''}ONNX"
        predict = _onnxruntime_predict(onnx_path)
        note = f"compiled payload not executed on this host ({why}); verify on the device"
        emulated = manifest.payload.get("device_check")  # a backend's own run under emulation (TVM rpi4)
        if emulated and emulated.get("passed"):
            note = (f"compiled payload not executed natively ({why}); under {emulated['device']} it matched "
                    f"{emulated['reference']} on {emulated['inputs']} photos (max|diff| "
                    f"{emulated['max_abs_diff']:.2g})")
    with translated(backend.name if can_run else "onnxruntime", "run the compiled model"):
        candidate = gate.run_batched(predict, val_inputs, batch)
    cmp = gate.compare(reference, candidate)
    report = gate.summarize(cmp, threshold, ref_name, candidate_name, note, gate.CRITERIA.get(precision, "top1"))
    log.info("accuracy gate: top-1 %.1f%%, top-5 %.1f%%, max|diff| %.3g",
             100 * report.top1_agreement, 100 * report.top5_agreement, report.max_abs_diff)
    try:
        gate.enforce(report)
    except AccuracyGateFailed as err:
        if precision != "int8":
            raise
        from ..quantize import GATE_FIX
        raise AccuracyGateFailed(err.problem, GATE_FIX) from None
    return report, cmp
