"""A PNG bar chart of FPS per target/precision: model-only and end-to-end side by side, never summed."""
from __future__ import annotations

import io
from pathlib import Path

from ..errors import BackendUnavailable
from .results import BenchReport, RowResult, same_precision, write_atomic

MODEL_COLOUR = "#3b75af"
STREAM_COLOUR = "#ef8636"


def plot_fps(report: BenchReport, path: Path) -> Path:
    """Horizontal bars, one group per measured row. Uses matplotlib's object API (no pyplot state)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise BackendUnavailable("--plot needs matplotlib", "pip install matplotlib") from err

    rows = [r for r in report.rows if r.ok and r.model_only]
    if not rows:
        raise BackendUnavailable("nothing was measured, so there is nothing to plot",
                                 "check the failed/skipped reasons in the table")
    s = report.settings
    labels = [_row_label(r) for r in rows]
    model_fps = [r.model_only.throughput_fps for r in rows]
    stream_fps = [r.end_to_end.fps if r.end_to_end else None for r in rows]
    has_stream = any(v is not None for v in stream_fps)

    height = 1.2 + 0.75 * len(rows) * (1.6 if has_stream else 1)
    fig = Figure(figsize=(9, height), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bar_h = 0.38 if has_stream else 0.6
    positions = list(range(len(rows)))[::-1]  # first row on top
    top = max(model_fps + [v for v in stream_fps if v is not None])
    model_y = [p + (bar_h / 2 if has_stream else 0) for p in positions]
    bars = ax.barh(model_y, model_fps, height=bar_h, color=MODEL_COLOUR,
                   label=f"model only (batch {s.batch}, {_threads(s.threads)}, {s.parallel_requests} request"
                         f"{'s' if s.parallel_requests > 1 else ''})")
    for bar, row in zip(bars, rows):
        lat = row.model_only.latency
        ax.text(bar.get_width() + top * 0.01, bar.get_y() + bar.get_height() / 2,
                f"{bar.get_width():.1f} FPS  (p50 {lat.p50_ms:.2f} ms)", va="center", fontsize=8)
    if has_stream:
        stream_y = [p - bar_h / 2 for p in positions]
        values = [v or 0.0 for v in stream_fps]
        sbars = ax.barh(stream_y, values, height=bar_h, color=STREAM_COLOUR,
                        label=f"end to end: decode + preprocess + model ({s.stream_frames} frames)")
        for bar, value in zip(sbars, stream_fps):
            text = f"{value:.1f} FPS" if value is not None else "not measured"
            ax.text((value or 0) + top * 0.01, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=8)
    ax.set_yticks(positions, labels, fontsize=9)
    ax.set_xlim(0, top * 1.35)
    ax.set_xlabel("frames per second (higher is better)")
    model_names = sorted({r.model for r in rows if r.model})
    ax.set_title(f"{', '.join(model_names)}: FPS per target / precision", fontsize=11)
    h = report.host
    fig.suptitle(f"{h.cpu_model} · {h.cpus_available} of {h.logical_cpus} CPUs · {h.date_utc[:10]}",
                 fontsize=8, color="#555555", x=0.99, ha="right")
    missing = [f"{r.label}: {r.status}" for r in report.rows if not (r.ok and r.model_only)]
    if missing:
        fig.text(0.01, 0.995, "not on the chart: " + "; ".join(missing), fontsize=7, color="#777777", va="top")
    fig.legend(loc="outside lower center", fontsize=8, frameon=False, ncols=2 if has_stream else 1)
    ax.grid(axis="x", alpha=0.3)
    ax.spines[["top", "right"]].set_visible(False)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return write_atomic(Path(path), buf.getvalue())


def _row_label(row: RowResult) -> str:
    label = row.label
    if row.effective_precision and row.precision and not same_precision(row.precision, row.effective_precision):
        label += f"\n(runs {row.effective_precision})"
    if row.device != "this host":
        label += f"\n{row.device}"
    return label


def _threads(threads: int | None) -> str:
    return "runtime-default threads" if threads is None else f"{threads} thread{'s' if threads > 1 else ''}"
