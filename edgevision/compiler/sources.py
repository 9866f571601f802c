"""Turn whatever the user points at into a ModelSpec.

Accepted: ``default``; a Python factory ``package.module:fn`` or ``file.py:fn``; a TorchScript
file; a ``torch.export`` archive (.pt2); a state_dict with ``--arch`` naming its factory; an
ONNX file. Full pickles only with ``trust_remote_code`` since unpickling runs arbitrary code.
"""
from __future__ import annotations

import importlib
import importlib.util
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

from ..artifact.package import sha256_file
from ..errors import EdgevisionError, InputError
from ..preprocess import PreprocessConfig
from .spec import ModelSpec

DEFAULT_MODEL = "edgevision.models:efficientnet_lite0"


def _call_factory(ref: str) -> Any:
    module_ref, _, attr = ref.rpartition(":")
    if not module_ref or not attr:
        raise InputError(f"model reference {ref!r} is not of the form module:factory",
                         "write e.g. examples/mobilenet_v2.py:mobilenet_v2 or mypkg.models:build")
    if module_ref.endswith(".py"):
        path = Path(module_ref)
        if not path.is_file():
            raise InputError(f"model file {path} does not exist", "check the path")
        spec = importlib.util.spec_from_file_location(f"_edgevision_user_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as err:
            raise InputError(f"cannot import {module_ref!r} ({err})",
                             "check the module name and that it is on PYTHONPATH") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"{module_ref} has no callable {attr!r}", "name a function that returns the model")
    return factory()


def _as_spec(obj: Any, name: str, source: dict[str, Any]) -> ModelSpec:
    import torch

    if isinstance(obj, ModelSpec):
        obj.source = {**source, **obj.source}
        return obj
    if isinstance(obj, torch.nn.Module):
        return ModelSpec(module=obj.eval(), name=name, source=source)
    raise InputError(f"{source.get('ref', name)} returned {type(obj).__name__}, not a torch.nn.Module",
                     "return an nn.Module or an edgevision ModelSpec")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    return any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names)


def _is_exported_program(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any("serialized_exported_program" in n or n.endswith("models/model.json") for n in zf.namelist())


def _load_weights(path: Path, trust_remote_code: bool) -> Any:
    import pickle

    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_remote_code)
    except pickle.UnpicklingError as err:
        # weights_only refuses a global it does not allow-list ("Unsupported global: GLOBAL mod.Cls");
        # any other unpickling failure means the bytes are not a pickle at all.
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(err))
        if trust_remote_code or found is None:
            raise InputError(f"cannot read model file {path}: it is corrupt or not a PyTorch file",
                             "save it again with torch.save, torch.jit.save or torch.export.save") from err
        raise InputError(f"{path} holds pickled Python objects ({found.group(1)}), not just weights",
                         "save a state_dict or TorchScript instead, or pass --trust-remote-code "
                         "if you trust who made the file") from err
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise InputError(f"cannot read model file {path}: {str(err).splitlines()[0]}",
                         "it is corrupt or not a PyTorch file") from err
    except (ImportError, AttributeError) as err:  # only reachable with trust_remote_code: full unpickling
        raise InputError(f"{path} needs the code that defined its classes: {err}",
                         "put the module defining the model class on PYTHONPATH") from err
    except Exception as err:  # a full unpickler fails in arbitrary ways on garbage
        raise InputError(f"cannot read model file {path}: it is corrupt or not a PyTorch file "
                         f"({type(err).__name__})", "save it again with torch.save") from err


def load_source(ref: str | None, arch: str | None = None, trust_remote_code: bool = False) -> ModelSpec:
    ref = DEFAULT_MODEL if ref in (None, "", "default") else ref
    path = Path(ref)
    if not path.exists() and ":" in ref and not ref.endswith((".pt", ".pth", ".onnx", ".pt2")):
        return _as_spec(_call_factory(ref), ref.rpartition(":")[2], {"kind": "factory", "ref": ref})
    if not path.is_file():
        raise InputError(f"model file {path} does not exist",
                         "pass a .pt/.pth/.pt2/.onnx file, or a module:factory reference")
    source = {"kind": "", "ref": str(path), "sha256": sha256_file(path)}
    name = path.stem
    if path.suffix.lower() == ".onnx":
        return _onnx_spec(path, source)

    import torch

    if _is_torchscript(path):
        source["kind"] = "torchscript"
        try:
            return ModelSpec(module=torch.jit.load(str(path), map_location="cpu").eval(), name=name, source=source)
        except RuntimeError as err:
            raise InputError(f"cannot load TorchScript {path}: {str(err).splitlines()[0]}",
                             "re-save it with torch.jit.save") from err
    if _is_exported_program(path):
        source["kind"] = "torch.export"
        try:
            program = torch.export.load(str(path))
            return ModelSpec(module=program.module(), name=name, source=source, exported_program=program)
        except Exception as err:  # torch.export raises many types for bad archives
            raise InputError(f"cannot load exported program {path}: {str(err).splitlines()[0]}",
                             "re-save it with torch.export.save") from err
    obj = _load_weights(path, trust_remote_code)
    if isinstance(obj, torch.nn.Module):
        source["kind"] = "pickled module"
        return ModelSpec(module=obj.eval(), name=name, source=source)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if not arch:
            raise InputError(f"{path} is a state_dict (weights only) and needs its architecture",
                             "pass --arch module:factory, e.g. --arch examples/resnet18.py:resnet18")
        spec = _as_spec(_call_factory(arch), name, {**source, "kind": "state_dict", "arch": arch})
        _load_state_dict(spec.module, obj, path, arch)
        spec.name = name
        return spec
    raise InputError(f"{path} holds a {type(obj).__name__}, not a model or a state_dict",
                     "save the model with torch.jit.save, torch.export.save or torch.save(model.state_dict())")


def _load_state_dict(module: Any, state: dict, path: Path, arch: str) -> None:
    result_missing = set(module.state_dict()) - set(state)
    unexpected = set(state) - set(module.state_dict())
    if result_missing or unexpected:
        sample = sorted(result_missing)[:3] + sorted(unexpected)[:3]
        raise InputError(f"weights in {path} do not fit {arch}: {len(result_missing)} missing and "
                         f"{len(unexpected)} unexpected keys (e.g. {', '.join(sample)})",
                         "pass the --arch the weights were trained with")
    try:
        module.load_state_dict(state)
    except RuntimeError as err:
        first = next((ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln), str(err).splitlines()[0])
        raise InputError(f"weights in {path} do not fit {arch}: {first}",
                         "pass the --arch the weights were trained with") from err
    module.eval()


def _onnx_spec(path: Path, source: dict[str, Any]) -> ModelSpec:
    try:
        import onnx
    except ImportError as err:
        raise EdgevisionError("reading ONNX models needs the onnx package", "pip install 'edgevision[compile]'") from err
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as err:  # onnx raises DecodeError, ValidationError, ...
        raise InputError(f"{path} is not a valid ONNX model: {str(err).splitlines()[0]}",
                         "re-export it with torch.onnx.export") from err
    dims = model.graph.input[0].type.tensor_type.shape.dim
    hw = [d.dim_value for d in dims[2:4]] if len(dims) == 4 else []
    preprocess = (PreprocessConfig(input_size=(hw[0], hw[1]), resize_short=round(min(hw) / 0.875))
                  if len(hw) == 2 and all(hw) else PreprocessConfig())
    return ModelSpec(module=None, name=path.stem, preprocess=preprocess, onnx_path=path,
                     source={**source, "kind": "onnx"})
