#!/usr/bin/env python3
"""Run an edgevision artifact on the original Jetson Nano (JetPack 4.6: Python 3.6, TensorRT 8.2).

The edgevision runtime needs Python 3.9+, which JetPack 4.6 does not have, so this one file does
what ``edgevision.runtime.load`` does for a TensorRT artifact, with only the Python 3.6 standard
library, numpy, OpenCV, TensorRT 8.x and pycuda:

  1. verify the artifact (every member against the manifest's sha256) and unpack its payload;
  2. build the TensorRT engine from the payload ONNX on first run and cache it in
     ~/.cache/edgevision/trt, under the same key as edgevision's TensorRT backend (TensorRT
     version, GPU name and compute capability, ONNX sha256, build settings); later runs load it;
  3. preprocess images as recorded in the manifest, run them (pinned buffers bound once,
     execute_async_v2 on a CUDA stream) and print the top-5 labels.

Usage on the Nano:
    python3 jetson_nano_trt.py model.jetson-nano.evpkg photo.jpg [more.jpg ...] [--repeat 100]

Written against the TensorRT 8.2 and pycuda documentation: UNVERIFIED ON HARDWARE.
Keep this file Python 3.6 compatible: no dataclasses, no ``from __future__ import annotations``.
"""
import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import zipfile

SUPPORTED_TRT = ((8, 2), (10, 0))  # [min, max): bindings API + EXPLICIT_BATCH networks
MEMORY_POOL_API_FROM = (8, 4)
KEY_SCHEMA = 1
BUILD_SCHEMA = 1
# bilinear is INTER_LINEAR_EXACT (5), as in edgevision.preprocess: bit-identical on aarch64 and x86.
INTERPOLATIONS = {"bilinear": 5, "nearest": 0, "bicubic": 2, "area": 3, "lanczos": 4}  # cv2.INTER_* values


class DeviceError(Exception):
    """One-line failure: what went wrong and how to fix it."""


# ---------------------------------------------------------------- artifact (stdlib only)

def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def read_artifact(path, dest):
    """Check every member against the manifest's sha256, extract the payload, return the manifest."""
    try:
        zf = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile) as err:
        raise DeviceError("{} is not a readable edgevision artifact ({})".format(path, err))
    with zf:
        manifest = json.loads(zf.read("manifest.json").decode("utf-8"))
        if manifest.get("format") != "edgevision-artifact":
            raise DeviceError("{} is not an edgevision artifact".format(path))
        if manifest.get("backend") != "tensorrt":
            raise DeviceError("{} was compiled for {}, not TensorRT: compile with --target jetson-nano".format(
                path, manifest.get("backend")))
        expected = manifest["files"]
        members = set(n for n in zf.namelist() if not n.endswith("/")) - {"manifest.json"}
        if members != set(expected):
            raise DeviceError("{} members do not match its manifest: copy or compile it again".format(path))
        for name in sorted(expected):
            parts = name.split("/")
            if name.startswith("/") or ".." in parts or "\\" in name:
                raise DeviceError("{} has an unsafe member path {!r}".format(path, name))
            data = zf.read(name)
            if sha256_bytes(data) != expected[name]:
                raise DeviceError("{}: {} fails its sha256 check: copy or compile it again".format(path, name))
            target = os.path.join(dest, *parts)
            if not os.path.isdir(os.path.dirname(target)):
                os.makedirs(os.path.dirname(target))
            with open(target, "wb") as fh:
                fh.write(data)
    return manifest


def read_build_config(payload_dir, manifest):
    path = os.path.join(payload_dir, manifest["payload"].get("build_config", "tensorrt_build.json"))
    with open(path) as fh:
        config = json.load(fh)
    if config.get("schema") != BUILD_SCHEMA:
        raise DeviceError("build config schema {} is not {}: recompile the artifact".format(
            config.get("schema"), BUILD_SCHEMA))
    return config


# ---------------------------------------------------------------- engine cache key (same as the backend's)

def engine_settings(config):
    return {"precision": config["precision"], "input_name": config["input_name"],
            "input_shape": list(config["input_shape"]), "explicit_quantization": config["explicit_quantization"],
            "workspace_mb": config["workspace_mb"], "dla_core": config["dla_core"],
            "gpu_fallback": config["gpu_fallback"], "max_batch": config["max_batch"],
            "opt_batch": config["opt_batch"], "schema": config["schema"]}


def engine_key(trt_version, gpu_name, compute_capability, model_sha256, settings):
    return {"tensorrt_version": trt_version, "gpu_name": gpu_name, "compute_capability": compute_capability,
            "model_sha256": model_sha256, "settings": settings, "schema": KEY_SCHEMA}


def key_file_stem(key):
    digest = sha256_bytes(json.dumps(key, sort_keys=True, separators=(",", ":")).encode("utf-8"))
    return "{}-{}".format(key["model_sha256"][:12], digest[:20])


def default_cache_dir():
    if os.environ.get("EDGEVISION_TRT_CACHE"):
        return os.environ["EDGEVISION_TRT_CACHE"]
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "edgevision", "trt")


def atomic_write(path, data):
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def cache_lookup(cache_dir, key):
    """The cached engine bytes, or None (a mismatched or corrupt entry is removed, never returned)."""
    stem = os.path.join(cache_dir, key_file_stem(key))
    engine_path, sidecar_path = stem + ".engine", stem + ".json"
    if not (os.path.isfile(engine_path) and os.path.isfile(sidecar_path)):
        return None
    try:
        with open(sidecar_path) as fh:
            sidecar = json.load(fh)
        with open(engine_path, "rb") as fh:
            data = fh.read()
    except (OSError, ValueError):
        sidecar, data = None, b""
    if (not isinstance(sidecar, dict) or sidecar.get("key") != key
            or sidecar.get("engine_sha256") != sha256_bytes(data) or sidecar.get("size") != len(data)):
        for p in (sidecar_path, engine_path):
            if os.path.exists(p):
                os.remove(p)
        return None
    return data


def cache_store(cache_dir, key, data):
    if not os.path.isdir(cache_dir):
        os.makedirs(cache_dir)
    stem = os.path.join(cache_dir, key_file_stem(key))
    if os.path.exists(stem + ".json"):
        os.remove(stem + ".json")
    atomic_write(stem + ".engine", data)
    sidecar = {"key": key, "engine_sha256": sha256_bytes(data), "size": len(data),
               "engine_file": os.path.basename(stem + ".engine")}
    atomic_write(stem + ".json", (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return stem + ".engine"


# ---------------------------------------------------------------- build plan (same calls as the backend's)

def parse_version(text):
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def plan_calls(config, trt_version):
    """[(kind, member, args)]: kind 'assign' or 'call'; an enum argument is ('enum', Enum, MEMBER)."""
    version = parse_version(trt_version)[:2]
    if not SUPPORTED_TRT[0] <= version < SUPPORTED_TRT[1]:
        raise DeviceError("this script drives TensorRT 8.2-9.x, found {}: on JetPack 6 use the edgevision "
                          "runtime instead".format(trt_version))
    if version < parse_version(config["min_tensorrt"])[:2]:
        raise DeviceError("TensorRT {} is older than the {} this artifact needs".format(
            trt_version, config["min_tensorrt"]))
    if config["precision"] == "int8":
        raise DeviceError("int8 is not supported on the Jetson Nano (Maxwell): compile with --precision fp16")
    if config["dla_core"] >= 0:
        raise DeviceError("the Jetson Nano has no DLA: compile with --option dla_core=-1")
    workspace = config["workspace_mb"] << 20
    if version >= MEMORY_POOL_API_FROM:
        calls = [("call", "set_memory_pool_limit", (("enum", "MemoryPoolType", "WORKSPACE"), workspace))]
    else:
        calls = [("assign", "max_workspace_size", (workspace,))]
    if config["precision"] == "fp16":
        calls.append(("call", "set_flag", (("enum", "BuilderFlag", "FP16"),)))
    return calls


def profile_shapes(config):
    """(name, min, opt, max) for a dynamic-batch input, else None."""
    shape = config["input_shape"]
    if not isinstance(shape[0], str):
        return None
    rest = tuple(int(d) for d in shape[1:])
    return (config["input_name"], (1,) + rest, (config["opt_batch"],) + rest, (config["max_batch"],) + rest)


def _render_arg(arg):
    if isinstance(arg, tuple) and arg and arg[0] == "enum":
        return "trt.{}.{}".format(arg[1], arg[2])
    return repr(arg)


def render_plan(config, trt_version):
    """The same statements as edgevision's BuildPlan.render(), for comparing the two."""
    lines = ["network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))",
             "parser = trt.OnnxParser(network, logger); parser.parse(onnx_bytes)",
             "config = builder.create_builder_config()"]
    for kind, member, args in plan_calls(config, trt_version):
        rendered = [_render_arg(a) for a in args]
        lines.append("config.{} = {}".format(member, rendered[0]) if kind == "assign"
                     else "config.{}({})".format(member, ", ".join(rendered)))
    profile = profile_shapes(config)
    if profile is not None:
        lines += ["profile = builder.create_optimization_profile()",
                  "profile.set_shape({!r}, {}, {}, {})".format(*profile),
                  "config.add_optimization_profile(profile)"]
    lines.append("plan = builder.build_serialized_network(network, config)")
    return lines


# ---------------------------------------------------------------- preprocessing (mirrors edgevision.preprocess)

def preprocess(image, pre, channels="BGR"):
    import cv2
    import numpy as np

    interp = INTERPOLATIONS[pre["interpolation"]]
    out_h, out_w = pre["input_size"]
    h, w = image.shape[:2]
    # Manifests before resize modes: no short side meant a direct resize.
    mode = pre.get("resize", "direct" if pre.get("resize_short") is None else "crop")
    if mode == "letterbox":
        scale = min(out_h / h, out_w / w)
        new_w, new_h = max(1, min(out_w, int(round(w * scale)))), max(1, min(out_h, int(round(h * scale))))
        canvas = np.full((out_h, out_w, 3), pre.get("pad_value", 0), dtype=np.uint8)
        top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
        canvas[top:top + new_h, left:left + new_w] = cv2.resize(image, (new_w, new_h), interpolation=interp)
        image = canvas
    elif mode == "crop" and pre.get("crop", "center") == "center":
        short = pre["resize_short"] or int(round(min(out_h, out_w) / pre.get("crop_pct", 0.875)))
        scale = short / min(h, w)
        size = (max(out_w, int(round(w * scale))), max(out_h, int(round(h * scale))))
        if size[0] * size[1] <= 4 * out_w * out_h:
            image = cv2.resize(image, size, interpolation=interp)
            top, left = (size[1] - out_h) // 2, (size[0] - out_w) // 2
            image = image[top:top + out_h, left:left + out_w]
        else:  # extreme aspect ratios: crop in source coordinates first (bounded memory)
            crop_w, crop_h = min(w, max(1, int(round(out_w / scale)))), min(h, max(1, int(round(out_h / scale))))
            top, left = (h - crop_h) // 2, (w - crop_w) // 2
            image = cv2.resize(image[top:top + crop_h, left:left + crop_w], (out_w, out_h), interpolation=interp)
    else:
        image = cv2.resize(image, (out_w, out_h), interpolation=interp)
    if channels != pre["channel_order"]:
        image = image[:, :, ::-1]
    dtype = pre.get("input_dtype", "float32")
    if dtype == "uint8":
        tensor = image
    else:
        mean = np.asarray(pre["mean"], np.float32) * 255.0
        inv_std = 1.0 / (np.asarray(pre["std"], np.float32) * 255.0)
        tensor = (image.astype(np.float32) - mean) * inv_std
    if pre["layout"] == "NCHW":
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor, dtype=np.dtype(dtype))


def top_k(logits, labels, k=5, scores="logits"):
    import numpy as np

    if scores == "probabilities":  # the model ends in Softmax/Sigmoid already: not softmaxed twice
        probs = np.asarray(logits, np.float32)
    else:
        z = logits - logits.max()
        probs = np.exp(z) / np.exp(z).sum()
    order = np.argsort(-probs)[:k]
    return [(int(i), labels[int(i)], float(probs[i])) for i in order]


# ---------------------------------------------------------------- device: TensorRT 8.x + pycuda

class NanoEngine(object):
    """Engine built or loaded from the cache; pinned host and device buffers bound once."""

    def __init__(self, payload_dir, manifest, cache_dir):
        try:
            import tensorrt as trt
        except ImportError:
            raise DeviceError("TensorRT is not importable: on JetPack 4.6 `sudo apt install python3-libnvinfer`")
        try:
            import pycuda.driver as cuda
        except ImportError:
            raise DeviceError("pycuda is missing: `pip3 install pycuda` (needs /usr/local/cuda/bin on PATH)")
        import numpy as np

        self.trt, self.cuda, self.np = trt, cuda, np
        self.config = read_build_config(payload_dir, manifest)
        plan_calls(self.config, trt.__version__)  # refuse unsupported settings before touching the GPU
        cuda.init()
        device = cuda.Device(0)
        self.cuda_context = device.make_context()
        major, minor = device.compute_capability()
        onnx_path = os.path.join(payload_dir, self.config["onnx"])
        with open(onnx_path, "rb") as fh:
            onnx_bytes = fh.read()
        if sha256_bytes(onnx_bytes) != self.config["onnx_sha256"]:
            raise DeviceError("the payload ONNX does not match its build config: recompile the artifact")
        key = engine_key(trt.__version__, device.name(), "{}.{}".format(major, minor),
                         self.config["onnx_sha256"], engine_settings(self.config))
        self.logger = trt.Logger(trt.Logger.WARNING)
        self.runtime = trt.Runtime(self.logger)
        data = cache_lookup(cache_dir, key)
        self.engine = self.runtime.deserialize_cuda_engine(data) if data is not None else None
        if self.engine is None:
            sys.stderr.write("building the TensorRT engine (minutes, once); cache: {}\n".format(cache_dir))
            start = time.time()
            data = self._build(onnx_bytes)
            path = cache_store(cache_dir, key, data)
            sys.stderr.write("built in {:.0f} s: {}\n".format(time.time() - start, path))
            self.engine = self.runtime.deserialize_cuda_engine(data)
        if self.engine is None:
            raise DeviceError("TensorRT could not deserialize the engine: rerun with a fresh cache")
        self.context = self.engine.create_execution_context()
        self._bind()

    def _build(self, onnx_bytes):
        trt = self.trt
        builder = trt.Builder(self.logger)
        network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH))
        parser = trt.OnnxParser(network, self.logger)
        if not parser.parse(onnx_bytes):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise DeviceError("TensorRT cannot parse the ONNX: " + errors)
        config = builder.create_builder_config()
        for kind, member, args in plan_calls(self.config, trt.__version__):
            values = [getattr(getattr(trt, a[1]), a[2]) if isinstance(a, tuple) else a for a in args]
            if kind == "assign":
                setattr(config, member, values[0])
            else:
                getattr(config, member)(*values)
        profile = profile_shapes(self.config)
        if profile is not None:
            opt_profile = builder.create_optimization_profile()
            opt_profile.set_shape(*profile)
            config.add_optimization_profile(opt_profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise DeviceError("TensorRT failed to build the engine (see its log): try --precision fp32")
        return bytes(serialized)

    def _bind(self):
        trt, cuda, np = self.trt, self.cuda, self.np
        self.max_batch = self.config["max_batch"]
        self.dynamic = isinstance(self.config["input_shape"][0], str)
        self.buffers = []
        for i in range(self.engine.num_bindings):
            shape = tuple(self.engine.get_binding_shape(i))
            shape = (self.max_batch,) + shape[1:] if shape[0] < 0 else shape
            host = cuda.pagelocked_empty(shape, trt.nptype(self.engine.get_binding_dtype(i)))
            self.buffers.append((self.engine.binding_is_input(i), host, cuda.mem_alloc(host.nbytes)))
        self.bindings = [int(dev) for _, _, dev in self.buffers]
        self.input_index = [i for i, b in enumerate(self.buffers) if b[0]][0]
        self.output_index = [i for i, b in enumerate(self.buffers) if not b[0]][0]
        self.stream = cuda.Stream()
        self.bound_batch = None if self.dynamic else self.max_batch

    def run(self, batch):
        cuda = self.cuda
        n = batch.shape[0]
        if n != self.bound_batch:
            if not self.dynamic or n > self.max_batch:
                raise DeviceError("batch {} does not fit this engine (max {})".format(n, self.max_batch))
            self.context.set_binding_shape(self.input_index, (n,) + tuple(batch.shape[1:]))
            self.bound_batch = n
        _, host_in, dev_in = self.buffers[self.input_index]
        _, host_out, dev_out = self.buffers[self.output_index]
        host_in[:n] = batch
        cuda.memcpy_htod_async(dev_in, host_in, self.stream)
        if not self.context.execute_async_v2(self.bindings, self.stream.handle):
            raise DeviceError("TensorRT failed to enqueue inference")
        cuda.memcpy_dtoh_async(host_out, dev_out, self.stream)
        self.stream.synchronize()
        return host_out[:n].copy()

    def close(self):
        self.cuda_context.pop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[1])
    parser.add_argument("artifact")
    parser.add_argument("images", nargs="+")
    parser.add_argument("--cache", default=default_cache_dir(), help="engine cache folder")
    parser.add_argument("--repeat", type=int, default=0, help="time this many extra runs of the first image")
    args = parser.parse_args(argv)
    workdir = tempfile.mkdtemp(prefix="edgevision-nano-")
    try:
        manifest = read_artifact(args.artifact, workdir)
        engine = NanoEngine(os.path.join(workdir, "payload"), manifest, args.cache)
        try:
            try:
                import cv2
            except ImportError:
                raise DeviceError("OpenCV is not importable: `sudo apt install python3-opencv`")
            pre = manifest["preprocess"]
            for name in args.images:
                image = cv2.imread(name, cv2.IMREAD_COLOR)
                if image is None:
                    raise DeviceError("cannot read image {}".format(name))
                logits = engine.run(preprocess(image, pre)[None])[0]
                best = ", ".join("{} {:.1%}".format(label, p) for _, label, p in top_k(logits, manifest["labels"],
                                                                                     scores=manifest.get("scores", "logits")))
                print("{}: {}".format(name, best))
            if args.repeat:
                tensor = preprocess(cv2.imread(args.images[0], cv2.IMREAD_COLOR), pre)[None]
                times = []
                for _ in range(args.repeat):
                    start = time.perf_counter()
                    engine.run(tensor)
                    times.append((time.perf_counter() - start) * 1e3)
                times.sort()
                print("latency over {} runs: median {:.2f} ms, p90 {:.2f} ms".format(
                    len(times), times[len(times) // 2], times[int(len(times) * 0.9)]))
        finally:
            engine.close()
    except DeviceError as err:
        sys.stderr.write("error: {}\n".format(err))
        return 2
    finally:
        import shutil
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
