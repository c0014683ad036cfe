"""The experiments of the reproduction harness, one function each.

An experiment is ``fn(ctx: Context) -> dict`` registered in :data:`EXPERIMENTS` with
:func:`register_experiment`. It runs its ticket searches through :func:`find_ticket` (one
call of ``tickets.prune`` with the preset's schedule, resumable from a checkpoint folder
under ``ctx.out``), measures tickets with :func:`measure_ticket`, writes its plots and
returns a JSON-able dict with at least ``rows`` (one per round), ``markdown`` (the content of
``table.md``) and ``summary`` (printed at the end). Adding an experiment (e.g. issue 6's
``rewinding``) is one more decorated function.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.reproduce.config import Preset, RunConfig
from benchmarks.reproduce.report import fmt, markdown_table, plot_accuracy, plot_prac_cost, write_json
from tickets.data import DataSplits

__all__ = ["Context", "EXPERIMENTS", "register_experiment", "find_ticket", "measure_ticket", "build_model", "imp_vs_prac", "transfer"]


@dataclass
class Context:
    """What an experiment gets: the run's configuration, its data, its output folder and a
    logger (``log(message)`` prints and appends to ``out/log.txt``)."""

    config: RunConfig
    splits: DataSplits
    out: Path
    log: Callable[[str], None]


Experiment = Callable[[Context], dict[str, Any]]
EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(name: str) -> Callable[[Experiment], Experiment]:
    """Decorator adding an experiment under ``name`` (the value of ``--experiment``)."""

    def add(fn: Experiment) -> Experiment:
        if name in EXPERIMENTS:
            raise ValueError(f"experiment {name!r} is already registered")
        EXPERIMENTS[name] = fn
        return fn

    return add


# --------------------------------------------------------------------------- building blocks
def build_model(arch: str, num_classes: int, seed: int) -> nn.Module:
    """The untrained model ``arch``, initialized from ``seed`` (same seed = same weights)."""
    from tickets.models import create_model

    torch.manual_seed(seed)
    return create_model(arch, num_classes=num_classes)


def _optimizer(preset: Preset) -> Callable[[Any], torch.optim.Optimizer]:
    def make(params: Any) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=preset.lr, momentum=preset.momentum, weight_decay=preset.weight_decay)

    return make


def find_ticket(ctx: Context, model: nn.Module, *, prac: bool | Any, name: str) -> Any:
    """Run ``tickets.prune`` with the preset's schedule; resumable from ``out/checkpoints/name``.

    Args:
        ctx: the experiment's context.
        model: the dense, untrained model (not modified: a copy is pruned).
        prac: True for PrAC IMP (a fresh :class:`tickets.PrACSampler`), False for full-data IMP
            (a :class:`torch.utils.data.RandomSampler`), or a sampler to use as is.
        name: checkpoint sub-folder, also used in progress bars.

    Returns the :class:`tickets.Ticket` of the last round, with the per-round ``history``.
    """
    import tickets

    preset, cfg = ctx.config.preset, ctx.config
    train = ctx.splits.train
    if prac is True:
        sampler = tickets.PrACSampler(train, seed=cfg.seed)
    elif prac is False:
        sampler = torch.utils.data.RandomSampler(train, generator=torch.Generator().manual_seed(cfg.seed))
    else:
        sampler = prac
    kwargs: dict[str, Any] = dict(
        rounds=preset.rounds,
        amount=preset.amount,
        epochs=preset.epochs,
        optimizer=_optimizer(preset),
        lr_schedule=dict(milestones=list(preset.milestones), gamma=preset.gamma),
        rewind_to=f"{preset.rewind_epoch}ep",
        batch_size=preset.batch_size,
        eval_data=ctx.splits.val,
        test_data=ctx.splits.test,
        device=cfg.device,
        checkpoint_dir=ctx.out / "checkpoints" / name,
        seed=cfg.seed,
        quiet=cfg.quiet,
    )
    return tickets.prune(copy.deepcopy(model), sampler, **kwargs)


def measure_ticket(ctx: Context, model: nn.Module, ticket: Any, *, name: str) -> dict[str, Any]:
    """Train ``ticket`` on the full training split with the full schedule from its rewind
    state and return its accuracies and cost; cached in ``out/checkpoints/name.json``."""
    cache = ctx.out / "checkpoints" / f"{name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    preset, cfg = ctx.config.preset, ctx.config
    started = time.time()
    result = ticket.retrain(
        copy.deepcopy(model),
        ctx.splits.train,
        epochs=preset.epochs,
        optimizer=_optimizer(preset),
        lr_schedule=dict(milestones=list(preset.milestones), gamma=preset.gamma),
        batch_size=preset.batch_size,
        eval_data=ctx.splits.val,
        test_data=ctx.splits.test,
        device=cfg.device,
        seed=cfg.seed,
        quiet=cfg.quiet,
    )
    record = dict(result)
    record.setdefault("wall_time_s", round(time.time() - started, 1))
    write_json(record, cache)
    return record


def _round(history: dict[str, Any]) -> dict[str, Any]:
    """The fields of one ``ticket.history`` entry this harness reports, under stable names."""
    return {
        "round": history["round"],
        "sparsity": history["sparsity"],
        "set_size": history.get("set_size"),
        "set_fraction": history.get("set_fraction", 1.0),
        "epochs": history.get("epochs"),
        "steps": history["steps"],
        "samples": history.get("samples"),
        "val_acc": history.get("val_acc"),
        "test_acc": history.get("test_acc"),
        "wall_time_s": history.get("wall_time_s"),
    }


def _pct(x: float | None) -> float | None:
    return None if x is None else 100.0 * x


# --------------------------------------------------------------------------- imp-vs-prac
def compare_rows(full: list[dict[str, Any]], prac: list[dict[str, Any]], measured: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
    """Per-round comparison rows: accuracy of both tickets, PrAC set, steps, savings.

    Savings follow the PrAC issue: 1 - (PrAC IMP steps) / (full IMP steps), cumulative over
    rounds 0..k, round 0 included in both; retraining used only to measure PrAC tickets is
    excluded (reported in its own column).
    """
    rows = []
    cum_full = cum_prac = 0
    for f, p in zip(full, prac):
        k = f["round"]
        cum_full += f["steps"]
        cum_prac += p["steps"]
        m = measured.get(k)
        rows.append({
            "round": k,
            "sparsity": f["sparsity"],
            "full_test_acc": f["test_acc"],
            "prac_test_acc": f["test_acc"] if k == 0 else (m or {}).get("test_acc"),
            "prac_round_test_acc": p["test_acc"],
            "prac_set_size": p["set_size"],
            "prac_set_fraction": p["set_fraction"],
            "prac_epochs": p["epochs"],
            "full_steps": f["steps"],
            "prac_steps": p["steps"],
            "cum_full_steps": cum_full,
            "cum_prac_steps": cum_prac,
            "saved": 1.0 - cum_prac / cum_full if cum_full else None,
            "full_wall_s": f["wall_time_s"],
            "prac_wall_s": p["wall_time_s"],
            "measure_steps": (m or {}).get("steps"),
            "measure_wall_s": (m or {}).get("wall_time_s"),
        })
    return rows


def comparison_markdown(rows: list[dict[str, Any]], ctx: Context, title: str) -> str:
    """``table.md`` for imp-vs-prac: the per-sparsity table, totals and reading notes."""
    cfg, preset = ctx.config, ctx.config.preset
    n = len(ctx.splits.train)
    table = markdown_table(
        ["round", "sparsity", "full IMP acc", "PrAC acc", "diff", "PrAC set (% of split)", "epochs",
         "steps full", "steps PrAC", "saved (cum.)", "wall full / PrAC (s)"],
        [[r["round"], fmt(100 * r["sparsity"], 2, "%"), fmt(_pct(r["full_test_acc"])), fmt(_pct(r["prac_test_acc"])),
          fmt(None if r["prac_test_acc"] is None else 100 * (r["prac_test_acc"] - r["full_test_acc"]), 2),
          f"{fmt(r['prac_set_size'])} ({fmt(_pct(r['prac_set_fraction']), 1)}%)", fmt(r["prac_epochs"]),
          r["full_steps"], r["prac_steps"], fmt(_pct(r["saved"]), 1, "%"),
          f"{fmt(r['full_wall_s'], 0)} / {fmt(r['prac_wall_s'], 0)}"] for r in rows],
    )
    last = rows[-1]
    measure = sum(r["measure_steps"] or 0 for r in rows)
    return (
        f"# {title}\n\n"
        f"`{cfg.dataset}`, `{cfg.arch}`, preset `{preset.name}` ({preset.note}); {n:,} training images, "
        f"{len(ctx.splits.val) if ctx.splits.val is not None else 0:,} validation, {len(ctx.splits.test):,} test; seed {cfg.seed}.\n\n"
        f"Accuracy: test accuracy (%) at the best-validation epoch. Full IMP ticket: its own round "
        f"(trained on the full split from the rewind point). PrAC ticket: the PrAC round's mask, "
        f"trained the same way (full split, full schedule, from its rewind point). Steps: optimizer "
        f"steps of the finding round; saved = 1 - PrAC/full steps over rounds 0..k (round 0 in both).\n\n"
        + table
        + f"\nTotal steps to the last ticket: full IMP {last['cum_full_steps']:,}, PrAC IMP {last['cum_prac_steps']:,} "
        f"({fmt(_pct(last['saved']), 1)}% saved). Measuring the PrAC tickets took {measure:,} more steps "
        f"(excluded from both, as the PrAC issue defines savings).\n"
    )


@register_experiment("imp-vs-prac")
def imp_vs_prac(ctx: Context) -> dict[str, Any]:
    """Full-data IMP and PrAC IMP from the same initialization and seed, ticket by ticket."""
    cfg = ctx.config
    model = build_model(cfg.arch, ctx.splits.num_classes, cfg.seed)
    ctx.log("full-data IMP")
    full_ticket = find_ticket(ctx, model, prac=False, name="full")
    ctx.log("PrAC IMP")
    prac_ticket = find_ticket(ctx, model, prac=True, name="prac")
    full = [_round(h) for h in full_ticket.history]
    prac = [_round(h) for h in prac_ticket.history]
    measured: dict[int, dict[str, Any]] = {}
    for k, ticket_k in enumerate(_round_tickets(ctx, prac_ticket, "prac")):
        if k == 0:
            continue
        ctx.log(f"measuring the PrAC ticket of round {k} (sparsity {100 * prac[k]['sparsity']:.2f}%) on the full split")
        measured[k] = measure_ticket(ctx, model, ticket_k, name=f"measure_prac_round{k}")
    rows = compare_rows(full, prac, measured)
    title = f"Full-data IMP vs PrAC IMP: {cfg.dataset}, {cfg.arch}, preset {cfg.preset.name}"
    plots = _comparison_plots(ctx, rows, title)
    markdown = comparison_markdown(rows, ctx, title)
    last = rows[-1]
    worst = min((r["prac_test_acc"] - r["full_test_acc"] for r in rows[1:] if r["prac_test_acc"] is not None), default=None)
    summary = (
        f"{title}\n{markdown.split(chr(10) + chr(10), 3)[-1]}\n"
        f"PrAC tickets vs full IMP tickets: worst difference {fmt(None if worst is None else 100 * worst)} points; "
        f"training steps saved {fmt(_pct(last['saved']), 1)}%. Outputs in {ctx.out}."
    )
    return {
        "rows": rows,
        "full_history": full_ticket.history,
        "prac_history": prac_ticket.history,
        "measured": {str(k): v for k, v in measured.items()},
        "plots": plots,
        "markdown": markdown,
        "summary": summary,
    }


def _round_tickets(ctx: Context, final: Any, name: str) -> list[Any]:
    """The ticket of every round of a search (round k's masks and rewind state)."""
    import tickets

    folder = ctx.out / "checkpoints" / name
    found = []
    for k in range(len(final.history)):
        path = folder / f"round_{k}.ticket"
        found.append(tickets.Ticket.load(path) if path.exists() else None)
    return found


def _comparison_plots(ctx: Context, rows: list[dict[str, Any]], title: str) -> list[str]:
    xs = [100 * r["sparsity"] for r in rows]
    acc = plot_accuracy(
        {"full-data IMP": (xs, [_pct(r["full_test_acc"]) for r in rows]),
         "PrAC IMP (retrained on full data)": (xs, [_pct(r["prac_test_acc"]) for r in rows])},
        ctx.out / "accuracy.png", title=title,
    )
    cost = plot_prac_cost(
        [r["round"] for r in rows], [r["prac_set_fraction"] for r in rows],
        {"full-data IMP": [r["full_steps"] for r in rows], "PrAC IMP": [r["prac_steps"] for r in rows]},
        ctx.out / "prac_cost.png", title=title,
    )
    return [acc.name, cost.name]


# --------------------------------------------------------------------------- transfer
@register_experiment("transfer")
def transfer(ctx: Context) -> dict[str, Any]:
    """A PrAC set found with ``--transfer-from`` reused to find tickets for ``--arch``."""
    raise NotImplementedError
