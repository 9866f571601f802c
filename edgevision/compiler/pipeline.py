"""compile = load source -> export ONNX -> backend compile -> accuracy gate -> one artifact file."""
from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import platform
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import __version__
from ..artifact import Manifest, SigningKey, TensorSpec, payload_digest, write_artifact
from ..artifact.package import hash_payload_dir
from ..artifact.manifest import AccuracyReport
from ..backends import CompileSettings, LoadOptions, get_backend
from ..backends.base import nearest_name, options_to_json
from ..diagnostics import translated
from ..errors import AccuracyGateFailed, BackendError, BackendUnavailable, EdgevisionError, InputError
from ..files import atomic_output, refuse_overwriting_inputs
from ..preprocess import PreprocessConfig
from ..targets import Target, get_target
from . import auto_choice, gate
from .card import ModelCard, card_beside, card_from_dict, card_from_metadata, card_from_neighbours, read_card
from .export import export_onnx
from .onnx_graph import GraphIO, choose_output, fix_graph, inspect, load_onnx
from .onnx_graph import final_activation_path as final_activation_of
from .outputs import find_output, output_name, selecting
from .rewrite import applicable as applicable_rewrites
from .rewrite import apply as apply_rewrites
from .rewrite import check_names
from .sources import load_source
from .spec import ModelSpec

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


# The target a compile uses unless told otherwise: portable, and the fallback offered when a backend refuses a graph.
DEFAULT_TARGET = "onnxruntime-cpu"


@dataclass
class CompileRequest:
    model: str | None = None  # None: the bundled default model
    target: str = DEFAULT_TARGET
    output: Path | None = None
    precision: str | None = None  # None: the target's default
    arch: str | None = None
    dynamic_batch: bool = False
    input_size: tuple[int, int] | None = None
    labels_file: Path | None = None
    labels: list[str] | None = None  # inline labels (--labels 0,180)
    card: Path | None = None  # model card TOML; None: MODEL.card.toml beside the model, when present
    card_fields: dict[str, Any] = field(default_factory=dict)  # card fields given as flags (win over the card)
    model_output: str | int | None = None  # which output is the classifier's: name or index
    rewrites: tuple[str, ...] = ()  # graph rewrites (compiler/rewrite.py) applied before the backend
    val_dir: Path | None = None  # None: the bundled validation set; class sub-folders make it labelled
    gate: bool = True
    min_agreement: float | None = None  # margin-aware top-1 agreement (unlabelled folders)
    max_drop: float | None = None  # top-1 accuracy drop in points (labelled folders)
    gate_budget_s: float = 30.0  # the compiled model's share of the gate; a slow one runs an even subset
    accuracy_report: Path | None = None
    trust_remote_code: bool = False
    threads: int | None = None
    options: dict[str, Any] = field(default_factory=dict)  # backend and precision flags
    signer: SigningKey | None = None  # sign the artifact as it is written (edgevision.artifact.SigningKey)


@dataclass(frozen=True)
class CompileResult:
    path: Path
    manifest: Manifest


def _labels(spec: ModelSpec, card: ModelCard, classes: int) -> list[str]:
    if card.labels is not None:
        labels, where = list(card.labels), card.origin[-1] if card.origin else "the labels"
    elif spec.labels is not None:
        labels, where = list(spec.labels), "the model"
    elif classes == 1000:
        from ..models import imagenet_labels
        labels, where = imagenet_labels(), "ImageNet"
    else:
        labels, where = [f"class_{i}" for i in range(classes)], ""
    if len(labels) != classes:
        raise InputError(f"{len(labels)} labels (from {where}) for a model with {classes} outputs",
                         "pass --labels with one label per class (a file, or an inline list like 0,180)")
    return labels


def _request_card(request: CompileRequest) -> ModelCard:
    """The card fields given on the command line (or to CompileRequest), which win over every file."""
    fields_: dict[str, Any] = dict(request.card_fields)
    if request.input_size is not None:
        fields_["input_size"] = list(request.input_size)
    if request.labels is not None:
        fields_["labels"] = list(request.labels)
    elif request.labels_file is not None:
        fields_["labels"] = str(request.labels_file)
    if request.model_output is not None:
        fields_["output"] = request.model_output
    return card_from_dict(fields_, "command line")


def _model_card(spec: ModelSpec, request: CompileRequest, metadata: dict[str, str]) -> ModelCard:
    """Files beside the model < ONNX metadata < the card file < flags."""
    card = ModelCard()
    model_path = Path(spec.source["ref"]) if spec.source.get("ref") and Path(spec.source["ref"]).is_file() else None
    if model_path is not None:
        card = card.merged(card_from_neighbours(model_path))
    if metadata:
        card = card.merged(card_from_metadata(metadata, f"{spec.name} ONNX metadata"))
    card_path = request.card if request.card is not None else (card_beside(model_path) if model_path else None)
    if card_path is not None:
        card = card.merged(read_card(Path(card_path)))
    return card.merged(_request_card(request))


def _reference(spec: ModelSpec, onnx_path: Path, output: str) -> tuple[str, gate.Predict, int | None]:
    """The original model as a function, and the batch it takes (None: what the exported graph takes)."""
    if spec.module is not None:
        import torch

        def predict(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return spec.module(torch.from_numpy(x)).numpy()
        return "torch", predict, 16  # eager torch takes any batch, and batches are much faster
    return "onnxruntime (source ONNX)", _onnxruntime_predict(onnx_path, output), None


def _run_reference(spec: ModelSpec, float_onnx: Path, output: str, valset: gate.ValidationSet, batch: int,
                   where: str) -> tuple[str, np.ndarray]:
    """The original's outputs on the validation set (what every precision is gated against), and its name."""
    ref_name, ref_predict, ref_batch = _reference(spec, Path(spec.onnx_path) if spec.onnx_path else float_onnx,
                                                  output)
    try:
        reference = gate.run_batched(ref_predict, valset.tensors, ref_batch or batch)
    except Exception:  # a module written for batch 1 (a reshape with a fixed size): one input at a time
        if not ref_batch:
            raise
        reference = gate.run_batched(ref_predict, valset.tensors, batch)
    _check_output(reference, output, where)
    return ref_name, reference


def _onnxruntime_predict(onnx_path: Path, output: str | None = None) -> gate.Predict:
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
    outputs = [output] if output is not None else None
    return lambda x: session.run(outputs, {name: x})[0]


def _check_output(reference: np.ndarray, output: str, where: str) -> None:
    """The output contract: one row of class scores per image. Checked before anything is compiled."""
    if reference.ndim != 2 or reference.shape[1] < 1:
        raise InputError(f"{where}: output {output!r} has shape {list(reference.shape)} per batch, not N x classes; "
                         "edgevision compiles image classifiers",
                         "choose the class-score output with --model-output NAME|INDEX, or end the model in a "
                         "classifier head (pooling + linear)")


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


AUTO = "auto"
GATE_MIN_INPUTS = 64  # a slow candidate (untuned TVM) still runs at least this many validation inputs


def _precision(target: Target, requested: str | None) -> str:
    precision = requested or target.default_precision
    if precision == AUTO:
        return AUTO
    if precision not in target.precisions:
        raise InputError(f"target {target.name} does not support precision {precision}",
                         f"choose one of {', '.join(target.precisions)}")
    return precision


# Options the pipeline itself reads, whatever the backend: device_check=auto|on|off for cross targets.
CORE_OPTION_KEYS = frozenset({"device_check"})


def _check_options(options: dict[str, Any], target: Target, backend: Any, precision: str) -> None:
    """Every option must be read by someone: the backend, or the quantizer at int8. A key nobody reads
    (a typo, --tune for a backend that does not tune) would otherwise be dropped in silence."""
    unknown = sorted(set(options) - backend.option_keys - CORE_OPTION_KEYS)
    from ..quantize import OPTION_KEYS as QUANTIZE_KEYS
    from ..quantize import QuantizeOptions

    int8 = precision == "int8" or (precision == AUTO and "int8" in target.precisions)  # auto builds int8 too
    if int8:
        unknown = [key for key in unknown if key not in QUANTIZE_KEYS]
    if not unknown:
        # Every value is parsed (typed, one line for a bad one) before any work, not halfway through it.
        backend.parse_options(options)
        if int8:
            QuantizeOptions.from_options(options)
        return
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
        near = nearest_name(key, backend.option_keys | CORE_OPTION_KEYS) if not takers else None
        raise InputError(f"option {key} is not used by target {target.name} ({backend.name}), which takes {takes}",
                         f"did you mean {near}?" if near else f"drop it{where}")


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


def _checked_request(request: CompileRequest) -> tuple[Target, Any, str]:
    """The target, its backend and the precision, once everything that can be refused before any work is."""
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
    if precision == AUTO:
        can_run, why = backend.can_run(target)
        if not can_run:
            raise InputError(f"--precision auto times every precision on this host, and {target.name} cannot run "
                             f"here ({why})", f"choose one of {', '.join(target.precisions)}")
        if not request.gate:
            raise InputError("--precision auto keeps the fastest precision that passes the gate",
                             "drop --no-gate or choose a precision")
    return target, backend, precision


def compile_model(request: CompileRequest, progress: Progress | None = None) -> CompileResult:
    step = progress or (lambda msg: log.info("%s", msg))
    target, backend, precision = _checked_request(request)

    step("loading model")
    spec = load_source(request.model, arch=request.arch, trust_remote_code=request.trust_remote_code)
    rewrites = check_names(request.rewrites)
    if target.static_shapes and request.dynamic_batch:
        raise InputError(f"target {target.name} needs static shapes", "compile without --dynamic-batch")
    where = spec.source.get("ref") or spec.name
    io, source_model = None, None
    if spec.onnx_path is not None:
        source_model = load_onnx(Path(spec.onnx_path))
        io = inspect(source_model, where)
    card = _model_card(spec, request, io.metadata if io else {})
    if io is not None:
        io = inspect(source_model, where, layout=card.layout) if card.layout and card.layout != io.layout else io
        spec.preprocess = _onnx_preprocess(spec.preprocess, io, card, where)
    else:
        spec.preprocess = card.apply(spec.preprocess)
        spec.module, torch_output = _select_torch_output(spec, card.output, where)
    out_path = Path(request.output or f"{spec.name}.{target.name}.evpkg")
    inputs = {**_input_files(request), "the ONNX model": Path(spec.onnx_path) if spec.onnx_path else None}
    refuse_overwriting_inputs({"the artifact": out_path, "--accuracy-report": request.accuracy_report}, inputs)

    with tempfile.TemporaryDirectory(prefix="edgevision-compile-") as tmp:
        work = Path(tmp)
        if io is not None:
            output = choose_output(io, card.output, where)
            onnx_path = fix_graph(source_model, io, output, spec.preprocess.input_size, request.dynamic_batch,
                                  work / "model.source.onnx", where)
            del source_model
        else:
            step("exporting to ONNX")
            exported = export_onnx(spec, work / "model.export.onnx", dynamic_batch=request.dynamic_batch,
                                   output_name=torch_output)
            exported_model = load_onnx(exported)
            io = inspect(exported_model, where, layout=spec.preprocess.layout)
            output = choose_output(io, 0, where)
            onnx_path = fix_graph(exported_model, io, output, spec.preprocess.input_size, request.dynamic_batch,
                                  work / "model.source.onnx", where)
            del exported_model
        scores = card.scores or ("probabilities" if final_activation_of(onnx_path, output) else "logits")
        float_onnx = onnx_path

        step("reading validation images")
        valset = gate.load_validation(spec.preprocess, request.val_dir)
        batch = len(valset) if request.dynamic_batch else 1
        ref_name, reference = _run_reference(spec, float_onnx, output, valset, batch, where)
        labels = _labels(spec, card, reference.shape[1])
        gate.match_labels(valset, labels)

        if rewrites:
            step(f"rewriting the graph ({', '.join(rewrites)})")
            onnx_path, _ = apply_rewrites(onnx_path, rewrites, work / "model.rewritten.onnx")
        ctx = _Context(request, target, backend, spec, onnx_path, float_onnx, rewrites, io, output, scores, valset,
                       reference, ref_name, labels, batch, step)
        comparison = None
        if precision == AUTO:
            built, comparison = _auto(ctx, work)
        else:
            built = _build(ctx, precision, work / precision)
            if request.gate:
                step("checking accuracy against the original")
                built.manifest.accuracy, comparison = _gate(ctx, built)
                _bind(built)
        manifest = built.manifest
        _emulated_check(manifest, built.payload_dir, work / out_path.name, request, step)
        step(f"writing {out_path}")
        write_artifact(manifest, built.payload_dir, out_path, signer=request.signer)
        if request.accuracy_report is not None and comparison is not None:
            # Only once the gate passed and the artifact exists: a failed gate writes nothing.
            cmp, names = comparison
            with atomic_output(Path(request.accuracy_report)) as tmp:
                gate.write_report(cmp, labels, tmp, names)
    return CompileResult(path=out_path, manifest=manifest)


@dataclass
class _Context:
    """What every precision's build shares: the source graph, the validation set and the original's outputs."""

    request: CompileRequest
    target: Target
    backend: Any
    spec: ModelSpec
    onnx_path: Path  # the float graph the backend compiles (after rewrites)
    float_onnx: Path  # before rewrites: what error messages offer rewrites for
    rewrites: tuple[str, ...]
    io: GraphIO
    output: str
    scores: str
    valset: gate.ValidationSet
    reference: np.ndarray
    ref_name: str
    labels: list[str]
    batch: int
    step: Progress


@dataclass
class _Built:
    precision: str
    payload_dir: Path
    onnx_path: Path  # what the backend compiled (the QDQ model for int8)
    manifest: Manifest


def _bind(built: _Built) -> None:
    """Bind the gate record to what it measured: a payload swapped in later no longer matches it."""
    built.manifest.accuracy = replace(built.manifest.accuracy,
                                      payload_sha256=payload_digest(hash_payload_dir(built.payload_dir)[0]))


def _build(ctx: _Context, precision: str, work: Path) -> _Built:
    request, target, backend, spec, step = ctx.request, ctx.target, ctx.backend, ctx.spec, ctx.step
    work.mkdir(parents=True, exist_ok=True)
    settings = CompileSettings(precision=precision, dynamic_batch=request.dynamic_batch,
                               threads=request.threads, input_name=ctx.io.input_name,
                               input_shape=spec.preprocess.tensor_shape("batch" if request.dynamic_batch else 1),
                               options=request.options, progress=step)
    onnx_path, quantization = _apply_precision(ctx.onnx_path, spec, request, settings, work, step)

    step(f"compiling for {target.name} with {backend.name} {backend.version() or ''} ({precision})".rstrip())
    payload_dir = work / "payload"
    payload_dir.mkdir()
    try:
        with translated(backend.name, f"compile this model for {target.name}"):
            payload = backend.compile(onnx_path, target, settings, payload_dir)
    except BackendError as err:
        raise _with_alternatives(err, ctx.float_onnx, ctx.rewrites, backend.name, request) from err.__cause__
    if quantization:
        payload["quantization"] = quantization
    typed = backend.parse_options(request.options)
    if dataclasses.fields(typed):  # a backend with options records them typed; load reads them back typed
        payload["options"] = options_to_json(typed)
    if ctx.rewrites:
        payload["rewrites"] = list(ctx.rewrites)

    manifest = Manifest(
        model_name=spec.name, target=target, backend=backend.name,
        backend_version=backend.version() or "not installed", precision=precision,
        input=TensorSpec(ctx.io.input_name, settings.input_shape, spec.preprocess.input_dtype, spec.preprocess.layout),
        output=TensorSpec(ctx.output, ("batch" if request.dynamic_batch else 1, len(ctx.labels)), "float32", "NC"),
        preprocess=spec.preprocess, labels=ctx.labels, payload=payload,
        toolchain=_toolchain(backend.name, backend.version()),
        created=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        host={"machine": platform.machine(), "system": platform.system(), "node_cpu": platform.processor()},
        source=spec.source, scores=ctx.scores)

    if target.arch != platform.machine():
        # A cross target carries the x86 reference logits of real photos, to verify it on the device.
        from ..emulation.verify import probe_for_compile

        manifest.payload.update(probe_for_compile(onnx_path, manifest, payload_dir))
    return _Built(precision, payload_dir, onnx_path, manifest)


def _emulated_check(manifest: Manifest, payload_dir: Path, candidate: Path, request: CompileRequest,
                    step: Progress) -> None:
    """Run the artifact on its emulated device (qemu for aarch64 targets that name a qemu_cpu), through
    the installed package from the probe's photos; record the result, fail the compile on a mismatch."""
    from ..emulation.verify import RECORD_KEY, check_at_compile, device_extra, emulation_mode

    mode = emulation_mode(manifest.target, request.options)
    if mode is None or "probe" not in manifest.payload:
        return
    step(f"checking it on the emulated {manifest.target.arch} device (qemu {manifest.target.options['qemu_cpu']}, "
         f"edgevision[{device_extra(manifest.target)}] installed in a venv there; emulation is slow)")
    write_artifact(manifest, payload_dir, candidate)
    result = check_at_compile(candidate, manifest, payload_dir, mode)
    manifest.payload[RECORD_KEY] = result.to_dict()
    if not result.passed:
        raise AccuracyGateFailed(f"on {result.device} the installed package differs from {result.reference}: "
                                 f"max|diff| {result.max_abs_diff:.3g} (allowed {result.max_allowed:.3g}), top-1 "
                                 f"agreement {result.top1_agreement:.0%}, forbidden imports/libraries "
                                 f"{result.process.get('forbidden_modules', []) + result.process.get('compiler_libraries', [])}",
                                 "report it with the model: the device build computes something else")
    if manifest.accuracy is not None:
        emulated = (f"under {result.device} the installed package matched {result.reference} on "
                    f"{result.inputs} photos decoded there (max|diff| {result.max_abs_diff:.2g}, "
                    f"allowed {result.max_allowed:.2g}; top-1 equal)")
        note = manifest.accuracy.note
        manifest.accuracy = replace(manifest.accuracy, note=f"{note}; {emulated}" if note else emulated)


def _onnx_preprocess(base: PreprocessConfig, io: GraphIO, card: ModelCard, where: str) -> PreprocessConfig:
    """The preprocessing of an ONNX model: what the graph fixes (layout, dtype, size), then the card."""
    if card.input_dtype is not None and card.input_dtype != io.input_dtype:
        raise InputError(f"{where}: the card says input_dtype {card.input_dtype} but the model's input "
                         f"{io.input_name!r} is {io.input_dtype}", "drop input_dtype from the card or flags")
    if io.input_size is not None and card.input_size is not None and card.input_size != io.input_size:
        raise InputError(f"{where}: input {io.input_name!r} is fixed at {io.input_size[0]}x{io.input_size[1]}, "
                         f"not {card.input_size[0]}x{card.input_size[1]}",
                         "drop --input-size (or input_size in the card), or re-export with a dynamic size")
    size = io.input_size or card.input_size
    if size is None:
        raise InputError(f"{where}: input {io.input_name!r} has a dynamic height and width and nothing says "
                         "which size the model was trained at",
                         "pass --input-size HxW (e.g. 48x192) or input_size in a model card (--card)")
    config = replace(base.with_size(size), layout=io.layout, input_dtype=io.input_dtype)
    return card.apply(config)


def _select_torch_output(spec: ModelSpec, choice: str | int | None, where: str) -> tuple[Any, str]:
    """The module returning only its classifier output (found with one forward pass)."""
    import torch

    config = spec.preprocess
    dummy = torch.zeros(config.tensor_shape(1), dtype=getattr(torch, config.input_dtype))
    try:
        with torch.no_grad():
            returned = spec.module(dummy)
    except EdgevisionError:
        raise
    except RecursionError as err:
        raise InputError(f"{where}: the model's forward recursed without end", "fix the model") from err
    except Exception as err:  # the user's forward can raise anything
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(f"{where}: the model fails on an input of shape {list(dummy.shape)} ({first})",
                         "set --input-size (or input_size in a model card) to what the model was trained on") from err
    path = find_output(returned, choice, where)
    return selecting(spec.module, path), output_name(path)


def _with_alternatives(err: BackendError, onnx_path: Path, applied: tuple[str, ...], backend: str,
                       request: CompileRequest) -> BackendError:
    """A backend's refusal, with what would get round it: an exact graph rewrite, another target."""
    choices = []
    try:
        offered = [name for name in applicable_rewrites(onnx_path) if name not in applied]
    except Exception:  # a graph the backend refused may also defeat the check; the plain advice stands
        offered = []
    if offered:
        choices.append(f"retry with --rewrite {offered[0]} (an exact graph rewrite edgevision offers)")
    fallback = get_target(DEFAULT_TARGET)  # the portable target, suggested when it is not the one that refused
    if backend != fallback.backend:
        choices.append(f"compile for {fallback.name}, which runs this graph")
    choices.append("or pass backend options with --option KEY=VALUE")
    return BackendError(err.problem, "; ".join(choices))


def _apply_precision(onnx_path: Path, spec: ModelSpec, request: CompileRequest, settings: CompileSettings,
                     work: Path, step: Progress) -> tuple[Path, dict[str, Any]]:
    """INT8: calibrate and rewrite the float graph as QDQ ONNX. fp16/bf16 are the backend's business."""
    if settings.precision != "int8":
        return onnx_path, {}
    from ..quantize import quantize_for_compile

    return quantize_for_compile(onnx_path, spec.preprocess, settings.input_name, request.options, work, step,
                                backend=get_backend(get_target(request.target).backend))


def _load_candidate(ctx: _Context, built: _Built) -> tuple[str, gate.Predict, str, Any]:
    """How the gate runs the compiled model here: the payload itself, or else its exported ONNX."""
    backend, target, precision = ctx.backend, ctx.target, built.precision
    can_run, why = backend.can_run(target)
    if can_run:
        with translated(backend.name, "load the compiled model"):
            runner = backend.load(built.payload_dir, built.manifest, LoadOptions())
        name, note = f"{backend.name} {target.device} {precision}", ""
        executed = backend.executed_precision(runner)
        if executed is not None:
            built.manifest.payload["executed_precision"] = executed
        if executed not in (None, precision):
            # The gate reports what it measured: this host ran the fallback, not the requested precision.
            name += f" (ran as {executed})"
            note = f"this host's {target.device} has no native {precision} and ran {executed}; verify on the device"
        return name, runner.run, note, runner
    # The payload cannot execute here; check what can be checked: the exported graph itself.
    name = f"onnxruntime on the exported {'QDQ ' if precision == 'int8' else ''}ONNX"
    note = f"compiled payload not executed on this host ({why}); verify on the device"
    return name, _onnxruntime_predict(built.onnx_path), note, None


def _gate(ctx: _Context, built: _Built, loaded: tuple[str, gate.Predict, str, Any] | None = None
          ) -> tuple[AccuracyReport, tuple[gate.Comparison, list[str]]]:
    request, precision, valset, batch = ctx.request, built.precision, ctx.valset, ctx.batch
    candidate_name, predict, note, _ = loaded or _load_candidate(ctx, built)
    with translated(ctx.backend.name, "run the compiled model"):
        # Time the first inputs; a slow candidate (untuned TVM) runs an even subset within the budget.
        first = min(len(valset), max(batch, 4))
        started = time.perf_counter()
        head = gate.run_batched(predict, valset.tensors[:first], batch)
        per_input = (time.perf_counter() - started) / first
        count = len(valset)
        if per_input * len(valset) > request.gate_budget_s:
            count = max(min(GATE_MIN_INPUTS, len(valset)), int(request.gate_budget_s / max(per_input, 1e-9)))
        used = None if count >= len(valset) else gate._evenly(len(valset), count)
        if used is None:
            rest = valset.tensors[first:]  # empty when one batch held them all (--dynamic-batch: 293 at once)
            candidate = np.concatenate([head, gate.run_batched(predict, rest, batch)]) if len(rest) else head
            reference = ctx.reference
        else:
            candidate = gate.run_batched(predict, valset.tensors[used], batch)
            reference = ctx.reference[used]
            note = "; ".join(x for x in (note, f"the compiled model takes {1000 * per_input:.0f} ms per input here: "
                                         f"the gate ran {count} of the {len(valset)} validation inputs") if x)
    cmp = gate.compare(reference, candidate, ctx.ref_name, candidate_name)
    thresholds = gate.Thresholds(min_agreement=request.min_agreement, max_drop_points=request.max_drop)
    report = gate.summarize(cmp, precision, ctx.ref_name, candidate_name, valset, thresholds, note, used)
    log.info("accuracy gate: %s", gate.describe(report))
    fix = None
    if precision == "int8":
        from ..quantize import GATE_FIX
        fix = GATE_FIX
    gate.enforce(report, fix)
    names = valset.names if used is None else [valset.names[i] for i in used]
    return report, (cmp, names)


def _time_interleaved(runners: dict[str, Any], sample: np.ndarray, rounds: int = 30, warmup: int = 5) -> dict[str, float]:
    """Median latency of each runner, called in turn (order rotated each round) so load hits all alike."""
    keys = list(runners)
    for _ in range(warmup):
        for key in keys:
            runners[key].run(sample)
    times: dict[str, list[float]] = {key: [] for key in keys}
    for r in range(rounds):
        for key in keys[r % len(keys):] + keys[:r % len(keys)]:
            started = time.perf_counter()
            runners[key].run(sample)
            times[key].append(time.perf_counter() - started)
    return {key: float(np.median(v)) for key, v in times.items()}


def _auto(ctx: _Context, work: Path) -> tuple[_Built, tuple[gate.Comparison, list[str]]]:
    """Compile every precision the target supports, gate each, time them side by side, keep the fastest that passes."""
    rows: list[dict[str, Any]] = []
    passing: dict[str, tuple[_Built, Any, Any]] = {}
    for precision in ctx.target.precisions:
        row: dict[str, Any] = {"precision": precision}
        rows.append(row)
        try:
            built = _build(ctx, precision, work / precision)
            ctx.step(f"checking {precision} against the original")
            loaded = _load_candidate(ctx, built)
            report, comparison = _gate(ctx, built, loaded=loaded)
        except AccuracyGateFailed as err:
            row.update(passed=False, why=err.problem)
            continue
        built.manifest.accuracy = report
        row.update(passed=True, executed=built.manifest.payload.get("executed_precision", precision),
                   criterion=report.criterion, agreement=round(report.decisive_agreement, 4),
                   top1_all=round(report.top1_agreement, 4), cosine=round(report.mean_cosine, 5))
        if report.criterion == "top1-drop":
            row["drop_points"] = round(report.drop_points or 0.0, 3)
        passing[precision] = (built, loaded[3], comparison)
    if not passing:
        raise AccuracyGateFailed("accuracy gate failed for every precision of " + ctx.target.name + ": " +
                                 "; ".join(f"{r['precision']}: {r.get('why', '')}" for r in rows),
                                 "check the model's export, or pass --no-gate with an explicit --precision")
    candidates = [auto_choice.Candidate(r["precision"], r["executed"], r["agreement"]) for r in rows if r["passed"]]
    same_as = auto_choice.duplicates(candidates)
    timed = [p for p in passing if p not in same_as]
    ctx.step(f"timing {', '.join(timed)} side by side on this host")
    sample = ctx.valset.tensors[:ctx.batch]
    latency = _time_interleaved({p: passing[p][1] for p in timed}, sample)
    base = latency.get("fp32") or min(latency.values())
    for row in rows:
        if row["precision"] in same_as:
            row["same_as"] = same_as[row["precision"]]  # ran the same kernels: not timed twice, never kept
        if row["precision"] in latency:
            row["latency_ms"] = round(1000 * latency[row["precision"]], 3)
            row["ratio_to_fp32"] = round(latency[row["precision"]] / base, 3)
    chosen, why = auto_choice.choose(candidates, latency)
    for row in rows:
        row["chosen"] = row["precision"] == chosen
    built, _, comparison = passing[chosen]
    built.manifest.payload["precision_auto"] = {
        "chosen": chosen, "candidates": rows, "timing": "median of 30 interleaved rounds, batch "
        f"{len(sample)}, on {platform.processor() or platform.machine()}", "why": why}
    _bind(built)  # after precision_auto went into the payload record
    return built, comparison
