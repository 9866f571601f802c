"""A loaded artifact: preprocessing, the backend runner and labels behind one small API."""
from __future__ import annotations

import logging
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..artifact import Manifest, open_artifact, resolve_trust
from ..artifact.signing import Trust
from ..backends import LoadOptions, Runner, get_backend
from ..batching import run_batched
from ..diagnostics import translated
from ..errors import ArtifactError, InputError
from ..preprocess import preprocess, preprocess_batch
from .prediction import Prediction, topk

if TYPE_CHECKING:
    from ..stream import Stream

log = logging.getLogger(__name__)


class Model:
    """Use :func:`edgevision.runtime.load` to make one.

    Thread safety: ``run``, ``predict``, ``predict_batch`` and ``stream`` may be called from any number
    of threads at once on one Model, on every backend, and each call gets the result for its own input.
    How: runners that are safe to share say so (``thread_safe = True``: ONNX Runtime's session, and
    OpenVINO's runner, which keeps a pool of infer requests, one per concurrent call); calls into any
    other runner (TVM's VM, TensorRT's execution context, plugins) are serialised by a lock here, so they
    are correct but run one at a time. Two streams from one Model therefore work on every backend.
    ``close`` must not race with calls in flight: close the Model after its threads have finished.
    """

    def __init__(self, manifest: Manifest, runner: Runner, workdir: tempfile.TemporaryDirectory | None = None,
                 path: Path | None = None) -> None:
        self.manifest = manifest
        self.runner = runner
        self.path = path
        self._workdir = workdir
        self.labels = manifest.labels
        self.preprocess_config = manifest.preprocess
        self._serialise = None if getattr(runner, "thread_safe", False) else threading.Lock()
        self._fixed_batch = None if manifest.input.dynamic_batch else int(manifest.input.shape[0])
        self._sample_shape = tuple(int(d) for d in manifest.input.shape[1:])

    @property
    def input_shape(self) -> tuple[int | str, ...]:
        return self.manifest.input.shape

    def preprocess(self, image: np.ndarray, channels: str = "BGR") -> np.ndarray:
        return preprocess(image, self.preprocess_config, channels)

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Raw outputs for an already preprocessed batch in the artifact's input layout."""
        if not isinstance(batch, np.ndarray):
            raise InputError(f"expected a numpy array, got {type(batch).__name__}", "pass np.float32 data")
        if batch.dtype != np.dtype(self.manifest.input.dtype):
            raise InputError(f"input dtype is {batch.dtype}, the model takes {self.manifest.input.dtype}",
                             f"convert with batch.astype(np.{self.manifest.input.dtype}) or use predict() on images")
        if batch.ndim != len(self._sample_shape) + 1 or tuple(batch.shape[1:]) != self._sample_shape:
            raise InputError(f"input shape {tuple(batch.shape)} does not match the model's "
                             f"{('N',) + self._sample_shape}",
                             "use predict() on images, or preprocess() to build the tensor")
        batch = np.ascontiguousarray(batch)
        if self._fixed_batch is None or len(batch) == self._fixed_batch:
            return self._run_one(batch)
        # A static-batch artifact runs larger batches one slice at a time.
        step = self._fixed_batch
        if len(batch) % step:
            raise InputError(f"batch of {len(batch)} does not divide into the artifact's fixed batch {step}",
                             "compile with --dynamic-batch for arbitrary batch sizes")
        return run_batched(self._run_one, batch, step)

    def _run_one(self, batch: np.ndarray) -> np.ndarray:
        runner = self.runner
        if runner is None:
            raise InputError("this model was closed", "load the artifact again")
        if self._serialise is None:
            return runner.run(batch)
        with self._serialise:  # the runner is not safe to share between threads (see the class docstring)
            return runner.run(batch)

    def topk(self, logits: np.ndarray, k: int = 5) -> list[list[Prediction]]:
        """Ranked predictions for a batch of model outputs (softmax only when the model gives logits)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise InputError(f"top_k must be a whole number >= 1, not {k!r}", "pass e.g. top_k=5")
        return topk(logits, self.labels, k, self.manifest.scores)

    def predict(self, image: np.ndarray, top_k: int = 5, channels: str = "BGR") -> list[Prediction]:
        """Top-k classes for one HxWx3 uint8 image (BGR as OpenCV reads it, unless channels='RGB')."""
        return self.topk(self.run(self.preprocess(image, channels)[None]), top_k)[0]

    def predict_batch(self, images: Sequence[np.ndarray], top_k: int = 5,
                      channels: str = "BGR") -> list[list[Prediction]]:
        if len(images) == 0:
            return []
        return self.topk(self.run(preprocess_batch(images, self.preprocess_config, channels)), top_k)

    def stream(self, source: "str | int | Path", *, live: bool | None = None, top_k: int = 5,
               max_frames: int | None = None, **options: Any) -> "Stream":
        """Classify a camera (0, /dev/video0), video file, image folder/glob, URL or FIFO frame by frame.

        live=None: cameras, URLs and pipes drop stale frames, files and folders process every frame.
        Other options (smooth, camera, reconnect, sinks, ...) are those of edgevision.stream.Stream.
        """
        from ..stream import Stream

        return Stream(self, source, live=live, top_k=top_k, max_frames=max_frames, **options)

    def close(self) -> None:
        self.runner = None  # type: ignore[assignment]
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> "Model":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        m = self.manifest
        return f"Model({m.model_name!r}, target={m.target.name!r}, backend={m.backend!r}, precision={m.precision!r})"


def load(path: str | Path, threads: int | None = None, device: str | None = None, trust: Trust = None) -> Model:
    """Verify and load an artifact. Imports numpy, OpenCV and the one backend runtime it needs.

    ``trust``: the signers accepted -- a :class:`~edgevision.artifact.TrustPolicy`, or public key
    files/folders (then a signature by one of them is required). None: the environment's policy
    (``EDGEVISION_TRUSTED_KEYS``, ``EDGEVISION_REQUIRE_SIGNATURE``, ``~/.config/edgevision/trust/``);
    without one, unsigned artifacts load. Everything the policy and the integrity checks refuse is
    refused before a member is extracted or the backend's runtime is imported.
    """
    import platform

    path = Path(path)
    with open_artifact(path, resolve_trust(trust)) as artifact:
        manifest = artifact.manifest
        host = platform.machine()
        backend = get_backend(manifest.backend)  # the reader checked that it exists
        if not backend.runs_on(manifest.target, host):
            raise ArtifactError(f"{path.name} was compiled for {manifest.target.arch} ({manifest.target.name}), "
                                f"this machine is {host}",
                                f"compile for a {host} target, or copy the artifact to a {manifest.target.arch} device")
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise InputError(f"threads must be a whole number >= 1, not {threads!r}", "or None for the default")
        if device is not None:
            backend.check_device(device)
        workdir = tempfile.TemporaryDirectory(prefix="edgevision-")
        try:
            artifact.extract(Path(workdir.name))
            with translated(backend.name, f"load {path.name}"):
                runner = backend.load(Path(workdir.name) / "payload", manifest,
                                      LoadOptions(threads=threads, device=device))
        except BaseException:
            workdir.cleanup()
            raise
    if artifact.signature.signed:
        log.info("%s: %s", path.name, artifact.signature.describe())
    log.info("loaded %s (%s, %s, %s)", path, manifest.target.name, manifest.backend, manifest.precision)
    return Model(manifest, runner, workdir, path)
