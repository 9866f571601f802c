"""A complete third-party backend in one file: the worked example of docs/write-a-backend.md.

It is installed through the ``edgevision.backends`` entry point (tests/test_architecture.py writes a
dist-info that points at :class:`ToyBackend`), so edgevision finds it without a line of core code.
The payload is the ONNX graph itself, run by ONNX Runtime with the graph optimisation level the user
chose: enough to show every hook (options, a CLI flag, compile, load, run) with a real runtime.
"""
from __future__ import annotations

import argparse
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from edgevision.backends import Backend, CompileSettings, LoadOptions
from edgevision.backends.base import option, option_names
from edgevision.errors import BackendUnavailable

MODEL_FILE = "model.onnx"
LEVELS = ("basic", "extended", "all")  # ONNX Runtime's graph optimisation levels, by their short names


@dataclass(frozen=True)
class ToyOptions:
    """The ``--option`` keys of toy targets: typed, with defaults and help; edgevision parses and checks them."""

    optimization: Literal["basic", "extended", "all"] = option("all", "ONNX Runtime graph optimisation level")


class ToyRunner:
    thread_safe = True  # InferenceSession.run may be called from several threads at once

    def __init__(self, session: Any) -> None:
        self.session = session
        self.input_name = session.get_inputs()[0].name

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input_name: batch})[0]


class ToyBackend(Backend):
    name = "toy"
    extra = "toy"  # pip install 'edgevision[toy]' would not exist: a plugin names its own package here
    runtime_module = "onnxruntime"
    precisions = ("fp32",)
    portable_payload = True  # an ONNX graph runs on any CPU
    options_schema = ToyOptions
    option_keys = option_names(ToyOptions)
    payload_files = ("model",)
    payload_keys = frozenset({"model", "optimization"})

    def add_cli_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--toy-optimization", choices=LEVELS,
                            help="toy targets: ONNX Runtime graph optimisation level (default all)")

    def options_from_cli(self, args: argparse.Namespace) -> dict[str, Any]:
        return {} if args.toy_optimization is None else {"optimization": args.toy_optimization}

    def compile(self, onnx_path: Path, target: Any, settings: CompileSettings, out_dir: Path) -> dict[str, Any]:
        level = self.parse_options(settings.options).optimization  # already checked by the pipeline
        shutil.copyfile(onnx_path, out_dir / MODEL_FILE)
        return {"model": MODEL_FILE, "optimization": level}

    def check_payload(self, payload: dict[str, Any]) -> str | None:
        level = payload.get("optimization")
        return None if level in LEVELS else f"optimization {str(level)[:20]!r} is not one of {', '.join(LEVELS)}"

    def load(self, payload_dir: Path, manifest: Any, options: LoadOptions) -> ToyRunner:
        try:
            import onnxruntime as ort
        except ImportError as err:
            raise BackendUnavailable("the toy backend needs ONNX Runtime", "pip install onnxruntime") from err
        session_options = ort.SessionOptions()
        session_options.graph_optimization_level = {
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL}[manifest.payload["optimization"]]
        if options.threads:
            session_options.intra_op_num_threads = int(options.threads)
        session = ort.InferenceSession(str(payload_dir / manifest.payload["model"]), session_options,
                                       providers=["CPUExecutionProvider"])
        return ToyRunner(session)
