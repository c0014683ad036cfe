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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.reproduce.config import Preset, RunConfig
from benchmarks.reproduce.report import fmt, markdown_table, plot_accuracy, plot_prac_cost, write_json
from tickets.data.datasets import DataSplits

__all__ = ["Context", "EXPERIMENTS", "register_experiment", "find_ticket", "measure_ticket", "build_model", "compare",
           "compare_rows", "full_data_sampler", "imp_vs_prac", "schedule_of"]


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


def schedule_of(preset: Preset) -> dict[str, Any]:
    """The preset's training schedule as a :class:`tickets.training.Schedule` mapping
    (SGD with momentum and weight decay; step decay at the milestones, or cosine; warm-up)."""
    return {
        "epochs": preset.epochs, "batch_size": preset.batch_size, "lr": preset.lr, "momentum": preset.momentum,
        "weight_decay": preset.weight_decay, "milestones": tuple(float(m) for m in preset.milestones),
        "gamma": preset.gamma, "kind": preset.lr_schedule, "warmup_epochs": preset.warmup_epochs,
        "nesterov": preset.nesterov,
    }


def full_data_sampler(ctx: Context) -> Any:
    """The sampler of full-data IMP: every training sample, every round.

    A replayed :class:`tickets.PrACSampler` with one set (all indices) draws the same data
    order as PrAC IMP's sampler for the same seed, so round 0 (dense training on all the
    data) is the same computation in both searches, and the comparison starts from the same
    dense network and rewind point; ``tickets.prune`` treats it as vanilla IMP (no statistics).
    """
    from tickets.prac.sampler import PrACSampler

    train = ctx.splits.train
    return PrACSampler.replay(train, [torch.arange(len(train))], seed=ctx.config.seed)


def find_ticket(ctx: Context, model: nn.Module, sampler: Any, *, name: str, early_bird: bool = False,
                start_from: str | Path | None = None, **options: Any) -> Any:
    """Run ``tickets.prune`` with the preset's schedule; resumable from ``out/checkpoints/name``.

    Args:
        ctx: the experiment's context.
        model: the dense, untrained model (not modified: a copy is pruned).
        sampler: over ``ctx.splits.train``: an adaptive :class:`tickets.PrACSampler` for PrAC
            IMP, :func:`full_data_sampler` for full-data IMP, a replayed one for transfer.
        name: checkpoint sub-folder (it also holds ``round_<k>.ticket`` and ``prac_sets.pt``).
        early_bird: stop rounds >= 1 early when the mask stops moving.
        start_from: the checkpoint folder of another search (same model, data, seed and
            schedule) whose finished round 0 this search takes instead of training its own.
        options: more keywords of ``tickets.prune`` (``round_steps``, ``selection``,
            ``min_step_fraction``...), overriding the preset's.

    Returns the :class:`tickets.Ticket` of the last round, with the per-round ``history``.
    """
    from tickets.search.options import EarlyBird
    from tickets.search.driver import prune
    from tickets.pruning.parameters import prunable_parameters

    preset, cfg = ctx.config.preset, ctx.config
    pruned = copy.deepcopy(model)
    keywords: dict[str, Any] = {"min_step_fraction": preset.min_step_fraction, **options}
    if start_from is not None:
        keywords["start_from"] = start_from
    return prune(
        pruned, sampler, rounds=preset.rounds, amount=preset.amount, schedule=schedule_of(preset),
        rewind_to=f"{preset.rewind_epoch}ep" if preset.rewind_epoch else 0,
        train_eval_data=ctx.splits.train_eval, eval_data=ctx.splits.val, test_data=ctx.splits.test,
        device=cfg.device, checkpoint_dir=ctx.out / "checkpoints" / name,
        parameters=prunable_parameters(pruned, keep_dense=preset.keep_dense, kinds=preset.kinds),
        early_bird=EarlyBird(window=preset.early_bird_window) if early_bird else False, num_workers=preset.num_workers,
        quiet=cfg.quiet, seed=cfg.seed,
        meta={"arch": cfg.transfer_arch if name == "source" else cfg.arch, "dataset": cfg.dataset, "preset": preset.name},
        **keywords,
    )


def measure_ticket(ctx: Context, model: nn.Module, ticket: Any, *, name: str) -> dict[str, Any]:
    """Train ``ticket`` on the full training split with the full schedule from its rewind
    point (``tickets.imp.retrain``) and return the result's numbers; cached in
    ``out/checkpoints/name.json`` so that reruns skip it."""
    from tickets.ticket.ticket import retrain

    cache = ctx.out / "checkpoints" / f"{name}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    preset, cfg = ctx.config.preset, ctx.config
    result = retrain(
        ticket, copy.deepcopy(model), ctx.splits.train, schedule_of(preset), seed=cfg.seed, device=cfg.device,
        eval_data=ctx.splits.val, test_data=ctx.splits.test, quiet=cfg.quiet, num_workers=preset.num_workers,
    )
    record = {k: v for k, v in dict(result).items() if k != "log"}
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


def comparison_markdown(rows: list[dict[str, Any]], ctx: Context, title: str, arch: str) -> str:
    """``table.md`` for imp-vs-prac: the per-sparsity table, totals and reading notes."""
    cfg, preset = ctx.config, ctx.config.preset
    n = len(ctx.splits.train)
    table = markdown_table(
        ["round", "sparsity", "full IMP acc", "PrAC acc", "diff", "PrAC round acc", "PrAC set (% of split)", "epochs",
         "steps full", "steps PrAC", "saved (cum.)", "wall full / PrAC (s)"],
        [[r["round"], fmt(100 * r["sparsity"], 2, "%"), fmt(_pct(r["full_test_acc"])), fmt(_pct(r["prac_test_acc"])),
          fmt(None if r["prac_test_acc"] is None else 100 * (r["prac_test_acc"] - r["full_test_acc"]), 2),
          fmt(_pct(r["prac_round_test_acc"])),
          f"{fmt(r['prac_set_size'])} ({fmt(_pct(r['prac_set_fraction']), 1)}%)", fmt(r["prac_epochs"]),
          r["full_steps"], r["prac_steps"], fmt(_pct(r["saved"]), 1, "%"),
          f"{fmt(r['full_wall_s'], 0)} / {fmt(r['prac_wall_s'], 0)}"] for r in rows],
    )
    last = rows[-1]
    measure = sum(r["measure_steps"] or 0 for r in rows)
    return (
        f"# {title}\n\n"
        f"`{cfg.data_label}`, `{arch}`, preset `{preset.name}` ({preset.note}); {n:,} training images, "
        f"{len(ctx.splits.val) if ctx.splits.val is not None else 0:,} validation, {len(ctx.splits.test):,} test; seed {cfg.seed}.\n\n"
        f"Accuracy: test accuracy (%) at the best-validation epoch. Full IMP ticket: its own round "
        f"(trained on the full split from the rewind point). PrAC ticket: the PrAC round's mask, "
        f"trained the same way (full split, full schedule, from its rewind point). PrAC round acc: "
        f"the PrAC round's own network (trained on the PrAC set with the reduced schedule). Steps: optimizer "
        f"steps of the finding round; saved = 1 - PrAC/full steps over rounds 0..k (round 0 in both).\n\n"
        + table
        + f"\nTotal steps to the last ticket: full IMP {last['cum_full_steps']:,}, PrAC IMP {last['cum_prac_steps']:,} "
        f"({fmt(_pct(last['saved']), 1)}% saved). Measuring the PrAC tickets took {measure:,} more steps "
        f"(excluded from both, as the PrAC issue defines savings).\n"
    )


def compare(ctx: Context, arch: str, finder: tuple[str, Any], *, early_bird: bool, title: str) -> dict[str, Any]:
    """Full-data IMP of ``arch`` against another finder (``(name, sampler)``) from the same
    initialization and seed; measures the other finder's tickets on the full data."""
    cfg = ctx.config
    model = build_model(arch, ctx.splits.num_classes, cfg.seed)
    ctx.log(f"full-data IMP ({arch})")
    full_ticket = find_ticket(ctx, model, full_data_sampler(ctx), name="full")
    name, sampler = finder
    ctx.log(f"{name} IMP ({arch})")
    other_ticket = find_ticket(ctx, model, sampler, name=name, early_bird=early_bird)
    full = [_round(h) for h in full_ticket.history]
    other = [_round(h) for h in other_ticket.history]
    measured: dict[int, dict[str, Any]] = {}
    tickets_k = _round_tickets(ctx, name, len(other))
    for k in ctx.config.rounds_to_measure(len(other)):
        ticket_k = tickets_k[k]
        ctx.log(f"measuring the {name} ticket of round {k} (sparsity {100 * other[k]['sparsity']:.2f}%) on the full split")
        measured[k] = measure_ticket(ctx, model, ticket_k, name=f"measure_{name}_round{k}")
    rows = compare_rows(full, other, measured)
    plots = _comparison_plots(ctx, rows, title)
    markdown = comparison_markdown(rows, ctx, title, arch)
    last = rows[-1]
    gaps = [r["prac_test_acc"] - r["full_test_acc"] for r in rows[1:] if r["prac_test_acc"] is not None]
    worst = min(gaps, default=None)
    summary = (
        f"{markdown}\nPrAC tickets vs full-IMP tickets: worst difference {fmt(None if worst is None else 100 * worst)} "
        f"points over rounds 1..{len(rows) - 1}; training steps saved {fmt(_pct(last['saved']), 1)}%. Outputs in {ctx.out}."
    )
    return {
        "rows": rows,
        "full_history": full_ticket.history,
        "prac_history": other_ticket.history,
        "measured": {str(k): v for k, v in measured.items()},
        "worst_accuracy_gap": worst,
        "saved": last["saved"],
        "plots": plots,
        "markdown": markdown,
        "summary": summary,
    }


@register_experiment("imp-vs-prac")
def imp_vs_prac(ctx: Context) -> dict[str, Any]:
    """Full-data IMP and PrAC IMP from the same initialization and seed, ticket by ticket."""
    from tickets.prac.sampler import PrACSampler

    cfg = ctx.config
    sampler = PrACSampler(ctx.splits.train, seed=cfg.seed)
    title = f"Full-data IMP vs PrAC IMP: {cfg.data_label}, {cfg.arch}, preset {cfg.preset.name}"
    name = "prac-early-bird" if cfg.preset.early_bird else "prac"
    if cfg.preset.early_bird:
        title += " (early-bird)"
    return compare(ctx, cfg.arch, (name, sampler), early_bird=cfg.preset.early_bird, title=title)


def _round_tickets(ctx: Context, name: str, rounds: int) -> list[Any]:
    """The ticket of every round of the search saved in ``checkpoints/name``."""
    from tickets import Ticket

    folder = ctx.out / "checkpoints" / name
    return [Ticket.load(folder / f"round_{k}.ticket") for k in range(rounds)]


def _comparison_plots(ctx: Context, rows: list[dict[str, Any]], title: str) -> list[str]:
    xs = [100 * r["sparsity"] for r in rows]
    acc = plot_accuracy(
        {"full-data IMP": (xs, [_pct(r["full_test_acc"]) for r in rows]),
         "PrAC IMP (retrained on full data)": (xs, [_pct(r["prac_test_acc"]) for r in rows])},
        ctx.out / f"accuracy{ctx.config.suffix}.png", title=title,
    )
    cost = plot_prac_cost(
        [r["round"] for r in rows], [r["prac_set_fraction"] for r in rows],
        {"full-data IMP": [r["full_steps"] for r in rows], "PrAC IMP": [r["prac_steps"] for r in rows]},
        ctx.out / f"prac_cost{ctx.config.suffix}.png", title=title,
    )
    return [acc.name, cost.name]


