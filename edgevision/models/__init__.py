"""Models that ship with edgevision (workstation side: these import torch)."""
from .zoo import efficientnet_lite0, imagenet_labels

__all__ = ["efficientnet_lite0", "imagenet_labels"]
