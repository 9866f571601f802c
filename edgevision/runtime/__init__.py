"""The device side: load an artifact and classify images. No PyTorch here, ever."""
from ..artifact import Manifest, TrustPolicy, read_manifest
from ..errors import EdgevisionError
from .model import Model, load
from .prediction import Prediction

__all__ = ["EdgevisionError", "Manifest", "Model", "Prediction", "TrustPolicy", "load", "read_manifest"]
