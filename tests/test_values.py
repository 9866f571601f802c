"""The shared value types and small helpers: prediction post-processing, batching, output capture."""
from __future__ import annotations

import numpy as np
import pytest

from edgevision.runtime.prediction import Prediction, softmax, topk, topk_indices


def test_topk_indices_ranks_rows_and_single_rows_alike() -> None:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 1000)).astype(np.float32)
    batch = topk_indices(scores, 5)
    assert batch.shape == (6, 5)
    np.testing.assert_array_equal(batch, np.argsort(-scores, axis=1)[:, :5])  # no ties in random floats
    np.testing.assert_array_equal(topk_indices(scores[2], 5), batch[2])
    assert topk_indices(scores[:, :3], 5).shape == (6, 3)  # k clipped to the class count


def test_topk_applies_softmax_only_to_logits() -> None:
    logits = np.array([[2.0, 0.0, 1.0]], np.float32)
    (ranked,) = topk(logits, ["a", "b", "c"], 2)
    assert [p.label for p in ranked] == ["a", "c"] and ranked[0].scores == "softmax"
    assert ranked[0].score == pytest.approx(float(softmax(logits)[0, 0]))
    probs = np.array([[0.2, 0.5, 0.3]], np.float32)
    (own,) = topk(probs, ["a", "b", "c"], 1, "probabilities")
    assert own == [Prediction(1, "b", pytest.approx(0.5), "model")]
    assert softmax(np.zeros((2, 4), np.float64)).dtype == np.float64  # the gate's float64 stays float64


def test_run_batched_slices_in_order_and_keeps_the_short_tail() -> None:
    from edgevision.batching import batch_slices, run_batched

    assert [(s.start, s.stop) for s in batch_slices(10, 4)] == [(0, 4), (4, 8), (8, 10)]
    assert list(batch_slices(0, 4)) == []
    seen: list[int] = []

    def double(part: np.ndarray) -> np.ndarray:
        seen.append(len(part))
        return (part * 2).astype(np.float16)

    inputs = np.arange(10, dtype=np.float32)[:, None]
    out = run_batched(double, inputs, 4, np.float32)
    assert seen == [4, 4, 2] and out.dtype == np.float32
    np.testing.assert_array_equal(out, inputs * 2)
    with pytest.raises(ValueError, match="at least 1"):
        list(batch_slices(3, 0))


def test_silenced_keeps_python_and_native_output_off_the_terminal(capfd: pytest.CaptureFixture[str],
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    import logging
    import os

    from edgevision.quiet import silenced

    log = logging.getLogger("edgevision.test_quiet")
    with caplog.at_level(logging.DEBUG, logger=log.name):
        with silenced(log, "chatty"):
            print("from python")
        with pytest.raises(RuntimeError), silenced(log, "native", native=True, stderr=True):
            print("python again")
            os.write(1, b"from C on fd 1\n")
            os.write(2, b"from C on fd 2\n")
            raise RuntimeError("the block fails")
        print("after")  # the streams are back
    out, err = capfd.readouterr()
    assert out == "after\n" and err == ""
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in ("chatty output:\nfrom python", "python again", "from C on fd 1", "from C on fd 2"):
        assert text in logged


def test_sha256_file_reads_in_chunks_what_hashlib_sees_at_once(tmp_path) -> None:
    import hashlib

    from edgevision.files import sha256_file

    data = np.random.default_rng(1).bytes((5 << 20) // 2)  # 2.5 MiB: three 1 MiB chunks
    (tmp_path / "weights.bin").write_bytes(data)
    assert sha256_file(tmp_path / "weights.bin") == hashlib.sha256(data).hexdigest()


def test_stream_enums_print_and_serialise_as_the_strings_they_replace() -> None:
    import json

    from edgevision.stream import Channel, ChannelPolicy, SourceKind, SourceSpec, StopReason
    from edgevision.stream.stats import StatsRecorder

    recorder = StatsRecorder("clip.mp4", live=False)
    recorder.stop_reason = StopReason.MAX_FRAMES
    stats = recorder.snapshot()
    assert json.loads(json.dumps(stats.to_dict()))["stop_reason"] == "max_frames"
    assert stats.summary().endswith("stopped: max_frames") and stats.stop_reason == "max_frames"
    spec = SourceSpec("camera", 0, "camera 0")  # a plain string still works, and becomes the member
    assert spec.kind is SourceKind.CAMERA and spec.live and not SourceSpec(SourceKind.FILE, "a.mp4", "a").live
    assert Channel(1, "latest").policy is ChannelPolicy.LATEST
    with pytest.raises(ValueError, match="policy 'newest'"):
        Channel(1, "newest")


def test_crop_pct_travels_in_the_manifest_and_defaults_for_old_ones() -> None:
    from edgevision.preprocess import DEFAULT_CROP_PCT, PreprocessConfig

    config = PreprocessConfig(input_size=(224, 224), resize_short=None, crop_pct=0.9)
    again = PreprocessConfig.from_dict(config.to_dict())
    assert again == config and again.short_side == round(224 / 0.9) == 249
    old = {k: v for k, v in config.to_dict().items() if k != "crop_pct"}  # written before crop_pct existed
    assert PreprocessConfig.from_dict(old).crop_pct == DEFAULT_CROP_PCT == 0.875
