"""The accuracy gate: labelled folders give accuracy and a drop in points; unlabelled ones margin-aware
agreement with one criterion for every precision; degenerate outputs never pass; --precision auto.

Small real models (64x64 input) for the failure classes; the default model for accuracy figures.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli
from edgevision.compiler import CompileRequest, compile_model
from edgevision.compiler import auto_choice, gate
from edgevision.errors import AccuracyGateFailed, InputError
from edgevision.preprocess import PreprocessConfig
from edgevision.samples import IMAGES_DIR

HERE = Path(__file__).resolve().parent
MODELS = HERE / "gate_models.py"


def _compile_fails(tmp_path: Path, factory: str, words: str, **kwargs) -> str:
    out = tmp_path / f"{factory}.evpkg"
    with pytest.raises(AccuracyGateFailed) as err:
        compile_model(CompileRequest(model=f"{MODELS}:{factory}", target="onnxruntime-cpu", output=out, **kwargs))
    message = str(err.value)
    assert words in message and "\n" not in message, message
    assert not out.exists()
    return message


def test_the_default_validation_set_is_hundreds_of_real_inputs_disjoint_from_calibration() -> None:
    from edgevision.quantize import BUNDLED_DIR

    valset = gate.load_validation(PreprocessConfig(input_size=(32, 32), resize_short=36))
    assert len(valset) >= 250 and valset.available == len(valset)
    assert set(valset.spread()) == {"photos", "bikes", "carphone"} and min(valset.spread().values()) >= 20
    calibration = {p.name for p in BUNDLED_DIR.rglob("*.jpg")}
    assert not calibration & {Path(n).name for n in valset.names}
    assert len({t.tobytes() for t in valset.tensors}) == len(valset)  # every input distinct


def test_nan_output_fails_the_gate(tmp_path: Path) -> None:
    _compile_fails(tmp_path, "nan_output", "outputs NaN")


def test_inf_in_the_compiled_model_only_fails() -> None:
    ref = np.random.default_rng(0).normal(size=(40, 10)).astype(np.float32) * 3
    cand = ref.copy()
    cand[3, 2] = np.inf
    with pytest.raises(AccuracyGateFailed, match="the compiled model outputs inf for 1 of 40"):
        gate.compare(ref, cand)


def test_constant_output_fails_the_gate(tmp_path: Path) -> None:
    _compile_fails(tmp_path, "constant_output", "outputs the same values for all")


def test_vanishing_output_fails_the_gate(tmp_path: Path) -> None:
    _compile_fails(tmp_path, "vanishing_output", "outputs vanish")


def test_flat_logits_are_judged_by_cosine_and_say_so(tmp_path: Path) -> None:
    result = compile_model(CompileRequest(model=f"{MODELS}:flat_logits", target="onnxruntime-cpu",
                                          output=tmp_path / "flat.evpkg"))
    acc = result.manifest.accuracy
    assert acc.passed and acc.criterion == "cosine" and acc.decisive < 16
    assert "judged by cosine" in acc.note and acc.mean_cosine > 0.9999


def test_a_changed_decisive_top1_fails_but_a_near_tie_does_not() -> None:
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(100, 10)).astype(np.float32)
    ref[:, 0] += 5  # decisive: class 0 by 5 logits
    ref[:50, 1] = ref[:50, 0] - 0.01  # ... except on 50 inputs, near-ties with class 1
    tie_flipped = ref.copy()
    tie_flipped[:50, [0, 1]] = tie_flipped[:50, [1, 0]]
    report = gate.summarize(gate.compare(ref, tie_flipped), "int8", "torch", "x")
    assert report.passed and report.criterion == "decisive-top1" and report.ties == 50
    assert report.top1_agreement == 0.5 and report.decisive_agreement == 1.0 and report.tie_agreement == 0.0
    decisive_flipped = ref.copy()
    decisive_flipped[50:60, 2] += 20
    bad = gate.summarize(gate.compare(ref, decisive_flipped), "int8", "torch", "x")
    assert not bad.passed and bad.decisive_agreement == 0.8
    with pytest.raises(AccuracyGateFailed, match="top-1 agreement 80.0% on 50 decisive inputs"):
        gate.enforce(bad)


def test_class_folders_match_labels_or_indices_or_say_why_not(tmp_path: Path) -> None:
    labels = ["tabby, tabby cat", "tiger cat", "espresso"]
    config = PreprocessConfig(input_size=(32, 32), resize_short=36)
    for names, expected in [(("tabby_cat", "espresso"), [2, 0]), (("0", "2"), [0, 2])]:
        root = tmp_path / "_".join(names)
        for name in names:
            (root / name).mkdir(parents=True)
            shutil.copy(IMAGES_DIR / "coffee.jpg", root / name / "a.jpg")
        valset = gate.load_validation(config, root)
        gate.match_labels(valset, labels)
        assert sorted(valset.targets.tolist()) == sorted(expected)
    mixed = tmp_path / "mixed"
    for name in ("espresso", "espreso"):
        (mixed / name).mkdir(parents=True)
        shutil.copy(IMAGES_DIR / "coffee.jpg", mixed / name / "a.jpg")
    with pytest.raises(InputError, match="espreso .* match none of the model's 3 labels") as err:
        gate.match_labels(gate.load_validation(config, mixed), labels)
    assert "\n" not in str(err.value)
    unrelated = gate.load_validation(config, tmp_path / "0_2")
    gate.match_labels(unrelated, ["a", "b"])  # indices out of range and no names: agreement, with one line
    assert unrelated.targets is None and "match neither" in unrelated.label_note


def test_labelled_folder_of_the_bundled_photos_gives_accuracy_and_a_drop(tmp_path: Path) -> None:
    """ImageFolder of the 8 photos under ImageNet label names: real top-1/top-5 accuracy, drop in points."""
    val = tmp_path / "val"
    for photo, folder in [("chelsea", "tabby"), ("coffee", "espresso"), ("camera", "tripod"),
                          ("rocket", "missile"), ("grace_hopper", "military uniform"), ("astronaut", "space shuttle")]:
        (val / folder).mkdir(parents=True)
        shutil.copy(IMAGES_DIR / f"{photo}.jpg", val / folder / f"{photo}.jpg")
    out = tmp_path / "lite0.evpkg"
    cli = run_cli("compile", "-t", "onnxruntime-cpu", "--val", str(val), "-o", str(out), timeout=600)
    assert cli.returncode == 0, cli.stderr
    assert "top-1 accuracy" in cli.stdout and "drop 0.00 points" in cli.stdout
    from edgevision.artifact import read_manifest

    acc = read_manifest(out).accuracy
    assert acc.criterion == "top1-drop" and acc.labelled and acc.classes == 6 and acc.images == 6
    assert acc.threshold == 0.1 and acc.drop_points == 0.0  # fp32: <= 0.1 points
    assert 0.5 <= acc.reference_top1_accuracy <= 1.0 and acc.reference_top5_accuracy >= acc.reference_top1_accuracy
    info = run_cli("info", str(out))
    assert info.returncode == 0 and "top-1 accuracy" in info.stdout and "drop 0.00 points" in info.stdout


def test_precision_auto_gates_and_times_every_precision_with_one_criterion(tmp_path: Path) -> None:
    out = tmp_path / "auto.evpkg"
    result = compile_model(CompileRequest(model=f"{MODELS}:decisive_tiny", target="intel-cpu", precision="auto",
                                          output=out, options={"calib_size": 16}))
    auto = result.manifest.payload["precision_auto"]
    rows = {r["precision"]: r for r in auto["candidates"]}
    assert set(rows) == {"fp32", "bf16", "fp16", "int8"}
    passed = {p: r for p, r in rows.items() if r["passed"]}
    assert "fp32" in passed and {r["criterion"] for r in passed.values()} == {"decisive-top1"}
    timed = {p: r for p, r in passed.items() if not r.get("same_as")}
    fastest = min(timed, key=lambda p: timed[p]["latency_ms"])
    chosen = auto["chosen"]
    assert chosen == result.manifest.precision and rows[chosen]["chosen"] and chosen in timed
    # The fastest, or one as fast within the tie margin that agrees more with the original.
    assert timed[chosen]["latency_ms"] <= timed[fastest]["latency_ms"] * (1 + auto_choice.TIE_MARGIN)
    assert timed[chosen]["agreement"] >= timed[fastest]["agreement"]
    assert rows["fp32"]["ratio_to_fp32"] == 1.0
    # What each ran as is recorded (tiny keeps 2 of its 3 layers float at int8, so OpenVINO runs it mostly f32;
    # Lite0's int8 runs u8 kernels: test_int8.py).
    assert all(r["executed"] in ("fp32", "bf16", "fp16", "int8") for r in passed.values())
    assert result.manifest.accuracy.passed and out.exists()
    info = run_cli("info", str(out))
    assert info.returncode == 0 and f"chose {chosen}" in info.stdout


def test_precision_auto_needs_a_target_that_runs_here() -> None:
    cli = run_cli("compile", "-t", "rpi4", "--precision", "auto", timeout=120)
    assert cli.returncode != 0 and "Traceback" not in cli.stderr
    assert "cannot run here" in cli.stderr.strip().splitlines()[-1]  # one error line after the progress line


def test_auto_keeps_the_more_faithful_of_equally_fast_precisions_and_never_times_a_fallback_twice() -> None:
    # Figures measured by benchmarks/precision_auto.py (Lite0, intel-cpu). Xeon with AMX: int8 and bf16
    # are equally fast within noise, bf16 agrees more.
    xeon = [auto_choice.Candidate("fp32", "fp32", 1.0), auto_choice.Candidate("bf16", "bf16", 1.0),
            auto_choice.Candidate("fp16", "fp16", 1.0), auto_choice.Candidate("int8", "int8", 0.985)]
    latency = {"fp32": 4.35e-3, "bf16": 2.66e-3, "fp16": 5.78e-3, "int8": 2.62e-3}
    assert auto_choice.duplicates(xeon) == {}
    chosen, why = auto_choice.choose(xeon, latency)
    assert chosen == "bf16" and "agrees more" in why
    # Clearly faster wins even when it agrees less.
    assert auto_choice.choose(xeon, {**latency, "int8": 2.0e-3})[0] == "int8"
    # Zen 4 (avx512_bf16, no native fp16): fp16 ran as bf16, the same kernels as the bf16 candidate.
    zen4 = [auto_choice.Candidate("fp32", "fp32", 1.0), auto_choice.Candidate("bf16", "bf16", 1.0),
            auto_choice.Candidate("fp16", "bf16", 1.0), auto_choice.Candidate("int8", "int8", 0.99)]
    assert auto_choice.duplicates(zen4) == {"fp16": "bf16"}
    # AVX2 only: bf16 and fp16 both ran as fp32; neither is timed apart from fp32.
    avx2 = [auto_choice.Candidate("fp32", "fp32", 1.0), auto_choice.Candidate("bf16", "fp32", 1.0),
            auto_choice.Candidate("fp16", "fp32", 1.0)]
    assert auto_choice.duplicates(avx2) == {"bf16": "fp32", "fp16": "fp32"}
