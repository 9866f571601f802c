"""Hugging Face vision classifiers built from small configs: random init, nothing downloaded.

Each factory returns the ``transformers`` model as it comes (its forward returns a ModelOutput);
``edgevision compile examples/hf_zoo.py:resnet`` picks ``logits`` and reads ``id2label`` itself.
The configs are tiny (few layers, small widths, small images) so the zoo test compiles fast; a
real checkpoint is the same call with ``from_pretrained``.
"""
from __future__ import annotations

import functools
import json
from typing import Any

SEED = 0
CLASSES = 10


def _build(config_cls: str, model_cls: str, **config: Any) -> Any:
    return _cached_build(config_cls, model_cls, json.dumps(config, sort_keys=True))


@functools.lru_cache(maxsize=None)  # one build per process: each target compiles the same weights
def _cached_build(config_cls: str, model_cls: str, config_json: str) -> Any:
    import torch
    import transformers

    config = json.loads(config_json)

    torch.manual_seed(SEED)
    cfg = getattr(transformers, config_cls)(num_labels=CLASSES, id2label={i: f"class {i}" for i in range(CLASSES)},
                                            label2id={f"class {i}": i for i in range(CLASSES)}, **config)
    model = getattr(transformers, model_cls)(cfg).eval()
    _decisive_head(model)
    return model


def _decisive_head(model: Any) -> None:
    """Make a random network behave like a trained one numerically, without changing its graph.

    transformers draws convolution and BatchNorm weights with std 0.02 and leaves BatchNorm's
    running statistics at 0/1: through a deep CNN the activations vanish (MobileNetV2's logits came
    out near 1e-23, EfficientNet's exactly 0), and a random head gives near-ties on every photo, so
    top-1 flips on noise rather than on export errors. PyTorch's own init, BatchNorm statistics
    measured on a few random batches (as training would have left them) and a scaled head fix both.
    """
    import torch

    size = getattr(model.config, "image_size", 224)
    size = size if isinstance(size, int) else size[0]
    norms = []
    with torch.no_grad():
        for layer in model.modules():
            if isinstance(layer, (torch.nn.Conv2d, torch.nn.modules.batchnorm._BatchNorm)):
                layer.reset_parameters()
            if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                layer.momentum = None  # a plain average over the batches below
                norms.append(layer)
        if norms:
            model.train()
            generator = torch.Generator().manual_seed(SEED)
            for _ in range(4):
                model(torch.randn(8, 3, size, size, generator=generator))
            model.eval()
        for layer in model.modules():
            if isinstance(layer, torch.nn.Linear) and layer.out_features == CLASSES:
                layer.weight.mul_(20.0)


def resnet() -> Any:
    return _build("ResNetConfig", "ResNetForImageClassification", embedding_size=16, hidden_sizes=[16, 32, 48, 64],
                  depths=[1, 1, 1, 1], layer_type="basic")


def convnext() -> Any:
    return _build("ConvNextConfig", "ConvNextForImageClassification", hidden_sizes=[16, 32, 48, 64],
                  depths=[1, 1, 1, 1])


def vit() -> Any:
    return _build("ViTConfig", "ViTForImageClassification", image_size=64, patch_size=16, hidden_size=32,
                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def deit() -> Any:
    return _build("DeiTConfig", "DeiTForImageClassification", image_size=64, patch_size=16, hidden_size=32,
                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def mobilenet_v2() -> Any:
    return _build("MobileNetV2Config", "MobileNetV2ForImageClassification", image_size=96, depth_multiplier=0.35)


def mobilevit() -> Any:
    return _build("MobileViTConfig", "MobileViTForImageClassification", image_size=64, hidden_sizes=[32, 40, 48],
                  neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64], num_attention_heads=2)


def efficientnet() -> Any:
    return _build("EfficientNetConfig", "EfficientNetForImageClassification", image_size=64, width_coefficient=0.25,
                  depth_coefficient=0.25, hidden_dim=320)


def regnet() -> Any:
    return _build("RegNetConfig", "RegNetForImageClassification", embedding_size=16, hidden_sizes=[16, 32, 48, 64],
                  depths=[1, 1, 1, 1], groups_width=8)


def swin() -> Any:
    return _build("SwinConfig", "SwinForImageClassification", image_size=64, patch_size=4, embed_dim=16,
                  depths=[1, 1], num_heads=[1, 2], window_size=4)


def levit() -> Any:
    return _build("LevitConfig", "LevitForImageClassification", image_size=64, hidden_sizes=[32, 48, 64],
                  num_attention_heads=[1, 2, 2], depths=[1, 1, 1], key_dim=[8, 8, 8])


def dinov2() -> Any:
    return _build("Dinov2Config", "Dinov2ForImageClassification", image_size=56, patch_size=14, hidden_size=32,
                  num_hidden_layers=2, num_attention_heads=2, mlp_ratio=2)


def beit() -> Any:
    return _build("BeitConfig", "BeitForImageClassification", image_size=64, patch_size=16, hidden_size=32,
                  num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


ARCHITECTURES = ("resnet", "convnext", "vit", "deit", "mobilenet_v2", "mobilevit", "efficientnet", "regnet", "swin",
                 "levit", "dinov2", "beit")
