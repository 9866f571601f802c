"""Device side of verification: load an artifact with edgevision.runtime, run given inputs, save outputs.

Runs on the device itself or under qemu; imports only numpy, OpenCV and the backend runtime.
``python -m edgevision.emulation.device_check ARTIFACT INPUTS.npy OUTPUTS.npy`` prints one JSON line.
ARTIFACT may also be a bare TVM ``model.so`` (the compile-time check, before the artifact exists).
"""
from __future__ import annotations

import json
import platform
import sys
import time


def main(argv: list[str]) -> int:
    import numpy as np

    from ..runtime import load
    from ..samples import sample_image

    artifact, inputs_path, outputs_path = argv
    started = time.perf_counter()
    if artifact.endswith(".so"):
        return _run_library(artifact, inputs_path, outputs_path, started)
    with load(artifact) as model:
        loaded = time.perf_counter()
        inputs = np.load(inputs_path)
        outputs = np.concatenate([model.run(inputs[i:i + 1]) for i in range(len(inputs))])
        ran = time.perf_counter()
        # The whole device path once more, OpenCV preprocessing included, on a real photo.
        top = model.predict(sample_image("chelsea"), top_k=1)[0]
    np.save(outputs_path, outputs)
    print(json.dumps({"machine": platform.machine(), "load_s": round(loaded - started, 3),
                      "run_s_per_input": round((ran - loaded) / max(1, len(inputs)), 3),
                      "chelsea_top1": [top.index, top.label], "torch_imported": "torch" in sys.modules}))
    return 0


def _run_library(library: str, inputs_path: str, outputs_path: str, started: float) -> int:
    import numpy as np
    import tvm
    from tvm.runtime.vm import VirtualMachine

    main = VirtualMachine(tvm.runtime.load_module(library), tvm.cpu())["main"]
    loaded = time.perf_counter()
    inputs = np.load(inputs_path)
    outputs = np.concatenate([main(tvm.runtime.tensor(inputs[i:i + 1])).numpy() for i in range(len(inputs))])
    ran = time.perf_counter()
    np.save(outputs_path, outputs)
    print(json.dumps({"machine": platform.machine(), "load_s": round(loaded - started, 3),
                      "run_s_per_input": round((ran - loaded) / max(1, len(inputs)), 3),
                      "chelsea_top1": None, "torch_imported": "torch" in sys.modules}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
