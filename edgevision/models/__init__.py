"""Models that ship with edgevision (workstation side: these import torch)."""
from .random_init import settle_batchnorm
from .zoo import efficientnet_lite0, efficientnet_lite1, imagenet_labels

__all__ = ["efficientnet_lite0", "efficientnet_lite1", "imagenet_labels", "settle_batchnorm"]
