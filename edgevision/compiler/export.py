"""PyTorch -> ONNX, with failures turned into one-line errors that name the operator."""
from __future__ import annotations

import logging
import re
import warnings
from pathlib import Path

from ..errors import EdgevisionError
from ..quiet import silenced
from .spec import ModelSpec

log = logging.getLogger(__name__)
OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def export_onnx(spec: ModelSpec, out_path: Path, batch: int = 1, dynamic_batch: bool = False,
                output_name: str = OUTPUT_NAME) -> Path:
    import torch

    shape = spec.preprocess.tensor_shape(batch)
    dummy = torch.zeros(shape, dtype=getattr(torch, spec.preprocess.input_dtype))
    dynamic_axes = {INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}} if dynamic_batch else None
    try:
        with warnings.catch_warnings(), silenced(log, "ONNX exporter", native=True):  # it dumps its IR from C++
            warnings.simplefilter("ignore")
            if spec.exported_program is not None:
                # A torch.export program is already a graph: the dynamo exporter takes it as is.
                torch.onnx.export(spec.exported_program, (dummy,), str(out_path), dynamo=True,
                                  opset_version=OPSET, input_names=[INPUT_NAME], output_names=[output_name],
                                  external_data=False, verbose=False)
            else:
                # dynamo=False: the TorchScript exporter handles TorchScript modules and needs no onnxscript.
                torch.onnx.export(spec.module, (dummy,), str(out_path), dynamo=False, opset_version=OPSET,
                                  input_names=[INPUT_NAME], output_names=[output_name],
                                  dynamic_axes=dynamic_axes, do_constant_folding=True)
    except torch.onnx.errors.UnsupportedOperatorError as err:
        op = re.search(r"operator '?([\w:.]+)'?", str(err))
        raise EdgevisionError(f"ONNX export failed: operator {op.group(1) if op else str(err)} is not "
                              f"supported at opset {OPSET}",
                              "replace that layer with standard ops or register a custom symbolic") from err
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if "size" in first or "shape" in first or "expected input" in first:
            raise EdgevisionError(f"ONNX export failed: the model rejects input shape {tuple(shape)} ({first})",
                                  "set --input-size to what the model was trained on") from err
        raise EdgevisionError(f"ONNX export failed: {first}", "run with --debug for the full trace") from err
    log.info("exported ONNX opset %d to %s", OPSET, out_path)
    return out_path
