"""Careless and hostile input (#14): threads, data loss, image memory, hangs, signals, validation, umask.

Every CLI case runs the real command in a subprocess with its own TMPDIR (the ``ws`` fixture of
test_errors) and checks the exit code, exactly one line on stderr, no traceback, nothing left behind,
and the outcome: the input still intact, the output finalised, the right number.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from conftest import NAIVE_TVM, REPO
from reliability_models import MODELS, onnx_classifier
from test_errors import CLI_MAIN, Workspace, assert_one_line_error, cli, ws  # noqa: F401  (ws: fixture)

TINY = f"{MODELS}:tiny"
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (pytest, 1.6 GB late in a
# full run), so it measured the test runner; VmHWM belongs to the new process's own address space.
PEAK_RSS = ("import atexit, os\natexit.register(lambda: open(os.environ['PEAK_FILE'], 'w').write(next("
            "line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM:'))))\n")


@pytest.fixture(scope="module")
def tiny_ort(compile_artifact) -> Path:
    return compile_artifact("rb-tiny.onnxruntime-cpu.evpkg", model=TINY, target="onnxruntime-cpu")


@pytest.fixture(scope="module")
def tiny_artifacts(compile_artifact, tiny_ort: Path) -> dict[str, Path]:
    """The same tiny model for the three backends that run here (TVM: ~15 s untuned)."""
    return {"onnxruntime": tiny_ort,
            "openvino": compile_artifact("rb-tiny.intel-cpu.evpkg", model=TINY, target="intel-cpu"),
            "tvm": compile_artifact("rb-tiny.tvm-x86.evpkg", model=TINY, target="tvm-x86", options=NAIVE_TVM)}


def photos(count: int = 8) -> list[np.ndarray]:
    """Real photos (the bundled ones) at different sizes: each thread classifies other pixels."""
    from edgevision.samples import image_paths, read_image

    import cv2

    images = [read_image(p) for p in image_paths()]
    return [cv2.resize(images[i % len(images)], (90 + 11 * i, 80 + 7 * i)) for i in range(count)]


# --- 2. threads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "tvm"])
def test_one_model_shared_by_four_threads(tiny_artifacts: dict[str, Path], backend: str) -> None:
    """Before: OpenVINO returned other threads' logits and 'Infer Request is busy'; TVM's VM crashed."""
    from edgevision.runtime import load

    images = photos()
    with load(tiny_artifacts[backend]) as model:
        expected = [model.run(model.preprocess(im)[None]) for im in images]
        assert len({e.argmax() for e in expected}) > 1 or len({float(e.max()) for e in expected}) > 1
        wrong: list[tuple[int, float]] = []
        errors: list[BaseException] = []
        start = threading.Barrier(4)

        def worker(t: int) -> None:
            try:
                start.wait()
                for r in range(30):
                    i = (t * 3 + r) % len(images)
                    out = model.run(model.preprocess(images[i])[None])
                    if not np.array_equal(out, expected[i]):
                        wrong.append((i, float(np.abs(out - expected[i]).max())))
            except BaseException as err:  # noqa: BLE001 - reported below
                errors.append(err)

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        assert errors == [] and wrong == [], (errors[:2], wrong[:5])


@pytest.mark.parametrize("backend", ["openvino", "tvm"])
def test_two_streams_from_one_model(tiny_artifacts: dict[str, Path], backend: str, tmp_path: Path) -> None:
    import cv2

    from edgevision.runtime import load

    images = photos(12)
    folders = [tmp_path / "a", tmp_path / "b"]
    for k, folder in enumerate(folders):
        folder.mkdir()
        for i, image in enumerate(images[k::2]):
            cv2.imwrite(str(folder / f"{i:02d}.png"), image)
    with load(tiny_artifacts[backend]) as model:
        alone = {str(f): [model.predict(cv2.imread(str(p)), top_k=3) for p in sorted(f.iterdir())] for f in folders}
        together: dict[str, list] = {}

        def consume(folder: Path) -> None:
            together[str(folder)] = [r.predictions for r in model.stream(folder, top_k=3)]

        threads = [threading.Thread(target=consume, args=(f,)) for f in folders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    for folder in folders:
        got, want = together[str(folder)], alone[str(folder)]
        assert [[p.index for p in r] for r in got] == [[p.index for p in r] for r in want]
        assert np.allclose([[p.score for p in r] for r in got], [[p.score for p in r] for r in want], atol=1e-6)


# --- 3. outputs are never inputs -------------------------------------------------------------------


def _digest(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    return len(data), zlib.crc32(data)


@pytest.mark.parametrize("case", ["compile -o model.onnx", "compile -o hard link", "compile --accuracy-report",
                                  "compile -o factory file", "stream --json artifact", "stream --save source",
                                  "stream --json == --save", "bench --json artifact"])
def test_an_output_that_is_an_input_is_refused(ws: Workspace, tiny_ort: Path, case: str) -> None:
    home = ws.out.parent
    model = onnx_classifier(home / "model.onnx")
    artifact = shutil.copy(tiny_ort, home / "a.evpkg")
    clip = home / "clip.avi"
    _write_clip(clip)
    args, victim = {
        "compile -o model.onnx": (["compile", str(model), "-o", str(model)], model),
        "compile -o hard link": (["compile", str(model), "-o", str(_hard_link(model, home / "link.evpkg"))], model),
        "compile --accuracy-report": (["compile", str(model), "-o", str(ws.out / "m.evpkg"),
                                       "--accuracy-report", str(model)], model),
        "compile -o factory file": (["compile", f"{MODELS}:tiny", "-o", str(MODELS)], MODELS),
        "stream --json artifact": (["stream", str(artifact), "--source", str(clip), "--json", str(artifact)], artifact),
        "stream --save source": (["stream", str(artifact), "--source", str(clip), "--save", str(clip)], clip),
        "stream --json == --save": (["stream", str(artifact), "--source", str(clip), "--json", str(ws.out / "x.avi"),
                                     "--save", str(ws.out / "x.avi")], clip),
        "bench --json artifact": (["bench", str(artifact), "--json", str(artifact), "--no-stream"], artifact),
    }[case]
    before = _digest(victim)
    line = assert_one_line_error(cli(ws, *args), ws, "write" if "==" not in case else "same file")
    assert "same file" in line
    assert _digest(victim) == before  # the input is untouched


def _hard_link(src: Path, link: Path) -> Path:
    os.link(src, link)
    return link


def _write_clip(path: Path, frames: int = 12) -> None:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25.0, (96, 80))
    for i, image in enumerate(photos(frames)):
        writer.write(cv2.resize(image, (96, 80)))
    writer.release()


# --- 4. image memory -------------------------------------------------------------------------------


def _png(path: Path, image: np.ndarray) -> Path:
    import cv2

    assert cv2.imwrite(str(path), image)
    return path


@pytest.mark.parametrize("shape", [(2, 100_000), (60_000, 3)])
def test_extreme_aspect_ratio_stays_small_and_classifies_its_centre(ws: Workspace, tiny_ort: Path,
                                                                    shape: tuple[int, int]) -> None:
    """Before: 10.4 GB and 3.9 GB (the short side scaled to the resize size, the long side unbounded)."""
    from edgevision.runtime import load

    image = (np.indices(shape).sum(0)[..., None] * np.array([3, 5, 7]) % 251).astype(np.uint8)  # not uniform
    path = _png(ws.out.parent / "odd.png", image)
    peak_file = ws.out.parent / "peak"
    result = cli(ws, "predict", str(tiny_ort), str(path), "-k", "3",
                 prelude=PEAK_RSS, env={"PEAK_FILE": str(peak_file)})
    assert result.returncode == 0 and result.stderr == "", result.stderr
    peak_mb = int(peak_file.read_text()) / 1024
    assert peak_mb < 1024, f"peak RSS {peak_mb:.0f} MB"
    # The answer is the one for the picture's centre, which is all a centre crop of it can show.
    h, w = shape
    short = min(h, w)
    centre = image[h // 2 - 2 * short:h // 2 + 2 * short] if h > w else image[:, w // 2 - 2 * short:w // 2 + 2 * short]
    with load(tiny_ort) as model:
        want = model.predict(centre, top_k=3)
    assert result.stdout.split()[0] == "odd.png"
    assert [f"{p.label} ({p.index}) {p.score:.2f}" for p in want] == \
        [s.strip() for s in result.stdout.split("ms", 1)[1].split(";")]
    assert [p.name for p in ws.tmp.iterdir() if p.name != ".ses"] == []


def test_decompression_bomb_is_refused_from_its_header(ws: Workspace, tiny_ort: Path) -> None:
    """A PNG whose header claims 100000 x 100000 pixels (30 GB decoded) is refused before decoding."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\x00" * 3 * 100_000
    stream = zlib.compressobj(9)
    body = b"".join(stream.compress(row) for _ in range(200)) + stream.flush()  # first rows only: still tiny
    bomb = ws.out.parent / "bomb.png"
    bomb.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))
    assert bomb.stat().st_size < 200_000
    assert_one_line_error(cli(ws, "predict", str(tiny_ort), str(bomb)), ws, "100000x100000", "megapixels")


# --- 5. hangs --------------------------------------------------------------------------------------


@pytest.fixture
def silent_writer(tmp_path: Path) -> Iterator[Path]:
    """A FIFO whose writer opens it and never writes (a camera program that hangs before its first frame)."""
    fifo = tmp_path / "camera.pipe"
    os.mkfifo(fifo)
    writer = subprocess.Popen([sys.executable, "-c", f"import time; f = open({str(fifo)!r}, 'wb'); time.sleep(120)"])
    yield fifo
    writer.kill()
    writer.wait()


def test_predict_on_a_pipe_is_refused_at_once(ws: Workspace, tiny_ort: Path, silent_writer: Path) -> None:
    started = time.monotonic()
    assert_one_line_error(cli(ws, "predict", str(tiny_ort), str(silent_writer)), ws, "is a named pipe")
    assert time.monotonic() - started < 30


def test_stream_from_a_silent_writer_gives_up_after_the_open_timeout(ws: Workspace, tiny_ort: Path,
                                                                     silent_writer: Path) -> None:
    started = time.monotonic()
    result = cli(ws, "stream", str(tiny_ort), "--source", str(silent_writer), "--open-timeout", "1")
    assert_one_line_error(result, ws, "cannot open pipe", "--open-timeout")
    assert time.monotonic() - started < 30


def test_ctrl_c_while_a_pipe_is_opening_exits_promptly(ws: Workspace, tiny_ort: Path, silent_writer: Path) -> None:
    """Before: Ctrl-C was ignored for 30 s while OpenCV waited on the pipe."""
    proc = _start(ws, "stream", str(tiny_ort), "--source", str(silent_writer), "--open-timeout", "100")
    _wait_until_open(proc, silent_writer)  # the stream is waiting on the pipe
    time.sleep(0.5)
    sent = time.monotonic()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert time.monotonic() - sent < 5, "Ctrl-C took too long"
    assert proc.returncode == 130 and err.strip().splitlines()[-1].startswith("error: interrupted")
    assert "Traceback" not in err
    ws.assert_clean()


def _wait_until_open(proc: subprocess.Popen, path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if any(os.readlink(f"/proc/{proc.pid}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{proc.pid}/fd")):
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"the CLI never opened {path}")


def test_negative_tuning_budget_is_refused(ws: Workspace) -> None:
    """Before: --tune -5 started the 12-minute default tuning."""
    assert_one_line_error(cli(ws, "compile", TINY, "-t", "tvm-x86", "--tune", "-5", "-o", str(ws.out / "m.evpkg")),
                          ws, "--tune", ">= 0")


# --- 6. signals ------------------------------------------------------------------------------------


def _start(ws: Workspace, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLI_MAIN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(ws.tmp)})


def _wait_for(proc: subprocess.Popen, prefix: str, stream: str = "stdout", count: int = 1) -> None:
    pipe = proc.stdout if stream == "stdout" else proc.stderr
    seen = 0
    for line in pipe:  # type: ignore[union-attr]
        seen += line.startswith(prefix)
        if seen >= count:
            return
    raise AssertionError(f"{prefix!r} never appeared; exit {proc.wait()}")


@pytest.fixture
def live_camera(tmp_path: Path) -> Iterator[Path]:
    """ffmpeg writing the bundled clip in real time, looped, into a FIFO: a stream that never ends."""
    import imageio_ffmpeg

    from edgevision.samples import sample_clip

    fifo = tmp_path / "live.nut"
    os.mkfifo(fifo)
    proc = subprocess.Popen([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-re",
                             "-stream_loop", "-1", "-i", str(sample_clip()), "-an", "-c:v", "copy", "-f", "nut",
                             "-y", str(fifo)], stdin=subprocess.DEVNULL)
    yield fifo
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
def test_stop_signal_mid_stream_finalises_the_outputs(ws: Workspace, tiny_ort: Path, live_camera: Path,
                                                      sig: signal.Signals) -> None:
    """Before: SIGTERM/SIGHUP lost --json and --save and left their temp files and the payload in TMPDIR."""
    jsonl, video = ws.out / "frames.jsonl", ws.out / "frames.avi"
    proc = _start(ws, "-q", "stream", str(tiny_ort), "--source", str(live_camera), "--json", str(jsonl),
                  "--save", str(video))
    try:
        _wait_for(proc, "frame ", count=8)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    # The stream ends as on Ctrl-C: exit 0, statistics printed, every output finalised.
    assert proc.returncode == 0 and err == "" and "stopped: " in out, err
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert len(lines) >= 8 and [r["frame_index"] for r in lines] == sorted({r["frame_index"] for r in lines})
    import cv2

    cap = cv2.VideoCapture(str(video))
    assert cap.isOpened() and int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(lines)
    cap.release()
    assert sorted(p.name for p in ws.out.iterdir()) == ["frames.avi", "frames.jsonl"]  # no temp files
    assert [p.name for p in ws.tmp.iterdir() if p.name != ".ses"] == []  # the unpacked payload is gone


def test_sigterm_during_compile_leaves_no_scratch(ws: Workspace) -> None:
    proc = _start(ws, "compile", TINY, "-o", str(ws.out / "m.evpkg"), "--accuracy-report", str(ws.out / "r.csv"))
    _wait_for(proc, "• exporting to ONNX", stream="stderr")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    lines = err.strip().splitlines()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert lines[-1].startswith("error: stopped by SIGTERM") and [ln for ln in lines if ln.startswith("error")] == \
        lines[-1:] and "Traceback" not in err
    ws.assert_clean()


def test_a_failed_gate_writes_no_accuracy_report(ws: Workspace) -> None:
    result = cli(ws, "compile", f"{MODELS}:diverging", "-o", str(ws.out / "m.evpkg"),
                 "--accuracy-report", str(ws.out / "report.csv"))
    assert result.returncode == 3
    assert_one_line_error(result, ws, "accuracy gate failed")


# --- 10. validation --------------------------------------------------------------------------------

BAD_ARGS = {
    "top-k -1": (["predict", "ART", "-k", "-1"], "--top-k", ">= 1"),
    "top-k 0": (["predict", "ART", "-k", "0"], "--top-k", ">= 1"),
    "threads 0": (["predict", "ART", "--threads", "0"], "--threads", ">= 1"),
    "threads -1 compile": (["compile", TINY, "--threads", "-1"], "--threads", ">= 1"),
    "device TPU on ORT": (["predict", "ART", "--device", "TPU"], "cannot run on device 'TPU'", "--device"),
    "smooth -1": (["stream", "ART", "--smooth", "-1"], "--smooth", ">= 0"),
    "reconnect -2": (["stream", "ART", "--reconnect", "-2"], "--reconnect", ">= 0"),
    "open-timeout 0": (["stream", "ART", "--open-timeout", "0"], "--open-timeout", "> 0"),
    "tune on ORT": (["compile", TINY, "--tune", "5"], "tune_trials is not used by target onnxruntime-cpu", "tvm-x86"),
    "min-agreement -1": (["compile", TINY, "--min-agreement", "-1"], "between 0 and 1"),
    "min-agreement 2": (["compile", TINY, "--min-agreement", "2"], "between 0 and 1"),
    "unknown option": (["compile", TINY, "--option", "tune_trails=64"], "option tune_trails is not used"),
    "int8 option at fp32": (["compile", TINY, "--seed", "3"], "only with --precision int8"),
    "argparse choice": (["compile", TINY, "--precision", "int4"], "invalid choice: 'int4'", "edgevision compile --help"),
    "argparse unknown flag": (["predict", "ART", "--topk", "3"], "unrecognized arguments", "--help"),
    "argparse not a number": (["bench", "ART", "--iterations", "many"], "'many' is not a whole number"),
    "no command": ([], "required: COMMAND", "edgevision --help"),
    "missing image": (["predict", "ART", "MISSING"], "not found"),
    "bench missing artifact": (["bench", "/nope.evpkg"], "/nope.evpkg does not exist"),
}


@pytest.mark.parametrize("case", list(BAD_ARGS))
def test_bad_arguments_get_one_line(ws: Workspace, tiny_ort: Path, case: str) -> None:
    args, *needles = BAD_ARGS[case]
    args = [str(tiny_ort) if a == "ART" else str(ws.out.parent / "missing.jpg") if a == "MISSING" else a
            for a in args]
    if args and args[0] == "compile":
        args += ["-o", str(ws.out / "m.evpkg")]
    line = assert_one_line_error(cli(ws, *args), ws, *needles)
    assert "WARN" not in line and "usage:" not in line


def _jpeg(ws: Workspace, damage: str) -> Path:
    data = (REPO / "edgevision" / "samples" / "images" / "chelsea.jpg").read_bytes()
    if damage == "truncated":
        data = data[:int(len(data) * 0.7)]
    elif damage == "truncated with an end marker":
        data = data[:int(len(data) * 0.7)] + b"\xff\xd9"
    else:
        third = len(data) // 3
        data = data[:third] + np.random.default_rng(0).bytes(3000) + data[third + 3000:]
    path = ws.out.parent / "photo.jpg"
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("damage", ["truncated", "truncated with an end marker", "garbled"])
def test_a_damaged_jpeg_is_refused_not_classified_grey(ws: Workspace, tiny_ort: Path, damage: str) -> None:
    line = assert_one_line_error(cli(ws, "predict", str(tiny_ort), str(_jpeg(ws, damage))), ws, "photo.jpg")
    assert ("truncated" if damage == "truncated" else "corrupt") in line


def test_the_intact_photo_still_classifies(ws: Workspace, tiny_ort: Path) -> None:
    """Control for the damaged-JPEG cases: the same file, whole, is read and classified."""
    photo = shutil.copy(REPO / "edgevision" / "samples" / "images" / "chelsea.jpg", ws.out.parent / "photo.jpg")
    result = cli(ws, "predict", str(tiny_ort), str(photo))
    assert result.returncode == 0 and result.stderr == "" and result.stdout.startswith("photo.jpg")


# --- 11. umask -------------------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o077, 0o002])
def test_outputs_respect_the_umask(ws: Workspace, tiny_ort: Path, umask: int) -> None:
    """Before: artifacts were 0600 whatever the umask (mkstemp). Also: a passing gate writes its report."""
    clip = ws.out.parent / "clip.avi"
    _write_clip(clip, frames=4)
    old = os.umask(umask)
    try:
        compiled = cli(ws, "compile", TINY, "-o", str(ws.out / "m.evpkg"), "--accuracy-report", str(ws.out / "r.csv"))
        streamed = cli(ws, "stream", str(tiny_ort), "--source", str(clip), "--json", str(ws.out / "f.jsonl"),
                       "--save", str(ws.out / "f.avi"), "--stats-json", str(ws.out / "s.json"))
    finally:
        os.umask(old)
    assert compiled.returncode == 0 and streamed.returncode == 0, compiled.stderr + streamed.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in ws.out.iterdir()}
    assert modes == dict.fromkeys(["m.evpkg", "r.csv", "f.jsonl", "f.avi", "s.json"], 0o666 & ~umask)
    rows = (ws.out / "r.csv").read_text().splitlines()
    assert rows[0].startswith("index,input,reference_top1") and len(rows) > 10


def test_write_atomic_leaves_nothing_when_interrupted(tmp_path: Path) -> None:
    from edgevision.files import atomic_output

    with pytest.raises(KeyboardInterrupt):
        with atomic_output(tmp_path / "out.bin") as tmp:
            tmp.write_bytes(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_library_checks_the_same_bounds(tiny_ort: Path) -> None:
    """The API refuses what the CLI's parser refuses, in one line each."""
    from edgevision.errors import InputError
    from edgevision.preprocess import PreprocessConfig, limit_aspect, preprocess
    from edgevision.runtime import load

    with pytest.raises(InputError, match="threads must be a whole number >= 1"):
        load(tiny_ort, threads=0)
    with pytest.raises(InputError, match="cannot run on device 'TPU'"):
        load(tiny_ort, device="TPU")
    model = load(tiny_ort)
    image = photos(1)[0]
    for k in (0, -1, 2.5):
        with pytest.raises(InputError, match="top_k must be a whole number >= 1"):
            model.predict(image, top_k=k)
    model.close()
    with pytest.raises(InputError, match="this model was closed"):
        model.run(np.zeros((1, 3, 64, 64), np.float32))
    # Ordinary shapes pass through untouched; an extreme one becomes a view of its centre.
    assert limit_aspect(image, 256, (224, 224)) is image
    wide = np.zeros((2, 100_000, 3), np.uint8)
    kept = limit_aspect(wide, 256, (224, 224))
    assert kept.shape == (2, 8, 3) and kept.base is wide
    assert preprocess(wide, PreprocessConfig()).shape == (3, 224, 224)
