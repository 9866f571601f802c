"""TVM's runner for ONNX's node cases (``edgevision conformance``) and the cases it is known to fail.

TVM is called directly (``tvm.relax.frontend.onnx.from_onnx`` + ``tvm.compile`` for ``llvm``): the
conformance run checks the compiler, not edgevision's TVM backend plugin.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..base import ALIGN_CORNERS_SCALES, RunCase

KNOWN_FAILURES = (
    ('ConvTranspose output_shape attribute is ignored: wrong output shape', ('test_convtranspose_output_shape',)),
    ("the ONNX importer reads only Constant's 'value', not 'value_float' used by HardSigmoid's function body (the "
     'HardSigmoid op itself passes)',
     ('test_hardsigmoid_expanded_ver18',
      'test_hardsigmoid_default_expanded_ver18',
      'test_hardsigmoid_example_expanded_ver18')),
    ("MaxPool's second output (argmax Indices) is not produced",
     ('test_maxpool_with_argmax_2d_precomputed_pads', 'test_maxpool_with_argmax_2d_precomputed_strides')),
    ('BatchNormalization training_mode=1: running mean/var outputs are not updated (inference is unaffected)',
     ('test_batchnorm_epsilon_training_mode', 'test_batchnorm_example_training_mode')),
    ('Resize with a non-integer scale derives coordinates from the rounded output size, not from the given scale',
     ('test_resize_downsample_scales_linear',
      'test_resize_downsample_scales_cubic',
      'test_resize_downsample_scales_cubic_A_n0p5_exclude_outside')),
    ('align_corners with a non-integer downscale: divides by zero at compile time',
     ('test_resize_downsample_scales_linear_align_corners',)),
    (ALIGN_CORNERS_SCALES, ('test_resize_downsample_scales_cubic_align_corners',)),
    ('Resize antialias=1 (opset 18) is ignored',
     ('test_resize_downsample_scales_linear_antialias',
      'test_resize_downsample_sizes_linear_antialias',
      'test_resize_downsample_scales_cubic_antialias',
      'test_resize_downsample_sizes_cubic_antialias')),
    ('Resize coordinate mode half_pixel_symmetric is not supported',
     ('test_resize_downsample_scales_linear_half_pixel_symmetric',
      'test_resize_upsample_scales_linear_half_pixel_symmetric')),
    ("Resize 'axes' attribute (opset 18) is not supported",
     ('test_resize_upsample_scales_nearest_axes_2_3',
      'test_resize_upsample_scales_nearest_axes_3_2',
      'test_resize_upsample_sizes_nearest_axes_2_3',
      'test_resize_upsample_sizes_nearest_axes_3_2',
      'test_resize_tf_crop_and_resize_axes_2_3',
      'test_resize_tf_crop_and_resize_axes_3_2')),
    ('Resize keep_aspect_ratio_policy (opset 18) is not supported',
     ('test_resize_downsample_sizes_nearest_not_larger',
      'test_resize_downsample_sizes_nearest_not_smaller',
      'test_resize_upsample_sizes_nearest_not_larger',
      'test_resize_upsample_sizes_nearest_not_smaller')),
)


def conformance_runner() -> RunCase:
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    target = tvm.target.Target({"kind": "llvm"})

    def run(model: Any, inputs: list[np.ndarray]) -> list[np.ndarray]:
        names = [i.name for i in model.graph.input]
        module = from_onnx(model, shape_dict={n: list(x.shape) for n, x in zip(names, inputs)},
                           keep_params_in_input=False)
        vm = relax.VirtualMachine(tvm.compile(module, target=target), tvm.cpu())
        out = vm["main"](*[tvm.runtime.tensor(np.asarray(x, order="C")) for x in inputs])  # keeps 0-d inputs 0-d
        outs = out if isinstance(out, (list, tuple)) or not hasattr(out, "numpy") else [out]
        return [np.asarray(o.numpy()) for o in outs]
    return run
