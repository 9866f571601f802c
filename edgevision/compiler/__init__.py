"""Workstation side: needs torch and onnx. Never imported by edgevision.runtime."""
from .pipeline import CompileRequest, CompileResult, compile_model
from .spec import ModelSpec

__all__ = ["CompileRequest", "CompileResult", "compile_model", "ModelSpec"]
