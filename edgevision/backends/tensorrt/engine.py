"""Device side: build or load the engine, bind buffers once, run on a CUDA stream.

Needs the JetPack ``tensorrt`` Python module and cuda-python (no PyTorch). Nothing in this module
can run on a machine without an NVIDIA GPU; the decisions it follows (build plan, cache key,
buffer plan) are made by the pure modules next to it.
UNVERIFIED ON HARDWARE: written against the TensorRT 8.2/10.x and cuda-python documentation.
"""
from __future__ import annotations

import ctypes
import logging
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import BackendUnavailable, EdgevisionError, InputError
from .build_config import BuildConfig, BuildPlan, plan_build
from .engine_cache import EngineCache, EngineKey
from .io_plan import IOPlan, TensorInfo, plan_io

log = logging.getLogger(__name__)

INSTALL_TENSORRT = ("on the Jetson use JetPack's TensorRT: `sudo apt install python3-libnvinfer` "
                    "(JetPack 6.x, TensorRT 10.x) and a venv made with --system-site-packages")
INSTALL_CUDA_PYTHON = "pip install 'cuda-python>=12.6.1,<13' (CUDA 12.x bindings, matching JetPack 6)"


class TensorRTError(EdgevisionError):
    """TensorRT or CUDA failed on the device."""


def import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as err:
        raise BackendUnavailable("this artifact needs TensorRT, which is not importable here",
                                 INSTALL_TENSORRT) from err
    return tensorrt


def import_cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6.1
    except ImportError:
        try:
            from cuda import cudart  # older layout, removed in cuda-python 13
        except ImportError as err:
            raise BackendUnavailable("TensorRT inference needs cuda-python, which is not installed",
                                     INSTALL_CUDA_PYTHON) from err
    return cudart


def _check(cudart: Any, result: Any, what: str) -> Any:
    """cuda-python returns (error, *values); raise on error, return the value(s)."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        raise TensorRTError(f"CUDA {what} failed: {text.decode() if isinstance(text, bytes) else text}",
                            "check that the GPU is visible (tegrastats, nvidia-smi) and memory is free")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def _native(handle: Any) -> int:
    """A cudaStream_t as the integer TensorRT's Python API takes."""
    try:
        from cuda.bindings.utils import get_cuda_native_handle
    except ImportError:
        return int(handle)
    return int(get_cuda_native_handle(handle))


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str


def gpu_info(cudart: Any, device: int) -> GpuInfo:
    _check(cudart, cudart.cudaSetDevice(device), f"cudaSetDevice({device})")
    prop = _check(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.split(b"\0")[0].decode() if isinstance(prop.name, bytes) else str(prop.name)
    return GpuInfo(name.strip(), f"{prop.major}.{prop.minor}")


def device_index(device: str | None) -> int:
    """'cuda:1' -> 1; 'cuda' or None -> 0."""
    if not device or device in ("cuda", "gpu", "GPU"):
        return 0
    prefix, _, index = device.partition(":")
    if prefix.lower() not in ("cuda", "gpu") or not index.isdigit():
        raise InputError(f"device {device!r} is not a CUDA device", "use cuda:0")
    return int(index)


def build_serialized_engine(trt: Any, logger: Any, onnx_path: Path, config: BuildConfig) -> bytes:
    builder = trt.Builder(logger)
    plan = plan_build(config, trt.__version__, dla_cores=int(getattr(builder, "num_DLA_cores", 0)))
    network = builder.create_network(plan.network_flag_value(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise TensorRTError(f"TensorRT {trt.__version__} cannot parse the ONNX model: {errors}",
                            "check the operators against TensorRT's ONNX support matrix")
    builder_config = builder.create_builder_config()
    for call in plan.config_calls:
        call.apply(trt, builder_config)
    if plan.profile is not None:
        profile = builder.create_optimization_profile()
        profile.set_shape(plan.profile.input_name, plan.profile.min, plan.profile.opt, plan.profile.max)
        builder_config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, builder_config)
    if serialized is None:
        raise TensorRTError(f"TensorRT {trt.__version__} failed to build the engine (its log says why)",
                            "try a larger --option workspace_mb, or --precision fp32")
    return bytes(serialized)


def _numpy_dtype(trt: Any, dtype: Any) -> str:
    return np.dtype(trt.nptype(dtype)).name


def read_tensors(trt: Any, engine: Any, api: str) -> list[TensorInfo]:
    if api == "tensors":
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        return [TensorInfo(n, engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                           tuple(engine.get_tensor_shape(n)), _numpy_dtype(trt, engine.get_tensor_dtype(n)), i)
                for i, n in enumerate(names)]
    return [TensorInfo(engine.get_binding_name(i), engine.binding_is_input(i), tuple(engine.get_binding_shape(i)),
                       _numpy_dtype(trt, engine.get_binding_dtype(i)), i)
            for i in range(engine.num_bindings)]


class _PinnedBuffer:
    """Page-locked host memory seen as a numpy array, plus its device twin."""

    def __init__(self, cudart: Any, shape: tuple[int, ...], dtype: str, nbytes: int) -> None:
        self.host_ptr = _check(cudart, cudart.cudaMallocHost(nbytes), "cudaMallocHost")
        self.device_ptr = _check(cudart, cudart.cudaMalloc(nbytes), "cudaMalloc")
        raw = (ctypes.c_byte * nbytes).from_address(int(self.host_ptr))
        self.host = np.frombuffer(raw, dtype=dtype).reshape(shape)


def _free(cudart: Any, buffers: list[_PinnedBuffer], stream: Any) -> None:
    for buf in buffers:
        cudart.cudaFree(buf.device_ptr)
        cudart.cudaFreeHost(buf.host_ptr)
    cudart.cudaStreamDestroy(stream)


class TensorRTRunner:
    """Buffers are allocated and bound once; each run is H2D copy, enqueue, D2H copy, one sync."""

    def __init__(self, cudart: Any, runtime: Any, engine: Any, io: IOPlan) -> None:
        self.cudart = cudart
        self.runtime = runtime  # the engine must not outlive the runtime that deserialized it
        self.engine = engine
        self.context = engine.create_execution_context()
        if self.context is None:
            raise TensorRTError("TensorRT could not create an execution context", "free GPU memory and retry")
        self.io = io
        self.stream = _check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._stream_handle = _native(self.stream)
        self.inp = _PinnedBuffer(cudart, io.input.shape, io.input.dtype, io.input.nbytes)
        self.out = _PinnedBuffer(cudart, io.output.shape, io.output.dtype, io.output.nbytes)
        self._finalizer = weakref.finalize(self, _free, cudart, [self.inp, self.out], self.stream)
        pointers = {io.input.name: int(self.inp.device_ptr), io.output.name: int(self.out.device_ptr)}
        if io.api == "tensors":
            for name, ptr in pointers.items():
                self.context.set_tensor_address(name, ptr)
        self._bindings = [pointers[name] for name in io.binding_order()]
        self._bound_batch: int | None = None if io.dynamic_batch else io.max_batch

    def _set_batch(self, batch: int) -> None:
        shape = self.io.input.batch_shape(batch)
        if self.io.api == "tensors":
            ok = self.context.set_input_shape(self.io.input.name, shape)
        else:
            ok = self.context.set_binding_shape(self.io.input.index, shape)
        if ok is False:
            raise TensorRTError(f"TensorRT rejected input shape {shape}", "stay within the engine's batch profile")
        self._bound_batch = batch

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = int(batch.shape[0])
        if n > self.io.max_batch:
            raise InputError(f"batch of {n} exceeds the engine's max_batch {self.io.max_batch}",
                             "run smaller batches or recompile with --option max_batch=N")
        if n != self._bound_batch:
            if not self.io.dynamic_batch:
                raise InputError(f"this engine takes batches of {self.io.max_batch}, got {n}",
                                 "compile with --dynamic-batch")
            self._set_batch(n)
        cudart = self.cudart
        np.copyto(self.inp.host[:n], batch, casting="no")
        _check(cudart, cudart.cudaMemcpyAsync(self.inp.device_ptr, self.inp.host.ctypes.data,
                                              self.io.input.batch_nbytes(n),
                                              cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, self.stream),
               "host-to-device copy")
        if self.io.api == "tensors":
            ok = self.context.execute_async_v3(self._stream_handle)
        else:
            ok = self.context.execute_async_v2(self._bindings, self._stream_handle)
        if not ok:
            raise TensorRTError("TensorRT failed to enqueue inference", "run with --debug for TensorRT's log")
        _check(cudart, cudart.cudaMemcpyAsync(self.out.host.ctypes.data, self.out.device_ptr,
                                              self.io.output.batch_nbytes(n),
                                              cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost, self.stream),
               "device-to-host copy")
        _check(cudart, cudart.cudaStreamSynchronize(self.stream), "stream synchronize")
        return self.out.host[:n].copy()

    def close(self) -> None:
        self._finalizer()


def load_runner(payload_dir: Path, config: BuildConfig, onnx_sha256: str, device: str | None,
                cache: EngineCache) -> TensorRTRunner:
    """Load the cached engine for this TensorRT, GPU, model and settings; build and cache it when missing."""
    trt = import_tensorrt()
    cudart = import_cudart()
    plan: BuildPlan = plan_build(config, trt.__version__)  # refuses a too-old TensorRT before any GPU work
    gpu = gpu_info(cudart, device_index(device))
    key = EngineKey(trt.__version__, gpu.name, gpu.compute_capability, onnx_sha256, config.engine_settings())
    logger = trt.Logger(trt.Logger.WARNING)
    runtime = trt.Runtime(logger)
    if config.dla_core >= 0:
        runtime.DLA_core = config.dla_core
    engine = None
    found = cache.lookup(key)
    if found.hit:
        try:
            engine = runtime.deserialize_cuda_engine(found.engine)
        except (RuntimeError, TypeError) as err:  # some releases raise instead of returning None
            log.debug("deserialize failed: %s", err)
        if engine is None:
            log.warning("TensorRT refused the cached engine %s; rebuilding", found.path)
            cache.invalidate(key)
    if engine is None:
        log.warning("building the TensorRT engine for %s (%s, TensorRT %s, %s): this takes minutes once, "
                    "later loads use the cache in %s", gpu.name, gpu.compute_capability, trt.__version__,
                    config.precision, cache.root)
        start = time.perf_counter()
        serialized = build_serialized_engine(trt, logger, payload_dir / config.onnx, config)
        path = cache.store(key, serialized)
        log.warning("TensorRT engine built in %.0f s, cached as %s", time.perf_counter() - start, path)
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise TensorRTError("TensorRT could not deserialize the engine it just built", "run with --debug")
    io = plan_io(read_tensors(trt, engine, plan.io_api), config.max_batch, plan.io_api)
    return TensorRTRunner(cudart, runtime, engine, io)
