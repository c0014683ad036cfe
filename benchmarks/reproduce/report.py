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

__all__ = ["markdown_table", "write_json", "plot_accuracy", "plot_prac_cost", "fmt"]


def fmt(value: Any, digits: int = 2, suffix: str = "") -> str:
    """A number for a table cell; ``-`` for missing values."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}{suffix}"
    return f"{value:.{digits}f}{suffix}"


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


def plot_accuracy(
    series: dict[str, tuple[Sequence[float], Sequence[float | None]]],
    path: str | os.PathLike[str],
    *,
    title: str,
    reference: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None,
) -> Path:
    """Test accuracy (%) against sparsity (%), one line per ticket finder.

    Args:
        series: ``{label: (sparsities in %, accuracies in %)}``; None accuracies are skipped.
        path: PNG file to write.
        title: plot title.
        reference: optional ``{label: (sparsities, accuracies)}`` drawn dashed (e.g. the paper's).
    """
    if not is_writer():
        return Path(path)
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4), dpi=110)
    for label, (xs, ys) in series.items():
        pts = [(x, y) for x, y in zip(xs, ys) if y is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    for label, (xs, ys) in (reference or {}).items():
        ax.plot(xs, ys, linestyle="--", marker="x", alpha=0.7, label=label)
    ax.set_xlabel("sparsity of the pruned tensors (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path


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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
