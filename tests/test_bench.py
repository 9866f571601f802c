"""`edgevision bench`: real artifacts measured in real worker processes, with small iteration counts.

No assertion depends on how fast this machine is: only on the figures being consistent with each other.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import json
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from reliability_models import MODELS

ITERATIONS, WARMUP, ROUNDS, FRAMES = 12, 2, 3, 50
TINY = f"{MODELS}:tiny"  # a small random convnet: compiles in seconds


@pytest.fixture(scope="module")
def bench_run(ort_artifact: Path, ov_artifact: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("bench")
    result = run_cli("bench", str(ort_artifact), str(ov_artifact), "--torch", "-n", str(ITERATIONS),
                     "--warmup", str(WARMUP), "--rounds", str(ROUNDS), "--frames", str(FRAMES), "--threads", "1",
                     "--json", str(out / "bench.json"), "--plot", str(out / "fps.png"))
    return result, out


def _rows(data: dict) -> dict[str, dict]:
    return {row["label"]: row for row in data["rows"]}


def test_cli_prints_both_tables_and_the_host(bench_run) -> None:
    result, _ = bench_run
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "model only: batch 1, 1 threads, 1 parallel request(s), 12 timed calls after 2 warm-up" in out
    assert f"end to end: Model.stream on bikes_80.mp4, {FRAMES} frames" in out
    for label in ("torch eager fp32", "onnxruntime-cpu fp32", "intel-cpu fp32"):
        assert label in out
    assert "host: " in out and "onnxruntime 1." in out and "openvino 20" in out


def test_json_figures_are_complete_and_consistent(bench_run) -> None:
    from edgevision.bench import SCHEMA, BenchReport

    _, out = bench_run
    data = json.loads((out / "bench.json").read_text())
    assert data["schema"] == SCHEMA
    assert data["settings"] == {"warmup": WARMUP, "iterations": ITERATIONS, "rounds": ROUNDS, "batch": 1, "threads": 1,
                                "parallel_requests": 1, "stream_source": "sample", "stream_frames": FRAMES}
    rows = _rows(data)
    assert set(rows) == {"torch eager fp32", "onnxruntime-cpu fp32", "intel-cpu fp32"}
    for row in rows.values():
        assert row["status"] == "ok", row["reason"]
        mo = row["model_only"]
        lat = mo["latency"]
        assert (mo["batch"], mo["threads"], mo["parallel_requests"], mo["rounds"]) == (1, 1, 1, ROUNDS)
        assert lat["iterations"] == ITERATIONS and lat["warmup"] == WARMUP and mo["images"] == ITERATIONS
        assert 0 < lat["min_ms"] <= lat["p50_ms"] <= lat["p90_ms"] <= lat["p99_ms"] <= lat["max_ms"]
        assert lat["min_ms"] <= lat["mean_ms"] <= lat["max_ms"]
        # One request at a time: the wall clock is the timed calls back to back, so FPS = 1000 / mean.
        assert mo["throughput_fps"] == pytest.approx(1000 / lat["mean_ms"], rel=0.1)
        mem = row["memory"]
        assert 30 < mem["rss_after_load_mb"] <= mem["peak_rss_model_only_mb"]
    # Model-only and end-to-end are separate fields; the stream went through the artifact rows only.
    for label in ("onnxruntime-cpu fp32", "intel-cpu fp32"):
        row = rows[label]
        e2e = row["end_to_end"]
        assert e2e["source"].endswith("bikes_80.mp4") and e2e["frames"] == FRAMES and e2e["fps"] > 0
        assert e2e["fps"] == pytest.approx(e2e["frames"] / e2e["duration_s"], rel=0.01)
        assert e2e["details"]["stages_ms"]["infer"]["p50"] > 0
        # Streaming is interleaved too: 50 frames in 2 rounds of 25, merged into one figure.
        assert [r["frames"] for r in e2e["details"]["rounds"]] == [25, 25]
        assert row["memory"]["peak_rss_end_to_end_mb"] >= row["memory"]["peak_rss_model_only_mb"]
        assert row["accuracy"]["passed"] and row["accuracy"]["top1_agreement"] == 1.0
        assert row["size_mb"] > 1 and row["model_only"]["call"] == "Model.run"
    assert "fps" not in rows["intel-cpu fp32"]["model_only"]
    assert rows["torch eager fp32"]["end_to_end"] is None and rows["torch eager fp32"]["end_to_end_note"]
    # Each row ran alone in its own process, with only its own runtime imported.
    assert len({row["pid"] for row in rows.values()}) == 3
    assert rows["onnxruntime-cpu fp32"]["runtimes_imported"] == ["onnxruntime"]
    assert rows["intel-cpu fp32"]["runtimes_imported"] == ["openvino"]
    assert "torch" in rows["torch eager fp32"]["runtimes_imported"]
    assert rows["intel-cpu fp32"]["effective_precision"] == "f32"
    # Reproducibility: where, with what, when.
    host = data["host"]
    assert host["cpu_model"] and host["cpus_available"] >= 1 and len(host["load_average"]) == 3
    assert host["libraries"]["onnxruntime"] == version("onnxruntime")
    assert host["libraries"]["openvino"] == version("openvino")
    assert dt.datetime.fromisoformat(host["date_utc"]).tzinfo is not None
    assert BenchReport.from_dict(data).to_dict() == data


def test_chart_is_a_real_png(bench_run) -> None:
    import matplotlib.image

    _, out = bench_run
    png = out / "fps.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = matplotlib.image.imread(png)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 400
    assert pixels[..., :3].std() > 0.05  # bars and text, not a blank canvas


def test_batch_and_parallel_requests_are_stated_and_counted(ort_artifact: Path) -> None:
    from edgevision.bench import BenchSettings, Candidate, run_benchmark

    settings = BenchSettings(warmup=1, iterations=8, rounds=2, batch=2, threads=1, parallel_requests=2,
                             stream_source=None, stream_frames=1)
    # Model.run feeds the static-batch artifact one image at a time; the call still counts 2 images.
    report = run_benchmark([Candidate.for_artifact(ort_artifact)], settings)
    (row,) = report.rows
    assert row.status == "ok", row.reason
    mo = row.model_only
    assert (mo.batch, mo.parallel_requests, mo.latency.iterations, mo.images) == (2, 2, 8, 16)
    assert mo.call == "Model.run"
    # The worker's peak is its own, not inherited from this (torch-laden, compiling) test process.
    parent_peak = next(int(line.split()[1]) / 1024 for line in Path("/proc/self/status").read_text().splitlines()
                       if line.startswith("VmHWM:"))
    assert parent_peak > 400, "the fixture compile should have loaded torch in this process"
    assert 30 < row.memory.peak_rss_model_only_mb < parent_peak
    assert row.end_to_end is None and row.end_to_end_note.startswith("not measured")


def _foreign_artifact(source: Path, out: Path) -> Path:
    """The same payload, declared for an aarch64 board (an ONNX payload is portable: it still runs here)."""
    from edgevision.artifact import unpack, write_artifact

    with tempfile.TemporaryDirectory() as tmp:
        manifest = unpack(source, Path(tmp))
        manifest.target = dataclasses.replace(manifest.target, name="some-arm-board", arch="aarch64")
        return write_artifact(manifest, Path(tmp) / "payload", out)


def test_foreign_and_broken_artifacts_become_rows_not_crashes(ort_artifact: Path, tmp_path: Path) -> None:
    from edgevision.bench import BenchSettings, Candidate, run_benchmark

    broken = tmp_path / "broken.evpkg"
    broken.write_bytes(ort_artifact.read_bytes()[:5000])
    foreign = _foreign_artifact(ort_artifact, tmp_path / "arm.evpkg")
    settings = BenchSettings(warmup=0, iterations=1, rounds=1, batch=1, threads=1, parallel_requests=1,
                             stream_source=None, stream_frames=1)
    report = run_benchmark([Candidate.for_artifact(broken), Candidate.for_artifact(foreign)], settings)
    bad, arm = report.rows
    assert bad.status == "failed" and "broken.evpkg" in bad.reason and bad.model_only is None
    # Portable: the aarch64 board's ONNX Runtime payload is timed here too. A non-portable aarch64
    # payload (TVM rpi4) is skipped: test_targets_reuse_compiled_artifacts_and_skip_what_cannot_run.
    assert arm.status == "ok" and arm.model_only is not None


def test_targets_reuse_compiled_artifacts_and_skip_what_cannot_run(ort_artifact: Path, tmp_path: Path) -> None:
    shutil.copy(ort_artifact, tmp_path / "efficientnet-lite0.onnxruntime-cpu.fp32.evpkg")
    result = run_cli("bench", "--targets", "onnxruntime-cpu,intel-gpu,rpi4", "--out", str(tmp_path), "--reuse",
                     "-n", "3", "--warmup", "0", "--rounds", "1", "--no-stream", "--json", str(tmp_path / "b.json"))
    assert result.returncode == 0, result.stderr
    rows = _rows(json.loads((tmp_path / "b.json").read_text()))
    assert rows["onnxruntime-cpu fp32"]["status"] == "ok"
    assert rows["onnxruntime-cpu fp32"]["artifact"].endswith("efficientnet-lite0.onnxruntime-cpu.fp32.evpkg")
    assert rows["intel-gpu fp16"]["status"] == "skipped" and "GPU" in rows["intel-gpu fp16"]["reason"]
    assert rows["rpi4 fp32"]["status"] == "skipped" and "aarch64" in rows["rpi4 fp32"]["reason"]
    assert rows["onnxruntime-cpu fp32"]["end_to_end"] is None
    assert not list(tmp_path.glob("*intel-gpu*")) and not list(tmp_path.glob("*rpi4*"))  # nothing compiled


@pytest.mark.parametrize("args, message", [
    (["--iterations", "0"], "--iterations/-n: must be a whole number >= 1, not 0"),
    (["--key", "rpi4"], "--rpc HOST:PORT"),
    (["--rpc", "nohost", "--targets", "rpi4"], "is not HOST:PORT"),
    (["--targets", "intel-cpu:int4"], "precision 'int4'"),
    (["--precisions", "fp32,int4"], "precision 'int4' in --precisions"),
    (["some.evpkg", "--precisions", "int8"], "--precisions applies to compiled --targets"),
])
def test_mistakes_are_one_line_errors(args: list[str], message: str, tmp_path: Path) -> None:
    result = run_cli("bench", *args, "--out", str(tmp_path), timeout=120)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_percentiles_match_numpy() -> None:
    from edgevision.bench import LatencyStats

    rng = np.random.default_rng(0)
    samples = rng.lognormal(1.0, 0.5, 257).tolist()
    stats = LatencyStats.from_samples(samples, warmup=3)
    for q, value in ((50, stats.p50_ms), (90, stats.p90_ms), (99, stats.p99_ms)):
        assert value == pytest.approx(np.percentile(samples, q))
    assert stats.mean_ms == pytest.approx(np.mean(samples)) and stats.std_ms == pytest.approx(np.std(samples))


def test_planning_turns_unrunnable_targets_into_rows_without_compiling(tmp_path: Path) -> None:
    from edgevision.bench.plan import parse_targets, plan_benchmark
    from edgevision.bench.results import RowStatus, SubjectKind
    from edgevision.errors import InputError

    assert parse_targets("intel-cpu, rpi4:int8,") == [("intel-cpu", None), ("rpi4", "int8")]
    plan = plan_benchmark([], targets="intel-gpu,rpi4", out_dir=tmp_path, torch=True)
    assert [c.kind for c in plan.candidates] == [SubjectKind.TORCH]
    assert [(r.label, r.status) for r in plan.unrunnable] == [("intel-gpu fp16", RowStatus.SKIPPED),
                                                               ("rpi4 fp32", RowStatus.SKIPPED)]
    assert "--rpc HOST:PORT" in plan.unrunnable[1].reason and not list(tmp_path.iterdir())
    with pytest.raises(InputError, match="names no target"):
        plan_benchmark([], targets=" , ", out_dir=tmp_path)
    # --precisions: each target at each precision, an explicit :PRECISION kept as written
    plan = plan_benchmark([], targets="intel-gpu,rpi4:int8", out_dir=tmp_path, precisions=("fp32", "int8"))
    assert [r.label for r in plan.unrunnable] == ["intel-gpu fp32", "intel-gpu int8", "rpi4 int8"]
    assert not list(tmp_path.iterdir())


def test_precisions_measures_each_precision_side_by_side_each_gated(tmp_path: Path) -> None:
    """`bench --precisions fp32,int8` compiles the model at both, gates both, times both in one run."""
    report = tmp_path / "b.json"
    result = run_cli("bench", "--model", TINY, "--targets", "onnxruntime-cpu", "--precisions", "fp32,int8",
                     "--out", str(tmp_path), "-n", "5", "--warmup", "1", "--rounds", "2", "--no-stream",
                     "--json", str(report), timeout=900)
    assert result.returncode == 0, result.stderr
    rows = _rows(json.loads(report.read_text()))
    for label in ("onnxruntime-cpu fp32", "onnxruntime-cpu int8"):
        assert rows[label]["status"] == "ok" and rows[label]["accuracy"]["passed"], rows[label]
        assert rows[label]["model_only"]["latency"]["mean_ms"] > 0
    assert rows["onnxruntime-cpu int8"]["precision"] == "int8"


def test_a_row_whose_worker_fails_is_marked_and_stopped() -> None:
    from edgevision.bench.results import RowStatus
    from edgevision.bench.session import BenchmarkRow, Candidate, WorkerError, _prepare

    class Dying:
        closed = False

        def request(self, **message):
            raise WorkerError("worker process exited with code -9")

        def close(self) -> None:
            self.closed = True

    worker = Dying()
    row = BenchmarkRow(Candidate.torch_eager(), _prepare(Candidate.torch_eager()), worker=worker)
    assert row.request(op="time", iterations=3) is None
    assert (row.result.status, row.result.reason) == (RowStatus.FAILED, "worker process exited with code -9")
    assert worker.closed and not row.live
