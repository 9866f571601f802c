"""Stream classification on real video: the bundled clip as a file, and a live camera simulated by ffmpeg
writing the clip in real time into a named pipe (killed to simulate a disconnect)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pytest

from conftest import REPO, run_cli

CAT_CLASSES = set(range(281, 286))
ESPRESSO = 967


@pytest.fixture(scope="module")
def model(ort_artifact: Path):
    import edgevision.runtime as rt

    with rt.load(ort_artifact) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def clip() -> Path:
    from edgevision.samples import sample_clip

    return sample_clip()


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    path = tmp_path / "camera.nut"
    os.mkfifo(path)
    return path


@pytest.fixture
def camera_writer(fifo: Path, clip: Path) -> Iterator[Callable[[], subprocess.Popen]]:
    """Start ffmpeg writing the clip at its real frame rate, looped, into the FIFO: a live camera."""
    import imageio_ffmpeg

    started: list[subprocess.Popen] = []

    def start() -> subprocess.Popen:
        proc = subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re",
                                 "-stream_loop", "-1", "-i", str(clip), "-an", "-c:v", "copy", "-f", "nut", "-y",
                                 str(fifo)], stdin=subprocess.DEVNULL)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait()


def stream_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("edgevision-")]


# -- file sources -------------------------------------------------------------------------------------


def test_clip_file_processes_every_frame_like_predict(model, clip: Path) -> None:
    stream = model.stream(clip, top_k=3, max_frames=40)
    assert stream.live is False and stream.fps == pytest.approx(25.0)
    results = list(stream)
    assert [r.frame_index for r in results] == list(range(40))
    times = [r.media_time for r in results]
    assert times[0] == pytest.approx(0.0) and np.allclose(np.diff(times), 0.04, atol=1e-3)
    for r in results[::8]:
        direct = model.predict(r.frame, top_k=3)
        assert [p.index for p in r.predictions] == [p.index for p in direct]
        assert r.predictions[0].score == pytest.approx(direct[0].score, abs=1e-5)
        assert r.frame.shape == (272, 640, 3) and set(r.timings) == {"capture", "preprocess", "infer",
                                                                     "postprocess"}
        assert all(v >= 0 for v in r.timings.values()) and r.timings["infer"] > 0
    stats = stream.stats
    assert (stats.frames, stats.captured, stats.dropped, stats.stop_reason) == (40, 40, 0, "max_frames")
    assert stats.fps > 0 and stats.duration_s > 0
    for lat in [*stats.stages.values(), stats.latency]:
        assert 0 <= lat.p50 <= lat.p90 <= lat.p99
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["frames"] == 40 and set(data["stages_ms"]) == {"capture", "preprocess", "infer", "postprocess"}
    assert not stream_threads()


def test_run_reaches_the_end_and_feeds_callbacks(model) -> None:
    from edgevision.samples import IMAGES_DIR

    seen: list[int] = []
    stats = model.stream(IMAGES_DIR, top_k=1, sinks=[lambda r: seen.append(r.frame_index)]).run()
    count = len(list(IMAGES_DIR.glob("*.jpg")))
    assert stats.frames == stats.captured == count and stats.stop_reason == "eof"
    assert seen == list(range(count))


def test_breaking_out_stops_the_pipeline(model, clip: Path) -> None:
    stream = model.stream(clip)
    for result in stream:
        if result.frame_index == 5:
            break
    deadline = time.monotonic() + 3
    while stream_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not stream_threads()
    assert stream.stats.stop_reason == "stopped" and stream.stats.frames == 6
    with pytest.raises(Exception, match="already consumed"):
        iter(stream)


def test_image_folder_and_glob(model) -> None:
    from edgevision.samples import IMAGES_DIR

    results = {r.name: r for r in model.stream(IMAGES_DIR, top_k=5)}
    assert len(results) == len(list(IMAGES_DIR.glob("*.jpg")))
    assert results["chelsea.jpg"].predictions[0].index in CAT_CLASSES
    assert results["coffee.jpg"].predictions[0].index == ESPRESSO
    names = [r.name for r in model.stream(str(IMAGES_DIR / "c*.jpg"))]
    assert names == ["camera.jpg", "chelsea.jpg", "coffee.jpg"]


def test_smoothing_steadies_the_label(model, clip: Path) -> None:
    def label_changes(**options) -> int:
        labels = [r.predictions[0].index for r in model.stream(clip, top_k=1, max_frames=50, **options)]
        return sum(a != b for a, b in zip(labels, labels[1:]))

    raw, smoothed = label_changes(), label_changes(smooth=10)
    assert raw > 0 and smoothed < raw


def test_channel_policies() -> None:
    from edgevision.stream import Channel, Closed

    latest: Channel[int] = Channel(1, "latest")
    assert latest.put(1) == 0 and latest.put(2) == 1 and latest.put(3) == 1
    assert latest.get() == 3
    block: Channel[int] = Channel(1)
    block.put(1)
    threading.Timer(0.2, block.get).start()
    started = time.perf_counter()
    block.put(2)  # waits for the consumer instead of dropping
    assert time.perf_counter() - started >= 0.15 and block.get() == 2
    block.put(3)
    block.close()
    assert block.get() == 3  # items put before close are still delivered
    with pytest.raises(Closed):
        block.get()
    with pytest.raises(TimeoutError):
        Channel(1).get(timeout=0.05)


# -- live sources: ffmpeg writing the clip in real time into a FIFO -----------------------------------


def staleness(results, start: float) -> list[float]:
    """How far each result lags the live stream: wall time since the writer started minus the frame's PTS."""
    return [(r.timestamp + r.latency - start) - r.media_time for r in results]


def test_live_pipe_keeps_the_latest_frame(model, fifo: Path, camera_writer) -> None:
    start = time.time()
    camera_writer()
    stream = model.stream(fifo, max_frames=30)
    assert stream.live is True
    results = []
    for result in stream:
        results.append(result)
        time.sleep(0.1)  # a consumer at <= 10 results/s against a 25 fps camera
    stats = stream.stats
    indices = [r.frame_index for r in results]
    assert len(results) == 30 and indices == sorted(set(indices))
    assert stats.dropped > 0 and indices[-1] - indices[0] + 1 > len(results)  # gaps where frames were dropped
    assert 0 <= stats.captured - stats.frames - stats.dropped <= 5  # the rest was in flight at the stop
    lag = staleness(results, start)
    # Dropping keeps the lag flat; processing every frame would fall behind by ~0.15 s per result here.
    assert lag[-1] - min(lag[:5]) < 1.0, lag


def test_live_pipe_with_every_frame_falls_behind(model, fifo: Path, camera_writer) -> None:
    """The contrast to the test above: live=False on the same camera builds latency."""
    start = time.time()
    camera_writer()
    results = []
    for result in model.stream(fifo, live=False, max_frames=30):
        results.append(result)
        time.sleep(0.1)
    assert [r.frame_index for r in results] == list(range(30))
    lag = staleness(results, start)
    assert lag[-1] - min(lag[:5]) > 1.0, lag


def test_disconnect_reconnects_then_stops_cleanly(model, fifo: Path, camera_writer) -> None:
    from edgevision.stream import ReconnectPolicy

    writer = camera_writer()
    stream = model.stream(fifo, reconnect=ReconnectPolicy(attempts=2, delay_s=0.2), open_timeout_s=1.5)
    indices, killed_at, phase = [], 0.0, 0
    for result in stream:
        indices.append(result.frame_index)
        if phase == 0 and len(indices) == 15:
            kill(writer)  # the camera drops out ...
            time.sleep(0.3)
            writer = camera_writer()  # ... and comes back
            phase = 1
        elif phase == 1 and stream.stats.reconnects == 1 and len(indices) >= 30:
            kill(writer)  # gone for good
            killed_at, phase = time.monotonic(), 2
    ended_after = time.monotonic() - killed_at
    stats = stream.stats
    assert phase == 2 and stats.reconnects == 1 and stats.stop_reason == "disconnected"
    assert indices == sorted(set(indices))
    # bounded: 2 attempts x (backoff + 1.5 s open timeout) plus draining
    assert ended_after < 8.0
    assert not stream_threads()


def test_pipe_without_writer_fails_fast_with_one_line(model, fifo: Path) -> None:
    from edgevision.errors import InputError

    started = time.monotonic()
    with pytest.raises(InputError) as err:
        model.stream(fifo, open_timeout_s=1.0)
    assert time.monotonic() - started < 5
    assert str(fifo) in str(err.value) and "\n" not in str(err.value)


# -- the CLI --------------------------------------------------------------------------------------------


def test_cli_saves_a_playable_video_with_overlay(ort_artifact: Path, clip: Path, tmp_path: Path) -> None:
    import cv2

    video, log = tmp_path / "out.mp4", tmp_path / "out.jsonl"
    result = run_cli("stream", str(ort_artifact), "--source", str(clip), "-n", "30", "--print-every", "10",
                     "--save", str(video), "--json", str(log), timeout=300)
    assert result.returncode == 0, result.stderr
    assert [line.split()[1] for line in result.stdout.splitlines() if line.startswith("frame ")] == ["0", "10", "20"]
    assert "stream: 30 frames" in result.stdout and "FPS end to end" in result.stdout and "p99" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.jsonl", "out.mp4"]  # no temp files left
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["frame_index"] for r in records] == list(range(30)) and len(records[0]["predictions"]) == 5

    saved, raw = cv2.VideoCapture(str(video)), cv2.VideoCapture(str(clip))
    assert saved.get(cv2.CAP_PROP_FRAME_COUNT) == 30
    frames = 0
    while True:
        ok, out = saved.read()
        if not ok:
            break
        ok_raw, original = raw.read()
        assert ok_raw and out.shape == original.shape == (272, 640, 3)
        box, rest = (slice(0, 60), slice(0, 150)), (slice(150, None), slice(300, None))
        diff_box = np.abs(out[box].astype(int) - original[box]).mean()
        diff_rest = np.abs(out[rest].astype(int) - original[rest]).mean()
        assert diff_box > 3 * diff_rest, (frames, diff_box, diff_rest)  # the overlay is there, the rest is the clip
        green_text = (out[box][..., 1] > 200) & (out[box][..., 0] < 150) & (out[box][..., 2] < 150)
        assert green_text.sum() > 50  # the top-1 label is drawn in green
        frames += 1
    assert frames == 30


@pytest.mark.parametrize("source", ["7", "/dev/video7", "missing.mp4", "missing/*.jpg"])
def test_cli_unopenable_source_is_one_line_error(ort_artifact: Path, source: str, tmp_path: Path) -> None:
    result = run_cli("stream", str(ort_artifact), "--source", source, cwd=tmp_path)
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.stderr
    assert source.split("/")[-1].replace("*", "") in lines[0] or "camera" in lines[0]


def test_cli_ctrl_c_on_a_live_pipe_prints_stats(ort_artifact: Path, fifo: Path, camera_writer) -> None:
    camera_writer()
    proc = subprocess.Popen([sys.executable, "-m", "edgevision.cli", "stream", str(ort_artifact), "--source",
                             str(fifo)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        frame_lines = 0
        for line in proc.stdout:  # type: ignore[union-attr]
            frame_lines += line.startswith("frame ")
            if frame_lines == 10:
                break
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "stopped by Ctrl-C" in err and "stream: " in out and "dropped" in out and "Traceback" not in err
