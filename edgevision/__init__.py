"""edgevision: PyTorch image classifiers compiled for edge devices, run on camera streams.

``edgevision.runtime`` is the device side (numpy + OpenCV + one backend runtime);
``edgevision.compiler`` the workstation side (torch + onnx).
"""
__version__ = "0.1.0"
