"""TensorRT for Jetson, tested up to the boundary this machine has: no GPU and no TensorRT here.

Real: compiling MobileNetV2 for jetson-orin, the artifact's ONNX and build config, the builder
calls the device will make, the engine cache on real files, the buffer plan, the one-line error
without TensorRT, and the Python 3.6 Nano script's host-side parts. Not here: building or running
an engine, which needs a Jetson (see docs/jetson.md for what is unverified).
"""
from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import os
import sys
import textwrap
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from conftest import BLOCK_TORCH, EXAMPLES, REPO, run_cli
from edgevision.backends.tensorrt import MODEL_FILE, BACKEND
from edgevision.backends.tensorrt.build_config import BUILD_CONFIG_FILE, BuildConfig, plan_build
from edgevision.backends.tensorrt.engine_cache import EngineCache, EngineKey, default_cache_dir
from edgevision.backends.tensorrt.io_plan import TensorInfo, plan_io
from edgevision.errors import ArtifactError, BackendUnavailable, InputError

MNV2 = f"{EXAMPLES}/mobilenet_v2.py:mobilenet_v2"
NANO_SCRIPT = EXAMPLES / "jetson_nano_trt.py"
GB = 1 << 30

FP16_TRT10 = ["network = builder.create_network(0)",
              "parser = trt.OnnxParser(network, logger); parser.parse(onnx_bytes)",
              "config = builder.create_builder_config()",
              "config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1073741824)",
              "config.set_flag(trt.BuilderFlag.FP16)",
              "plan = builder.build_serialized_network(network, config)"]


@pytest.fixture(scope="module")
def orin_artifact(compile_artifact) -> Path:
    """MobileNetV2 compiled for jetson-orin on this GPU-less host, through the real pipeline."""
    return compile_artifact("mnv2.jetson-orin.evpkg", model=MNV2, target="jetson-orin")


@pytest.fixture(scope="module")
def orin_payload(orin_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    from edgevision.artifact import unpack

    dest = tmp_path_factory.mktemp("orin")
    manifest = unpack(orin_artifact, dest)
    return dest / "payload", manifest


@pytest.fixture(scope="module")
def orin_config(orin_payload) -> BuildConfig:
    return BuildConfig.read(orin_payload[0] / BUILD_CONFIG_FILE)


@pytest.fixture(scope="module")
def nano_artifact(compile_artifact, orin_payload) -> Path:
    """The same network for the original Nano, compiled from the ONNX (no torch export needed)."""
    return compile_artifact("mnv2.jetson-nano.evpkg", model=str(orin_payload[0] / MODEL_FILE), target="jetson-nano")


@pytest.fixture(scope="module")
def qdq_onnx(orin_payload, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real QDQ model: ONNX Runtime's static quantizer calibrated on two sample photos."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgevision.preprocess import PreprocessConfig, preprocess
    from edgevision.samples import sample_image

    batches = [{"input": preprocess(sample_image(n), PreprocessConfig())[None]} for n in ("chelsea", "coffee")]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter(batches)

        def get_next(self):
            return next(self.items, None)

    def quantize(name: str, activations, symmetric: bool) -> Path:
        out = tmp_path_factory.mktemp("qdq") / name
        quantize_static(str(orin_payload[0] / MODEL_FILE), str(out), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=activations, weight_type=QuantType.QInt8,
                        extra_options={"ActivationSymmetric": symmetric, "WeightSymmetric": True})
        return out

    return {"symmetric": quantize("sym.onnx", QuantType.QInt8, True),
            "uint8": quantize("asym.onnx", QuantType.QUInt8, False)}


def _settings(precision: str, shape=(1, 3, 224, 224), **options):
    from edgevision.backends import CompileSettings

    return CompileSettings(precision=precision, input_shape=shape, options=options)


def _target(name: str):
    from edgevision.targets import get_target

    return get_target(name)


# ------------------------------------------------------------------ host side: the real compile


def test_orin_artifact_holds_onnx_and_build_config(orin_artifact: Path, orin_payload, orin_config) -> None:
    import onnx
    import onnxruntime as ort
    import torch

    from edgevision.preprocess import PreprocessConfig, preprocess
    from edgevision.samples import sample_image

    payload_dir, manifest = orin_payload
    assert manifest.backend == "tensorrt" and manifest.precision == "fp16" and manifest.target.arch == "aarch64"
    # probe.npz: x86 reference logits of the bundled photos, for `edgevision verify` on the Jetson itself.
    assert set(manifest.files) == {f"payload/{MODEL_FILE}", f"payload/{BUILD_CONFIG_FILE}", "payload/probe.npz"}
    assert orin_config.onnx_sha256 == manifest.files[f"payload/{MODEL_FILE}"]
    assert (orin_config.precision, orin_config.workspace_mb, orin_config.dla_core) == ("fp16", 1024, -1)
    assert orin_config.input_shape == (1, 3, 224, 224) and orin_config.max_batch == 1
    assert orin_config.min_tensorrt == "8.6" and not orin_config.explicit_quantization

    model = onnx.load(str(payload_dir / MODEL_FILE))
    onnx.checker.check_model(model)
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert model.graph.input[0].name == "input" and dims == [1, 3, 224, 224]
    assert not {n.op_type for n in model.graph.node} & {"QuantizeLinear", "DequantizeLinear"}

    # The ONNX the device will build from is the network that was compiled: same logits as torch.
    sys.path.insert(0, str(EXAMPLES))
    try:
        from mobilenet_v2 import mobilenet_v2
    finally:
        sys.path.remove(str(EXAMPLES))
    x = preprocess(sample_image("chelsea"), PreprocessConfig())[None]
    with torch.no_grad():
        expected = mobilenet_v2()(torch.from_numpy(x)).numpy()
    got = ort.InferenceSession(str(payload_dir / MODEL_FILE), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    assert np.abs(got - expected).max() < 1e-4


def test_manifest_says_engine_is_built_on_device_and_gate_ran_the_onnx(orin_payload) -> None:
    _, manifest = orin_payload
    assert manifest.payload["engine"] == "built on first load on the device"
    assert manifest.backend_version == "not installed"
    gate = manifest.accuracy
    assert gate.passed and gate.reference == "torch" and gate.candidate == "onnxruntime on the exported ONNX"
    assert gate.top1_agreement == 1.0
    assert "built on the device at first load" in gate.note and "no TensorRT" in gate.note
    # What the Jetson will call, recorded for the oldest and the current JetPack TensorRT.
    assert manifest.payload["builder_calls"]["tensorrt 10.3"] == FP16_TRT10
    assert "EXPLICIT_BATCH" in manifest.payload["builder_calls"]["tensorrt 8.6"][0]
    assert "calibrat" not in json.dumps(manifest.payload).lower()


def test_info_command_shows_the_device_note(orin_artifact: Path) -> None:
    result = run_cli("info", str(orin_artifact))
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stdout.split())
    assert "device note" in out and "built on the device at first load" in out
    assert "onnxruntime on the exported ONNX" in out


BLOCK_TENSORRT = BLOCK_TORCH.replace('name == "torch" or name.startswith("torch.")',
                                     'name.split(".")[0] in ("torch", "tensorrt", "cuda", "pycuda")')


def test_no_tensorrt_compile_needs_nothing_and_load_says_what_to_install(orin_artifact: Path, tmp_path: Path) -> None:
    import subprocess

    code = BLOCK_TENSORRT + textwrap.dedent(f"""
        from pathlib import Path
        from edgevision.artifact import unpack
        from edgevision.backends import LoadOptions, get_backend
        from edgevision.errors import BackendUnavailable
        from edgevision.targets import get_target
        backend = get_backend("tensorrt")
        target = get_target("jetson-orin")
        print("requirements", backend.compile_requirements(target))
        print("can_run", backend.can_run(target))
        manifest = unpack(Path({str(orin_artifact)!r}), Path({str(tmp_path)!r}))
        try:
            backend.load(Path({str(tmp_path)!r}) / "payload", manifest, LoadOptions())
        except BackendUnavailable as err:
            print("error", str(err))
        """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    lines = dict(line.split(" ", 1) for line in result.stdout.strip().splitlines())
    assert lines["requirements"] == "[]"
    assert lines["can_run"].startswith("(False, 'the TensorRT engine is built on the device at first load")
    error = lines["error"]
    assert "needs TensorRT" in error and "python3-libnvinfer" in error and "JetPack" in error
    assert "\n" not in error


def test_loading_on_this_x86_host_names_the_device_arch(orin_artifact: Path) -> None:
    import platform

    from edgevision.runtime import load

    assert platform.machine() != "aarch64", "this test is about loading on a non-Jetson host"
    with pytest.raises(ArtifactError, match="compiled for aarch64 \\(jetson-orin\\)"):
        load(orin_artifact)


def test_host_refuses_what_the_device_would_refuse(orin_payload, tmp_path: Path) -> None:
    onnx_path = orin_payload[0] / MODEL_FILE
    orin = _target("jetson-orin")
    with pytest.raises(InputError, match="DLA core 0 runs fp16 or int8 only"):
        BACKEND.compile(onnx_path, orin, _settings("fp32", dla_core="0"), tmp_path)
    with pytest.raises(InputError, match="needs the QDQ ONNX"):
        BACKEND.compile(onnx_path, orin, _settings("int8"), tmp_path)
    with pytest.raises(InputError, match="workspace_mb=.lots. is not an integer"):
        BACKEND.compile(onnx_path, orin, _settings("fp16", workspace_mb="lots"), tmp_path)
    from edgevision.compiler import CompileRequest, compile_model

    with pytest.raises(InputError, match="jetson-nano does not support precision int8"):
        compile_model(CompileRequest(model=str(onnx_path), target="jetson-nano", precision="int8"))


def test_int8_from_a_real_qdq_model_sets_int8_and_no_calibrator(qdq_onnx: dict, tmp_path: Path) -> None:
    payload = BACKEND.compile(qdq_onnx["symmetric"], _target("jetson-orin"), _settings("int8"), tmp_path)
    config = BuildConfig.read(tmp_path / BUILD_CONFIG_FILE)
    assert config.explicit_quantization and config.precision == "int8"
    calls = payload["builder_calls"]["tensorrt 10.3"]
    assert "config.set_flag(trt.BuilderFlag.INT8)" in calls and "config.set_flag(trt.BuilderFlag.FP16)" in calls
    assert not any("calibrat" in c.lower() for c in calls)
    with pytest.raises(InputError, match="already quantized"):
        BACKEND.compile(qdq_onnx["symmetric"], _target("jetson-orin"), _settings("fp16"), tmp_path)


def test_int32_bias_dequantize_is_folded_without_changing_outputs(qdq_onnx: dict, tmp_path: Path) -> None:
    """TensorRT parses only INT8 DequantizeLinear; ONNX Runtime writes int32 biases. Folding must be exact."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from edgevision.preprocess import PreprocessConfig, preprocess
    from edgevision.samples import sample_image

    def int32_dequantize(path: Path) -> int:
        model = onnx.load(str(path))
        inits = {i.name: numpy_helper.to_array(i).dtype for i in model.graph.initializer}
        return sum(n.op_type == "DequantizeLinear" and inits.get(n.input[0]) == np.int32 for n in model.graph.node)

    original = qdq_onnx["symmetric"]
    assert int32_dequantize(original) > 0  # ONNX Runtime really writes them
    payload = BACKEND.compile(original, _target("jetson-orin"), _settings("int8"), tmp_path)
    folded = tmp_path / MODEL_FILE
    assert int32_dequantize(folded) == 0 and payload["folded_int32_dequantize"] == int32_dequantize(original)
    x = preprocess(sample_image("rocket"), PreprocessConfig())[None]
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(run(folded), run(original), rtol=0, atol=1e-5)


def test_asymmetric_uint8_qdq_is_refused_on_the_host(qdq_onnx: dict, tmp_path: Path) -> None:
    """TensorRT's parser asserts zero points are all 0; ONNX Runtime's default uint8 activations are not."""
    with pytest.raises(InputError, match="uint8 zero points .* symmetric INT8 only .* --calib-method symmetric"):
        BACKEND.compile(qdq_onnx["uint8"], _target("jetson-orin"), _settings("int8"), tmp_path)


def test_dla_and_dynamic_batch_options_reach_the_build_config(orin_payload, tmp_path: Path) -> None:
    payload = BACKEND.compile(orin_payload[0] / MODEL_FILE, _target("jetson-orin"),
                              _settings("fp16", shape=("batch", 3, 224, 224), dla_core="1", max_batch="4",
                                        workspace_mb="256"), tmp_path)
    config = BuildConfig.read(tmp_path / BUILD_CONFIG_FILE)
    assert (config.dla_core, config.max_batch, config.opt_batch, config.workspace_mb) == (1, 4, 1, 256)
    calls = payload["builder_calls"]["tensorrt 10.3"]
    assert calls[3:-1] == ["config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 268435456)",
                           "config.set_flag(trt.BuilderFlag.FP16)",
                           "config.default_device_type = trt.DeviceType.DLA",
                           "config.DLA_core = 1",
                           "config.set_flag(trt.BuilderFlag.GPU_FALLBACK)",
                           "profile = builder.create_optimization_profile()",
                           "profile.set_shape('input', (1, 3, 224, 224), (1, 3, 224, 224), (4, 3, 224, 224))",
                           "config.add_optimization_profile(profile)"]


# ------------------------------------------------------------------ build-config translation (pure)


def test_tensorrt_8_2_uses_explicit_batch_and_max_workspace_size(orin_config: BuildConfig) -> None:
    plan = plan_build(replace(orin_config, min_tensorrt="8.2", workspace_mb=512), "8.2.1.8")
    assert plan.render()[0] == "network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))"
    assert plan.render()[3] == f"config.max_workspace_size = {512 << 20}"
    assert plan.io_api == "bindings"
    assert plan_build(orin_config, "8.6.2").io_api == "tensors"
    assert plan_build(orin_config, "10.3.0.30").render() == FP16_TRT10
    assert plan_build(orin_config, "10.3.0.30").network_flags == ()


def test_fp32_sets_no_precision_flag(orin_config: BuildConfig) -> None:
    calls = plan_build(replace(orin_config, precision="fp32"), "10.3").render()
    assert not any("set_flag" in c for c in calls)


@pytest.mark.parametrize("change, version, dla_cores, error, message", [
    ({}, "8.5.2", None, BackendUnavailable, "older than the 8.6"),
    ({}, "11.0.0", None, BackendUnavailable, "TensorRT 11"),
    ({"precision": "int8"}, "10.3", None, InputError, "Q/DQ nodes"),
    ({"dla_core": 0, "precision": "fp32"}, "10.3", None, InputError, "fp16 or int8 only"),
    ({"dla_core": 1}, "10.3", 1, InputError, "has 1 DLA core"),
    ({"dla_core": 0}, "10.3", 0, InputError, "has 0 DLA core"),
])
def test_invalid_builds_are_refused_before_building(orin_config, change, version, dla_cores, error, message) -> None:
    with pytest.raises(error, match=message):
        plan_build(replace(orin_config, **change), version, dla_cores=dla_cores)


def test_build_config_rejects_bad_values(orin_config: BuildConfig) -> None:
    with pytest.raises(InputError, match="max_batch"):
        replace(orin_config, max_batch=4)  # a static batch-1 model cannot have a batch-4 profile
    with pytest.raises(InputError, match="opt_batch"):
        replace(orin_config, input_shape=("batch", 3, 224, 224), max_batch=2, opt_batch=3)
    with pytest.raises(InputError, match="schema"):
        BuildConfig.from_dict({**orin_config.to_dict(), "schema": 99})


# ------------------------------------------------------------------ engine cache on real files


def _key(config: BuildConfig, **change) -> EngineKey:
    base = dict(tensorrt_version="10.3.0.30", gpu_name="Orin", compute_capability="8.7",
                model_sha256=config.onnx_sha256, settings=config.engine_settings())
    return EngineKey(**{**base, **change})


# Opaque bytes: the cache stores and checks engine bytes without interpreting them; no engine is built here.
BLOB = hashlib.sha256(b"cache-layer test bytes").digest() * 512


def test_every_key_field_changes_the_cache_file(orin_config: BuildConfig) -> None:
    base = _key(orin_config)
    assert base.file_stem() == _key(orin_config).file_stem()  # stable across calls
    assert base.file_stem().startswith(orin_config.onnx_sha256[:12])
    variants = [_key(orin_config, tensorrt_version="10.3.0.31"), _key(orin_config, gpu_name="Xavier"),
                _key(orin_config, compute_capability="7.2"), _key(orin_config, model_sha256="0" * 64)]
    variants += [_key(orin_config, settings=replace(orin_config, **c).engine_settings())
                 for c in ({"precision": "fp32"}, {"workspace_mb": 2048}, {"dla_core": 0}, {"gpu_fallback": False})]
    stems = {v.file_stem() for v in variants}
    assert len(stems) == len(variants) and base.file_stem() not in stems


def test_first_load_misses_then_hits_with_a_json_sidecar(orin_config: BuildConfig, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path / "trt")
    key = _key(orin_config)
    first = cache.lookup(key)
    assert not first.hit and "no cached engine" in first.reason
    path = cache.store(key, BLOB)
    assert path == tmp_path / "trt" / f"{key.file_stem()}.engine"
    sidecar = json.loads(cache.sidecar_path(key).read_text())
    assert sidecar["key"] == key.to_dict() and sidecar["size"] == len(BLOB)
    assert sidecar["key"]["settings"]["precision"] == "fp16"
    second = cache.lookup(key)
    assert second.hit and second.engine == BLOB
    assert sorted(p.name for p in (tmp_path / "trt").iterdir()) == sorted([path.name, cache.sidecar_path(key).name])


def test_a_new_tensorrt_or_gpu_never_loads_the_old_engine(orin_config: BuildConfig, tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    old = _key(orin_config)
    cache.store(old, BLOB)
    assert not cache.lookup(_key(orin_config, tensorrt_version="10.4.0")).hit
    assert not cache.lookup(_key(orin_config, gpu_name="NVIDIA Jetson AGX Orin", compute_capability="8.7")).hit
    assert cache.lookup(old).hit  # the old entry stays valid for its own TensorRT and GPU


def test_an_entry_whose_sidecar_disagrees_is_rebuilt_and_removed(orin_config: BuildConfig, tmp_path: Path) -> None:
    """E.g. a cache folder copied from another Jetson: the file name matches, its recorded key does not."""
    cache = EngineCache(tmp_path)
    wanted, other = _key(orin_config), _key(orin_config, tensorrt_version="8.6.2", gpu_name="Xavier")
    cache.store(other, BLOB)
    cache.engine_path(other).rename(cache.engine_path(wanted))
    cache.sidecar_path(other).rename(cache.sidecar_path(wanted))
    found = cache.lookup(wanted)
    assert not found.hit and "gpu_name" in found.reason and "tensorrt_version" in found.reason
    assert not cache.engine_path(wanted).exists() and not cache.sidecar_path(wanted).exists()


@pytest.mark.parametrize("damage", ["flip", "truncate", "sidecar"])
def test_a_corrupt_entry_is_rebuilt_never_loaded(orin_config: BuildConfig, tmp_path: Path, damage: str) -> None:
    cache = EngineCache(tmp_path)
    key = _key(orin_config)
    path = cache.store(key, BLOB)
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
    elif damage == "truncate":
        path.write_bytes(bytes(data[:1000]))
    else:
        cache.sidecar_path(key).write_text("{not json")
    found = cache.lookup(key)
    assert not found.hit and found.engine is None
    assert ("checksum" if damage != "sidecar" else "unreadable") in found.reason
    assert not path.exists()
    cache.store(key, BLOB)  # the rebuild's store replaces it
    assert cache.lookup(key).engine == BLOB


def test_an_engine_without_its_sidecar_is_not_trusted(orin_config: BuildConfig, tmp_path: Path) -> None:
    """An interrupted store (engine written, sidecar not yet) reads as a miss."""
    cache = EngineCache(tmp_path)
    key = _key(orin_config)
    cache.store(key, BLOB)
    cache.sidecar_path(key).unlink()
    assert not cache.lookup(key).hit


def test_cache_folder_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("EDGEVISION_TRT_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "edgevision" / "trt"
    monkeypatch.setenv("EDGEVISION_TRT_CACHE", str(tmp_path / "mine"))
    assert default_cache_dir() == tmp_path / "mine"


# ------------------------------------------------------------------ I/O binding plan (pure)


def test_static_engine_buffers_are_sized_once() -> None:
    io = plan_io([TensorInfo("input", True, (1, 3, 224, 224), "float32", 0),
                  TensorInfo("logits", False, (1, 1000), "float32", 1)], max_batch=1, api="tensors")
    assert (io.input.nbytes, io.output.nbytes) == (1 * 3 * 224 * 224 * 4, 4000)
    assert not io.dynamic_batch and io.binding_order() == ["input", "logits"]


def test_dynamic_engine_buffers_fit_the_largest_batch() -> None:
    io = plan_io([TensorInfo("logits", False, (-1, 1000), "float32", 0),
                  TensorInfo("input", True, (-1, 3, 224, 224), "float32", 1)], max_batch=8, api="bindings")
    assert io.dynamic_batch and io.input.shape == (8, 3, 224, 224) and io.output.nbytes == 8 * 1000 * 4
    assert io.input.batch_nbytes(3) == 3 * 3 * 224 * 224 * 4 and io.input.batch_shape(3) == (3, 3, 224, 224)
    assert io.binding_order() == ["logits", "input"]  # execute_async_v2 takes pointers by binding index


@pytest.mark.parametrize("tensors, message", [
    ([TensorInfo("a", True, (1, 3), "float32", 0), TensorInfo("b", True, (1, 3), "float32", 1),
      TensorInfo("c", False, (1, 2), "float32", 2)], "2 inputs"),
    ([TensorInfo("a", True, (1, 3), "float16", 0), TensorInfo("c", False, (1, 2), "float32", 1)], "float16"),
    ([TensorInfo("a", True, (1, -1), "float32", 0), TensorInfo("c", False, (1, 2), "float32", 1)], "beyond the batch"),
    ([TensorInfo("a", True, (2, 3), "float32", 0), TensorInfo("c", False, (2, 2), "float32", 1)], "batch 2"),
])
def test_engines_edgevision_cannot_feed_are_refused(tensors, message) -> None:
    with pytest.raises(ArtifactError, match=message):
        plan_io(tensors, max_batch=1, api="tensors")


# ------------------------------------------------------------------ the Python 3.6 Nano script


@pytest.fixture(scope="module")
def nano_script():
    spec = importlib.util.spec_from_file_location("jetson_nano_trt", NANO_SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_nano_script_is_python_3_6_code() -> None:
    source = NANO_SCRIPT.read_text()
    tree = ast.parse(source, feature_version=(3, 6))  # rejects walrus, positional-only params, etc.
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported <= {"argparse", "hashlib", "json", "os", "sys", "tempfile", "time", "zipfile", "shutil",
                        "numpy", "cv2", "tensorrt", "pycuda"}, imported
    assert "__future__" not in imported


def test_nano_artifact_build_plan_matches_the_backend(nano_artifact: Path, nano_script, tmp_path: Path) -> None:
    manifest = nano_script.read_artifact(str(nano_artifact), str(tmp_path))
    raw = nano_script.read_build_config(str(tmp_path / "payload"), manifest)
    config = BuildConfig.from_dict(raw)
    assert (config.precision, config.workspace_mb, config.min_tensorrt) == ("fp16", 512, "8.2")
    expected = plan_build(config, "8.2.1").render()
    assert nano_script.render_plan(raw, "8.2.1") == expected == manifest["payload"]["builder_calls"]["tensorrt 8.2"]
    assert "config.max_workspace_size = 536870912" in expected
    dynamic = {**raw, "input_shape": ["batch", 3, 224, 224], "max_batch": 4}
    assert nano_script.render_plan(dynamic, "8.2.1") == plan_build(BuildConfig.from_dict(dynamic), "8.2.1").render()
    with pytest.raises(nano_script.DeviceError, match="edgevision runtime"):
        nano_script.plan_calls(raw, "10.3.0")


def test_nano_script_shares_the_engine_cache_layout(orin_config: BuildConfig, nano_script, tmp_path: Path) -> None:
    raw = orin_config.to_dict()
    key = _key(orin_config, tensorrt_version="8.2.1.8", gpu_name="NVIDIA Tegra X1", compute_capability="5.3")
    script_key = nano_script.engine_key("8.2.1.8", "NVIDIA Tegra X1", "5.3", raw["onnx_sha256"],
                                        nano_script.engine_settings(raw))
    assert script_key == key.to_dict() and nano_script.key_file_stem(script_key) == key.file_stem()
    EngineCache(tmp_path).store(key, BLOB)
    assert nano_script.cache_lookup(str(tmp_path), script_key) == BLOB
    EngineCache(tmp_path).engine_path(key).write_bytes(BLOB[:-1])
    assert nano_script.cache_lookup(str(tmp_path), script_key) is None
    assert not EngineCache(tmp_path).engine_path(key).exists()


def test_nano_script_preprocesses_like_edgevision(nano_artifact: Path, nano_script, tmp_path: Path) -> None:
    from edgevision.artifact import read_manifest
    from edgevision.preprocess import preprocess
    from edgevision.samples import sample_image

    manifest = read_manifest(nano_artifact)
    image = sample_image("grace_hopper")
    ours = nano_script.preprocess(image, manifest.preprocess.to_dict())
    np.testing.assert_array_equal(ours, preprocess(image, manifest.preprocess))


def test_nano_script_refuses_a_tampered_artifact(nano_artifact: Path, nano_script, tmp_path: Path) -> None:
    bad = tmp_path / "bad.evpkg"
    with zipfile.ZipFile(nano_artifact) as src, zipfile.ZipFile(bad, "w") as dst:
        for info in src.infolist():
            data = src.read(info.filename)
            if info.filename.endswith(BUILD_CONFIG_FILE):
                data = data.replace(b'"workspace_mb": 512', b'"workspace_mb": 513')
            dst.writestr(info, data)
    with pytest.raises(nano_script.DeviceError, match="fails its sha256 check"):
        nano_script.read_artifact(str(bad), str(tmp_path / "x"))


def test_nano_script_without_tensorrt_says_what_to_install(nano_artifact: Path, tmp_path: Path) -> None:
    import subprocess

    image = REPO / "edgevision" / "samples" / "images" / "coffee.jpg"
    code = BLOCK_TENSORRT + f"import runpy, sys; sys.argv = ['x', {str(nano_artifact)!r}, {str(image)!r}]\n" \
        f"sys.exit(runpy.run_path({str(NANO_SCRIPT)!r}, run_name='__main__'))\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == "error: TensorRT is not importable: on JetPack 4.6 `sudo apt install python3-libnvinfer`"


def _python36() -> str | None:
    """A working Python 3.6 interpreter (pyenv's shims exist even where the version does not run)."""
    import glob
    import shutil
    import subprocess

    candidates = sorted(glob.glob(str(Path.home() / ".pyenv/versions/3.6*/bin/python3.6")))
    candidates += [c for c in (shutil.which("python3.6"),) if c]
    for candidate in candidates:
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


def test_nano_script_runs_under_a_real_python_3_6(nano_artifact: Path, tmp_path: Path) -> None:
    """JetPack 4.6's Python: artifact check, build plan, cache key and the no-TensorRT exit, stdlib only."""
    import subprocess

    python36 = _python36()
    if python36 is None:
        pytest.skip("no Python 3.6 interpreter here (pyenv or PATH); test_nano_script_is_python_3_6_code still ran")
    image = REPO / "edgevision" / "samples" / "images" / "coffee.jpg"
    code = textwrap.dedent(f"""
        import json, os, runpy, sys
        m = runpy.run_path({str(NANO_SCRIPT)!r})
        manifest = m["read_artifact"]({str(nano_artifact)!r}, {str(tmp_path)!r})
        cfg = m["read_build_config"](os.path.join({str(tmp_path)!r}, "payload"), manifest)
        key = m["engine_key"]("8.2.1.8", "NVIDIA Tegra X1", "5.3", cfg["onnx_sha256"], m["engine_settings"](cfg))
        rc = m["main"]([{str(nano_artifact)!r}, {str(image)!r}])
        print(json.dumps({{"version": list(sys.version_info[:2]), "plan": m["render_plan"](cfg, "8.2.1"),
                          "stem": m["key_file_stem"](key), "rc": rc}}))
        """)
    result = subprocess.run([python36, "-c", code], capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    config = BuildConfig.read(tmp_path / "payload" / BUILD_CONFIG_FILE)
    assert out["version"] == [3, 6] and out["rc"] == 2
    assert out["plan"] == plan_build(config, "8.2.1").render()
    assert out["stem"] == EngineKey("8.2.1.8", "NVIDIA Tegra X1", "5.3", config.onnx_sha256,
                                    config.engine_settings()).file_stem()
    assert "TensorRT is not importable" in result.stderr
