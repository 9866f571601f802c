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

from ..errors import EdgevisionError, InputError
from ..files import sha256_file
from .spec import ModelSpec

DEFAULT_MODEL = "edgevision.models:efficientnet_lite0"


def _import_file(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location(f"_edgevision_user_{path.stem}", path)
    if spec is None or spec.loader is None:
        raise InputError(f"cannot import {path}", "pass a .py file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and pickling look the module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(spec.name, None)
        raise
    return module


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0]}" if text else type(err).__name__


def _call_factory(ref: str) -> Any:
    """Import ``module:fn`` (or ``file.py:fn``) and call it; whatever the user's code does wrong is one line."""
    module_ref, _, attr = ref.rpartition(":")
    if not module_ref or not attr:
        raise InputError(f"model reference {ref!r} is not of the form module:factory",
                         "write e.g. examples/mobilenet_v2.py:mobilenet_v2 or mypkg.models:build")
    try:
        if module_ref.endswith(".py"):
            path = Path(module_ref)
            if not path.is_file():
                raise InputError(f"model file {path} does not exist", "check the path")
            module = _import_file(path)
        else:
            module = importlib.import_module(module_ref)
    except EdgevisionError:
        raise
    except SyntaxError as err:
        raise InputError(f"{module_ref} has a syntax error (line {err.lineno}: {err.msg})",
                         "fix the file; python -m py_compile shows the line") from err
    except ImportError as err:
        raise InputError(f"cannot import {module_ref!r} ({_first_line(err)})",
                         "check the module name, that it is on PYTHONPATH and that what it imports is installed") from err
    except RecursionError as err:
        raise InputError(f"importing {module_ref} recursed without end", "fix the module's top-level code") from err
    except Exception as err:  # the user's top-level code can raise anything
        raise InputError(f"importing {module_ref} failed ({_first_line(err)})",
                         "fix the module's top-level code; --debug shows the trace") from err
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"{module_ref} has no callable {attr!r}", "name a function that returns the model")
    import inspect

    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        params = []
    required = [p.name for p in params if p.default is p.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    if required:
        raise InputError(f"factory {ref} needs arguments ({', '.join(required)}); edgevision calls it with none",
                         "give the parameters defaults, or wrap it in a function without arguments")
    try:
        return factory()
    except EdgevisionError:
        raise
    except RecursionError as err:
        raise InputError(f"factory {ref} recursed without end", "fix the factory") from err
    except Exception as err:  # the user's factory can raise anything
        raise InputError(f"factory {ref} raised {_first_line(err)}", "fix the factory; --debug shows the trace") from err


def _as_spec(obj: Any, name: str, source: dict[str, Any]) -> ModelSpec:
    import torch

    if isinstance(obj, ModelSpec):
        obj.source = {**source, **obj.source}
        return obj
    if isinstance(obj, torch.nn.Module):
        return _module_spec(obj.eval(), name, source)
    raise InputError(f"{source.get('ref', name)} returned {type(obj).__name__}, not a torch.nn.Module",
                     "return an nn.Module or an edgevision ModelSpec")


def _module_spec(module: Any, name: str, source: dict[str, Any]) -> ModelSpec:
    """A module as is; a Hugging Face model also brings its labels (id2label) and image size."""
    spec = ModelSpec(module=module, name=name, source=source)
    config = getattr(module, "config", None)
    if config is None:
        return spec
    mapping = getattr(config, "id2label", None)
    if isinstance(mapping, dict) and mapping:
        try:
            spec.labels = [str(mapping[i]) for i in range(len(mapping))]
        except KeyError:
            pass
    size = getattr(config, "image_size", None)
    if isinstance(size, int) and not isinstance(size, bool) and 8 <= size <= 8192:
        size = (size, size)
    if isinstance(size, (list, tuple)) and len(size) == 2 and all(isinstance(v, int) and 8 <= v <= 8192 for v in size):
        spec.preprocess = spec.preprocess.with_size((int(size[0]), int(size[1])))
    return spec


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
    if path.stat().st_size == 0:
        raise InputError(f"model file {path} is empty", "save the model again; the write may have failed")
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
        return _module_spec(obj.eval(), name, source)
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
    """An ONNX file: its input, outputs, size and metadata are read when compiling (onnx_graph)."""
    return ModelSpec(module=None, name=path.stem, onnx_path=path, source={**source, "kind": "onnx"})
