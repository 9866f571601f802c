"""What the device's TensorRT builder must do, decided without TensorRT.

The host writes a :class:`BuildConfig` into the artifact. On the device, :func:`plan_build`
turns it plus the installed TensorRT version into a :class:`BuildPlan`: the exact list of
builder calls. Keeping that translation pure makes it testable on machines without a GPU;
the device code only executes the plan (see ``engine.py``).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ...errors import BackendUnavailable, InputError

BUILD_CONFIG_FILE = "tensorrt_build.json"
SCHEMA = 1
MB = 1 << 20
# JetPack 6.2 ships TensorRT 10.3; TensorRT 11 has no JetPack release and builds strongly typed
# networks only (no FP16/INT8 builder flags), which this plan does not emit yet.
UNSUPPORTED_FROM = (11, 0)
# Below this the ONNX parser needs an explicit-batch network and workspace is max_workspace_size.
MEMORY_POOL_API_FROM = (8, 4)
TENSOR_API_FROM = (8, 5)  # num_io_tensors / set_tensor_address / execute_async_v3
IMPLICIT_BATCH_GONE_FROM = (10, 0)  # EXPLICIT_BATCH is deprecated and ignored from 10.0


def parse_version(text: str) -> tuple[int, ...]:
    """'10.3.0.30' -> (10, 3, 0, 30); raises InputError on anything else."""
    if not re.fullmatch(r"\d+(\.\d+)*", text.strip()):
        raise InputError(f"'{text}' is not a TensorRT version", "write it like 10.3 or 8.2.1")
    return tuple(int(p) for p in text.strip().split("."))


@dataclass(frozen=True)
class BuildConfig:
    """Everything the device needs to build the engine; stored as JSON next to the ONNX."""

    onnx: str
    onnx_sha256: str
    precision: str  # fp32 | fp16 | int8 (int8 only from an ONNX with Q/DQ nodes)
    input_name: str
    input_shape: tuple[int | str, ...]  # a str first dimension is the dynamic batch
    explicit_quantization: bool  # the ONNX holds QuantizeLinear/DequantizeLinear pairs
    workspace_mb: int = 1024
    dla_core: int = -1  # -1: GPU only
    gpu_fallback: bool = True  # layers DLA cannot run go to the GPU instead of failing the build
    max_batch: int = 1
    opt_batch: int = 1
    min_tensorrt: str = "10.0"
    schema: int = SCHEMA

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "fp16", "int8"):
            raise InputError(f"TensorRT precision {self.precision!r} is not supported", "use fp32, fp16 or int8")
        if self.workspace_mb <= 0:
            raise InputError(f"workspace_mb must be positive, got {self.workspace_mb}", "e.g. --option workspace_mb=1024")
        if self.dla_core < -1:
            raise InputError(f"dla_core {self.dla_core} is invalid", "use -1 (GPU only), 0 or 1")
        if not 1 <= self.opt_batch <= self.max_batch:
            raise InputError(f"batch profile needs 1 <= opt_batch ({self.opt_batch}) <= max_batch ({self.max_batch})",
                             "fix --option opt_batch/max_batch")
        if not self.dynamic_batch and self.max_batch != int(self.input_shape[0]):
            raise InputError(f"a static-batch model has batch {self.input_shape[0]}, not max_batch {self.max_batch}",
                             "compile with --dynamic-batch to choose max_batch")
        parse_version(self.min_tensorrt)

    @property
    def dynamic_batch(self) -> bool:
        return isinstance(self.input_shape[0], str)

    def engine_settings(self) -> dict[str, Any]:
        """The fields that change the engine: part of the engine cache key."""
        return {"precision": self.precision, "input_name": self.input_name,
                "input_shape": [d if isinstance(d, str) else int(d) for d in self.input_shape],
                "explicit_quantization": self.explicit_quantization, "workspace_mb": self.workspace_mb,
                "dla_core": self.dla_core, "gpu_fallback": self.gpu_fallback,
                "max_batch": self.max_batch, "opt_batch": self.opt_batch, "schema": self.schema}

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["input_shape"] = list(self.input_shape)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "BuildConfig":
        if data.get("schema") != SCHEMA:
            raise InputError(f"TensorRT build config schema {data.get('schema')} is not {SCHEMA}",
                             "recompile the artifact with this edgevision version")
        known = set(cls.__dataclass_fields__)
        values = {k: v for k, v in data.items() if k in known}
        values["input_shape"] = tuple(values["input_shape"])
        return cls(**values)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> "BuildConfig":
        return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))


@dataclass(frozen=True)
class TrtEnum:
    """A TensorRT enum member named without importing TensorRT, e.g. BuilderFlag.FP16."""

    enum: str
    member: str

    def resolve(self, trt: Any) -> Any:
        return getattr(getattr(trt, self.enum), self.member)

    def render(self) -> str:
        return f"trt.{self.enum}.{self.member}"


@dataclass(frozen=True)
class BuilderCall:
    """One step on the builder config: a method call, or an attribute assignment when ``assign``."""

    member: str
    args: tuple[Any, ...] = ()
    assign: bool = False

    def render(self, obj: str = "config") -> str:
        args = [a.render() if isinstance(a, TrtEnum) else repr(a) for a in self.args]
        if self.assign:
            return f"{obj}.{self.member} = {args[0]}"
        return f"{obj}.{self.member}({', '.join(args)})"

    def apply(self, trt: Any, target: Any) -> None:
        args = [a.resolve(trt) if isinstance(a, TrtEnum) else a for a in self.args]
        if self.assign:
            setattr(target, self.member, args[0])
        else:
            getattr(target, self.member)(*args)


@dataclass(frozen=True)
class ProfileShape:
    """The optimization profile a dynamic-batch input needs: min, opt and max shapes."""

    input_name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def render(self) -> list[str]:
        return ["profile = builder.create_optimization_profile()",
                f"profile.set_shape({self.input_name!r}, {self.min}, {self.opt}, {self.max})",
                "config.add_optimization_profile(profile)"]


@dataclass(frozen=True)
class BuildPlan:
    tensorrt_version: tuple[int, ...]
    network_flags: tuple[TrtEnum, ...]
    config_calls: tuple[BuilderCall, ...]
    profile: ProfileShape | None
    io_api: str  # "tensors": set_tensor_address + execute_async_v3; "bindings": execute_async_v2
    notes: tuple[str, ...] = field(default_factory=tuple)

    def network_flag_value(self, trt: Any) -> int:
        value = 0
        for flag in self.network_flags:
            value |= 1 << int(flag.resolve(trt))
        return value

    def render(self) -> list[str]:
        """The plan as the Python statements it stands for, for manifests, logs and docs."""
        flags = " | ".join(f"1 << int({f.render()})" for f in self.network_flags) or "0"
        lines = [f"network = builder.create_network({flags})",
                 "parser = trt.OnnxParser(network, logger); parser.parse(onnx_bytes)",
                 "config = builder.create_builder_config()"]
        lines += [call.render() for call in self.config_calls]
        if self.profile is not None:
            lines += self.profile.render()
        lines.append("plan = builder.build_serialized_network(network, config)")
        return lines


def plan_build(config: BuildConfig, tensorrt_version: str, dla_cores: int | None = None) -> BuildPlan:
    """Translate build settings into the builder calls valid for ``tensorrt_version``.

    ``dla_cores`` is what the device reports (builder.num_DLA_cores); None skips that check.
    Never emits an INT8 calibrator: INT8 comes only from the Q/DQ nodes in the ONNX.
    """
    version = parse_version(tensorrt_version)
    major_minor = version[:2] + (0,) * (2 - len(version[:2]))
    if major_minor < parse_version(config.min_tensorrt)[:2]:
        raise BackendUnavailable(f"TensorRT {tensorrt_version} is older than the {config.min_tensorrt} "
                                 "this artifact was compiled for",
                                 "upgrade JetPack, or compile for a target with a lower min_tensorrt")
    if major_minor >= UNSUPPORTED_FROM:
        raise BackendUnavailable(f"TensorRT {tensorrt_version} is not supported by this backend yet "
                                 "(TensorRT 11 builds strongly typed networks only)",
                                 "use the TensorRT 10.x that JetPack 6 ships")
    if config.precision == "int8" and not config.explicit_quantization:
        raise InputError("int8 for TensorRT needs an ONNX with Q/DQ nodes (implicit calibration is "
                         "deprecated in TensorRT 10 and removed in 11)",
                         "compile with --precision int8 so the INT8 step writes a QDQ model")
    if config.dla_core >= 0:
        if config.precision == "fp32":
            raise InputError(f"DLA core {config.dla_core} runs fp16 or int8 only, not fp32",
                             "compile with --precision fp16 or int8, or --option dla_core=-1")
        if dla_cores is not None and config.dla_core >= dla_cores:
            raise InputError(f"DLA core {config.dla_core} requested but this device has {dla_cores} DLA core(s)",
                             "use --option dla_core=-1 (GPU) or a core this board has")

    flags: tuple[TrtEnum, ...] = ()
    if major_minor < IMPLICIT_BATCH_GONE_FROM:
        flags = (TrtEnum("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"),)

    calls: list[BuilderCall] = []
    workspace = config.workspace_mb * MB
    if major_minor >= MEMORY_POOL_API_FROM:
        calls.append(BuilderCall("set_memory_pool_limit", (TrtEnum("MemoryPoolType", "WORKSPACE"), workspace)))
    else:
        calls.append(BuilderCall("max_workspace_size", (workspace,), assign=True))
    notes: list[str] = []
    if config.precision in ("fp16", "int8"):
        # For int8, layers outside the Q/DQ pairs may run fp16 rather than fp32 (trtexec --int8 --fp16).
        calls.append(BuilderCall("set_flag", (TrtEnum("BuilderFlag", "FP16"),)))
    if config.precision == "int8":
        calls.append(BuilderCall("set_flag", (TrtEnum("BuilderFlag", "INT8"),)))
        notes.append("INT8 scales come from the ONNX Q/DQ nodes; no calibrator is set")
    if config.dla_core >= 0:
        calls.append(BuilderCall("default_device_type", (TrtEnum("DeviceType", "DLA"),), assign=True))
        calls.append(BuilderCall("DLA_core", (config.dla_core,), assign=True))
        if config.gpu_fallback:
            calls.append(BuilderCall("set_flag", (TrtEnum("BuilderFlag", "GPU_FALLBACK"),)))

    profile = None
    if config.dynamic_batch:
        rest = tuple(int(d) for d in config.input_shape[1:])
        profile = ProfileShape(config.input_name, (1, *rest), (config.opt_batch, *rest), (config.max_batch, *rest))
    io_api = "tensors" if major_minor >= TENSOR_API_FROM else "bindings"
    return BuildPlan(version, flags, tuple(calls), profile, io_api, tuple(notes))
