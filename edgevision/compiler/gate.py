"""The accuracy gate: the compiled model against the original, on real images, every compile.

Two ways to judge, one per kind of validation folder, the same for every precision:

* **labelled** (``--val DIR`` with class sub-folders, ImageFolder layout): real top-1/top-5 accuracy
  of the original and of the compiled model; the gate limits the drop in points.
* **unlabelled** (the bundled set, or any folder of images): margin-aware top-1 agreement. An input
  is *decisive* when the original's top-1 beats its runner-up by at least ``DECISIVE_MARGIN`` in
  log-odds (logits are log-probabilities up to a constant; for probability outputs, their logs);
  only there does a changed top-1 count. Near-ties are reported apart: any rounding reorders them.
  When too few inputs are decisive (flat logits of a random-init model), the gate judges by the
  cosine of the outputs instead, and says so.

Degenerate outputs never pass: NaN/inf, outputs that do not change with the input, outputs that vanish.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import batching
from ..artifact.manifest import AccuracyReport
from ..errors import AccuracyGateFailed, InputError
from ..preprocess import PreprocessConfig, preprocess
from ..runtime.prediction import softmax, topk_indices
from ..samples import IMAGE_SUFFIXES, image_paths, read_image

log = logging.getLogger(__name__)

# The default validation set: real photos (in views), street-clip and car-phone frames (scripts/make_validation_images.py).
DEFAULT_VAL_DIR = Path(__file__).resolve().parent.parent / "data" / "validation" / "images"
MAX_INPUTS = 1000  # a bigger --val folder is sampled evenly (bounded memory and gate time)
DECISIVE_MARGIN = 0.5  # log-odds: the original's top-1 at least e^0.5 = 1.65x as likely as its runner-up
MIN_DECISIVE = 16  # fewer decisive inputs than this (or under 10% of them): judge by cosine instead
# Margin-aware top-1 agreement required, by precision (criterion "decisive-top1").
DEFAULT_THRESHOLDS = {"fp32": 0.99, "fp16": 0.97, "bf16": 0.97, "int8": 0.95}
# Largest top-1 accuracy drop in points on a labelled folder (criterion "top1-drop").
DEFAULT_MAX_DROP = {"fp32": 0.1, "fp16": 0.3, "bf16": 0.3, "int8": 1.0}
# Mean cosine of the outputs required when the logits are too flat to judge by top-1 (criterion "cosine").
DEFAULT_MIN_COSINE = {"fp32": 0.9999, "fp16": 0.995, "bf16": 0.995, "int8": 0.98}
VANISHING = 1e-6  # largest |output| below this: the model outputs nothing

Predict = Callable[[np.ndarray], np.ndarray]  # (N, C, H, W) float32 -> (N, classes) logits


def _views(image: np.ndarray) -> list[np.ndarray]:
    """The image, its mirror and two offset crops: four real, distinct inputs per photo."""
    h, w = image.shape[:2]
    ch, cw = int(h * 0.8), int(w * 0.8)
    return [image, image[:, ::-1], image[:ch, :cw], image[h - ch:, w - cw:]]


def validation_tensors(config: PreprocessConfig, folder: Path | None = None, views: bool = True) -> np.ndarray:
    """The 8 bundled sample photos in 4 views each (32 inputs): the small set device checks use."""
    tensors = []
    for path in image_paths(folder):
        image = read_image(path)
        for view in _views(image) if views else [image]:
            tensors.append(preprocess(np.ascontiguousarray(view), config, channels="BGR"))
    return np.stack(tensors)


@dataclass
class ValidationSet:
    """Preprocessed validation inputs, where each came from, and its class folder when labelled."""

    tensors: np.ndarray
    names: list[str]
    groups: list[str]  # first folder level under the root ("photos", "bikes", or the class folder)
    folder: Path
    available: int  # images found, before MAX_INPUTS sampling
    class_folders: list[str] | None = None  # ImageFolder layout: each input's class folder name
    targets: np.ndarray | None = None  # class index per input, once matched to the model's labels
    label_note: str = ""
    bundled: bool = False

    @property
    def description(self) -> str:
        return "bundled (edgevision/data/validation/images)" if self.bundled else str(self.folder)

    def __len__(self) -> int:
        return len(self.tensors)

    def spread(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for g in self.groups:
            counts[g] = counts.get(g, 0) + 1
        return counts


def _evenly(count: int, size: int) -> list[int]:
    return list(range(count)) if count <= size else np.linspace(0, count - 1, size).round().astype(int).tolist()


def load_validation(config: PreprocessConfig, folder: Path | None = None, max_inputs: int = MAX_INPUTS) -> ValidationSet:
    """Every image under ``folder`` (the bundled set by default), preprocessed as the artifact will be."""
    root = DEFAULT_VAL_DIR if folder is None else Path(folder)
    if folder is None and not root.is_dir():  # an installation without the data: the sample photos
        root = image_paths()[0].parent
    paths = image_paths(root)
    subdirs = [p for p in root.iterdir() if p.is_dir()]
    loose = [p for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    image_folder = folder is not None and bool(subdirs) and not loose
    chosen = [paths[i] for i in _evenly(len(paths), max_inputs)]
    tensors, names, groups = [], [], []
    for path in chosen:
        tensors.append(preprocess(read_image(path), config, channels="BGR"))
        rel = path.relative_to(root)
        names.append(str(rel))
        groups.append(rel.parts[0] if len(rel.parts) > 1 else ".")
    return ValidationSet(np.stack(tensors), names, groups, root, len(paths),
                         class_folders=list(groups) if image_folder else None, bundled=folder is None)


def _label_keys(label: str) -> set[str]:
    """A label and its comma-separated synonyms, in the spellings folder names use."""
    keys = set()
    for part in [label, *label.split(",")]:
        text = part.strip().lower()
        keys |= {text, text.replace(" ", "_"), text.replace(" ", "-"), text.replace("_", " ")}
    return {k for k in keys if k}


def match_labels(valset: ValidationSet, labels: Sequence[str]) -> None:
    """ImageFolder sub-folders -> class indices: by the model's label names, else by index."""
    if valset.class_folders is None:
        return
    folders = sorted(set(valset.class_folders))
    by_key: dict[str, int] = {}
    for index, label in enumerate(labels):
        for key in _label_keys(label):
            by_key.setdefault(key, index)
    named = {f: by_key.get(f.strip().lower()) for f in folders}
    hits = [f for f, i in named.items() if i is not None]
    mapping: dict[str, int] | None = None
    if len(hits) == len(folders):
        mapping = {f: int(i) for f, i in named.items()}  # type: ignore[arg-type]
    elif all(f.isdigit() and int(f) < len(labels) for f in folders):
        mapping = {f: int(f) for f in folders}
    elif hits:
        missing = [f for f in folders if named[f] is None]
        raise InputError(f"validation folders {', '.join(missing[:5])} in {valset.folder} match none of the "
                         f"model's {len(labels)} labels ({len(hits)} other folders do)",
                         "rename them to label names (e.g. " + ", ".join(repr(l) for l in labels[:2]) +
                         ") or class indices, or pass --labels")
    if mapping is None:
        valset.label_note = (f"class folders of {valset.folder} match neither the model's labels nor class "
                             "indices: judged by agreement, not accuracy")
        log.warning("%s", valset.label_note)
        return
    valset.targets = np.array([mapping[f] for f in valset.class_folders], dtype=np.int64)


def run_batched(predict: Predict, inputs: np.ndarray, batch: int) -> np.ndarray:
    """A model's float32 outputs on ``inputs``, ``batch`` rows at a time."""
    return batching.run_batched(predict, inputs, batch, np.float32)


def _log_scores(x: np.ndarray) -> np.ndarray:
    """Log-odds scale of the outputs: logits as they are; probabilities (rows >= 0 summing to 1) as logs."""
    x = x.astype(np.float64)
    if x.min() >= 0 and np.allclose(x.sum(1), 1.0, atol=1e-3):
        return np.log(np.clip(x, 1e-12, None))
    return x


@dataclass(frozen=True)
class Comparison:
    """Per-input agreement, for reports and for the summary stored in the manifest."""

    reference_top1: np.ndarray
    candidate_top1: np.ndarray
    top5_hit: np.ndarray  # reference top-1 inside the candidate's top-5
    abs_diff: np.ndarray
    cosine: np.ndarray
    kl: np.ndarray
    margin: np.ndarray  # the reference's top-1 - top-2 in log-odds
    decisive: np.ndarray
    reference_top5: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), int))
    candidate_top5: np.ndarray = field(default_factory=lambda: np.zeros((0, 5), int))


def _degenerate(name: str, out: np.ndarray, fix: str) -> None:
    bad = ~np.isfinite(out)
    if bad.any():
        kinds = " and ".join(k for k, m in (("NaN", np.isnan(out)), ("inf", np.isinf(out))) if m.any())
        rows = int(bad.any(1).sum())
        raise AccuracyGateFailed(f"accuracy gate failed: {name} outputs {kinds} for {rows} of {len(out)} inputs", fix)
    peak = float(np.abs(out).max()) if out.size else 0.0
    if peak < VANISHING:
        raise AccuracyGateFailed(f"accuracy gate failed: {name}'s outputs vanish (largest |output| {peak:.3g} "
                                 f"over {len(out)} inputs)", fix)
    if len(out) > 1 and float(np.ptp(out, axis=0).max()) <= 1e-6 * max(1.0, peak):
        raise AccuracyGateFailed(f"accuracy gate failed: {name} outputs the same values for all {len(out)} "
                                 "different inputs", fix)


def compare(reference: np.ndarray, candidate: np.ndarray, reference_name: str = "the original model",
            candidate_name: str = "the compiled model") -> Comparison:
    if reference.shape != candidate.shape:
        raise AccuracyGateFailed(f"compiled model outputs shape {candidate.shape}, original {reference.shape}",
                                 "the export changed the model's output: check the model's forward()")
    _degenerate(reference_name, reference, "the original model itself is broken on real images: check its "
                "weights, its preprocessing (--input-size, mean/std) and its forward()")
    _degenerate(candidate_name, candidate, "the compiled model is broken although the original is not: try "
                "another precision or target, or check calibration (--calib) for int8")
    ref_scores, cand_scores = _log_scores(reference), _log_scores(candidate)
    ordered = np.sort(ref_scores, axis=1)
    margin = ordered[:, -1] - ordered[:, -2] if ref_scores.shape[1] > 1 else np.full(len(ref_scores), np.inf)
    ref_top1 = reference.argmax(1)
    cand_top5 = topk_indices(candidate, 5)
    p, q = softmax(ref_scores), softmax(cand_scores)
    cosine = (reference * candidate).sum(1) / (
        np.linalg.norm(reference, axis=1) * np.linalg.norm(candidate, axis=1) + 1e-30)
    kl = (p * (np.log(p + 1e-12) - np.log(q + 1e-12))).sum(1)
    return Comparison(reference_top1=ref_top1, candidate_top1=candidate.argmax(1),
                      top5_hit=(cand_top5 == ref_top1[:, None]).any(1),
                      abs_diff=np.abs(reference - candidate).max(1), cosine=cosine, kl=kl, margin=margin,
                      decisive=margin >= DECISIVE_MARGIN, reference_top5=topk_indices(reference, 5),
                      candidate_top5=cand_top5)


@dataclass(frozen=True)
class Thresholds:
    """What the gate requires; None: the precision's default."""

    min_agreement: float | None = None
    max_drop_points: float | None = None
    min_cosine: float | None = None


def summarize(cmp: Comparison, precision: str, reference: str, candidate: str, valset: ValidationSet | None = None,
              thresholds: Thresholds = Thresholds(), note: str = "", used: Sequence[int] | None = None) -> AccuracyReport:
    n = len(cmp.abs_diff)
    agree = cmp.reference_top1 == cmp.candidate_top1
    decisive = cmp.decisive
    n_decisive = int(decisive.sum())
    decisive_agreement = float(agree[decisive].mean()) if n_decisive else 1.0
    ties = ~decisive
    tie_agreement = float(agree[ties].mean()) if ties.any() else 1.0
    mean_cosine = float(cmp.cosine.mean())
    extra: dict = {}
    targets = None
    if valset is not None and valset.targets is not None:
        targets = valset.targets if used is None else valset.targets[np.asarray(used)]
    if targets is not None:
        ref_acc = float((cmp.reference_top1 == targets).mean())
        cand_acc = float((cmp.candidate_top1 == targets).mean())
        drop = 100 * (ref_acc - cand_acc)
        limit = thresholds.max_drop_points if thresholds.max_drop_points is not None else DEFAULT_MAX_DROP[precision]
        criterion, threshold, passed = "top1-drop", limit, drop <= limit + 1e-9
        extra = {"labelled": True, "reference_top1_accuracy": ref_acc, "candidate_top1_accuracy": cand_acc,
                 "reference_top5_accuracy": float((cmp.reference_top5 == targets[:, None]).any(1).mean()),
                 "candidate_top5_accuracy": float((cmp.candidate_top5 == targets[:, None]).any(1).mean()),
                 "drop_points": drop, "classes": int(len(set(targets.tolist())))}
    elif n_decisive >= min(MIN_DECISIVE, max(1, n)) and n_decisive >= 0.1 * n:
        criterion = "decisive-top1"
        threshold = thresholds.min_agreement if thresholds.min_agreement is not None else DEFAULT_THRESHOLDS[precision]
        passed = decisive_agreement >= threshold
    else:
        criterion = "cosine"
        threshold = thresholds.min_cosine if thresholds.min_cosine is not None else DEFAULT_MIN_COSINE[precision]
        passed = mean_cosine >= threshold
        note = "; ".join(x for x in (note, f"only {n_decisive} of {n} inputs have a decisive top-1 (flat outputs): "
                                     f"judged by cosine and max|diff|, not top-1") if x)
    if valset is not None and valset.label_note:
        note = "; ".join(x for x in (note, valset.label_note) if x)
    spread = valset.spread() if valset is not None and used is None else (
        _count([valset.groups[i] for i in used]) if valset is not None and used is not None else {})
    return AccuracyReport(reference=reference, candidate=candidate, images=n, max_abs_diff=float(cmp.abs_diff.max()),
                          top1_agreement=float(agree.mean()), top5_agreement=float(cmp.top5_hit.mean()),
                          threshold=threshold, passed=bool(passed), mean_cosine=mean_cosine,
                          mean_kl=float(cmp.kl.mean()), note=note, criterion=criterion,
                          decisive=n_decisive, ties=n - n_decisive, decisive_agreement=decisive_agreement,
                          tie_agreement=tie_agreement, decisive_margin=DECISIVE_MARGIN,
                          available_inputs=valset.available if valset is not None else n,
                          validation=valset.description if valset is not None else "",
                          spread=spread, distinct_classes=int(len(set(cmp.reference_top1.tolist()))), **extra)


def _count(items: Sequence[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for item in items:
        counts[item] = counts.get(item, 0) + 1
    return counts


def write_report(cmp: Comparison, labels: Sequence[str], path: Path, names: Sequence[str] | None = None) -> None:
    """Per-input table (CSV) for --accuracy-report."""
    import csv

    with open(path, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["index", "input", "reference_top1", "candidate_top1", "agree", "decisive", "margin",
                         "top5_hit", "max_abs_diff", "cosine", "kl"])
        for i in range(len(cmp.abs_diff)):
            ref, cand = int(cmp.reference_top1[i]), int(cmp.candidate_top1[i])
            writer.writerow([i, names[i] if names else "", f"{ref}:{labels[ref]}", f"{cand}:{labels[cand]}",
                             ref == cand, bool(cmp.decisive[i]), f"{cmp.margin[i]:.4g}", bool(cmp.top5_hit[i]),
                             f"{cmp.abs_diff[i]:.6g}", f"{cmp.cosine[i]:.6f}", f"{cmp.kl[i]:.6g}"])


def describe(report: AccuracyReport) -> str:
    return report.summary()


def enforce(report: AccuracyReport, fix: str | None = None) -> None:
    if report.passed:
        return
    default_fix = ("check the model's export (data-dependent control flow, training-mode layers) or the precision; "
                   + ("--max-drop raises the limit" if report.criterion == "top1-drop" else
                      "--min-agreement lowers the bar") + ", --no-gate skips it")
    raise AccuracyGateFailed(f"accuracy gate failed: {report.candidate} vs {report.reference}: {describe(report)}",
                             fix or default_fix)
