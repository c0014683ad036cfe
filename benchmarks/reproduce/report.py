"""Outputs of a reproduction run: ``table.md``, ``results.json`` and PNG plots.

Every function here takes the per-round rows an experiment computed (plain dicts, one per
round, see :func:`benchmarks.reproduce.experiments.imp_vs_prac`) and only formats them.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tickets.parallel import is_writer

__all__ = ["markdown_table", "write_json", "plot_accuracy", "plot_accuracy_vs_steps", "plot_prac_cost", "fmt", "fmt_acc",
           "standard_error"]


def fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    """A number for a table cell; ``-`` for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}{suffix}"
    return f"{value:.{digits}f}{suffix}"


def standard_error(accuracy: float | None, n: int) -> float | None:
    """The standard error ``sqrt(p (1 - p) / n)`` of an accuracy ``p`` (in [0, 1]) measured on
    ``n`` test samples (binomial); None when ``p`` is None or ``n < 1``."""
    if accuracy is None or n < 1:
        return None
    return math.sqrt(max(0.0, accuracy * (1.0 - accuracy)) / n)


def fmt_acc(accuracy: float | None, n: int, digits: int = 2) -> str:
    """An accuracy in [0, 1] as a percentage with its standard error on ``n`` test samples:
    ``"80.13 ± 0.40"``; ``-`` when missing."""
    if accuracy is None:
        return "-"
    return f"{100 * accuracy:.{digits}f} ± {100 * standard_error(accuracy, n):.{digits}f}"  # type: ignore[operator]


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-flavoured markdown table (cells formatted with :func:`fmt` unless strings)."""
    cells = [[c if isinstance(c, str) else fmt(c) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines) + "\n"


def write_json(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Write JSON atomically (a crash never leaves half a results file)."""
    path = Path(path)
    if not is_writer():  # under torchrun only rank 0 writes
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")
    os.replace(tmp, path)
    return path


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"not JSON-serializable: {type(value).__name__}")


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path: str | os.PathLike[str]) -> Path:  # type: ignore[no-untyped-def]
    """Lay ``fig`` out, write it to ``path`` and close it; returns the path."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_accuracy(
    series: dict[str, tuple[Sequence[float], Sequence[float | None]]],
    path: str | os.PathLike[str],
    *,
    title: str,
    reference: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    errors: dict[str, Sequence[float | None]] | None = None,
) -> Path:
    """Test accuracy (%) against sparsity (%), one line per ticket finder.

    Args:
        series: ``{label: (sparsities in %, accuracies in %)}``; None accuracies are skipped.
        path: PNG file to write.
        title: plot title.
        reference: optional ``{label: (sparsities, accuracies)}`` drawn dashed (e.g. the paper's).
        errors: optional ``{label: standard errors in points}`` (one per point of ``series[label]``),
            drawn as error bars (the lines then moved sideways a little, to stay apart).
    """
    if not is_writer():
        return Path(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for i, (label, (xs, ys)) in enumerate(series.items()):
        _line(ax, xs, ys, (errors or {}).get(label), label, i, len(series), _span(v[0] for v in series.values()))
    for label, (xs, ys) in (reference or {}).items():
        ax.plot(xs, ys, linestyle="--", marker="x", alpha=0.7, label=label)
    ax.set_xlabel("sparsity of the pruned tensors (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _span(columns: Any) -> float:
    """The range of all x values of a panel (for the dodge of lines drawn with error bars)."""
    values = [x for xs in columns for x in xs]
    return (max(values) - min(values)) if values else 0.0


def _line(ax: Any, xs: Sequence[float], ys: Sequence[float | None], errs: Sequence[float | None] | None, label: str,
          index: int = 0, count: int = 1, span: float = 0.0) -> None:
    """Line ``index`` of ``count`` (points with a None y skipped), with error bars when ``errs``
    is given; then each line gets its own marker and is moved sideways by up to 1% of the
    panel's x ``span``, so that lines at the same x (compute-matched finders) stay visible."""
    keep = [i for i, y in enumerate(ys) if y is not None]
    px, py = [xs[i] for i in keep], [ys[i] for i in keep]
    if errs is None:
        ax.plot(px, py, marker="o", label=label)
        return
    dodge = (index - (count - 1) / 2) * 0.01 * span / max(1, count - 1) * 2 if count > 1 else 0.0
    ax.errorbar([x + dodge for x in px], py, yerr=[errs[i] or 0.0 for i in keep], marker=_MARKERS[index % len(_MARKERS)],
                capsize=3, label=label, alpha=0.85)


def plot_accuracy_vs_steps(
    panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float | None], Sequence[float | None]]]],
    path: str | os.PathLike[str],
    *,
    title: str,
) -> Path:
    """The cost view: ticket test accuracy (%) against cumulative optimizer steps, one panel per
    measure of cost (e.g. steps spent finding, steps to a trained model), one line per finder.

    Args:
        panels: ``{x-axis label: {finder label: (steps, accuracies in %, standard errors in points)}}``;
            points with a None accuracy are skipped.
        path: PNG file to write.
        title: the figure's title.
    """
    if not is_writer():
        return Path(path)
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4), dpi=110, squeeze=False)
    for ax, (xlabel, series) in zip(axes[0], panels.items()):
        span = _span(v[0] for v in series.values())
        for i, (label, (xs, ys, errs)) in enumerate(series.items()):
            _line(ax, xs, ys, errs, label, i, len(series), span)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ticket test accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)


def plot_prac_cost(
    rounds: Sequence[int],
    set_fraction: Sequence[float],
    steps: dict[str, Sequence[int]],
    path: str | os.PathLike[str],
    *,
    title: str,
) -> Path:
    """Two panels: PrAC set size (% of the training split) per round, and optimizer steps
    per round for each finder (``steps = {label: per-round steps}``)."""
    if not is_writer():
        return Path(path)
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    left.bar(list(rounds), [100 * f for f in set_fraction], color="tab:orange")
    left.set_xlabel("round")
    left.set_ylabel("PrAC set (% of training split)")
    left.set_ylim(0, 105)
    left.grid(alpha=0.3, axis="y")
    width = 0.8 / max(1, len(steps))
    for i, (label, values) in enumerate(steps.items()):
        right.bar([r + (i - (len(steps) - 1) / 2) * width for r in rounds], list(values), width=width, label=label)
    right.set_xlabel("round")
    right.set_ylabel("optimizer steps")
    right.legend(fontsize=8)
    right.grid(alpha=0.3, axis="y")
    fig.suptitle(title, fontsize=10)
    return _save(plt, fig, path)
