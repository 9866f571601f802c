"""Random-init stand-ins that still behave like networks (examples/, tests, benchmarks)."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn


def settle_batchnorm(model: "nn.Module", steps: int = 2, seed: int = 0) -> "nn.Module":
    """Give BatchNorm real running statistics, so random-init activations neither vanish nor explode.

    Untrained eval-mode networks otherwise produce logits around 1e-9, where every comparison
    (accuracy gate, INT8 calibration) measures noise rather than the model.
    """
    import torch  # here, not at import: edgevision.models also serves torch-free ONNX compiles
    from torch import nn

    gen = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the settling batches
    model.train()
    with torch.no_grad():
        for _ in range(steps):
            model(torch.rand(4, 3, 224, 224, generator=gen) * 4 - 2)
    return model.eval()
