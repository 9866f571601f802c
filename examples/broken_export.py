"""A model whose ONNX export silently differs from eager PyTorch: what the accuracy gate exists for.

The branch depends on the input's values. Tracing follows the branch the all-zeros dummy input
takes and freezes it into the graph; real images take the other branch in eager mode.
"""
from __future__ import annotations

import torch
from torch import nn

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mobilenet_v2 import mobilenet_v2  # noqa: E402


class DataDependentBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = mobilenet_v2(seed=0)
        self.flipped = mobilenet_v2(seed=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.abs().sum() > 0:  # never true for the all-zeros export input
            return self.net(x)
        return self.flipped(x)


def broken_export() -> DataDependentBranch:
    return DataDependentBranch().eval()
