"""Between two rounds of a search: starting and closing a round.

:func:`start_round` records what a round starts from. After a round's training (the engine's or an own loop's), :func:`close_round` records the
round's history entry, picks the next PrAC set (:func:`select_next`), saves the round's
ticket and round 0's record, prunes and rewinds for the next round (:func:`prune_and_rewind`),
checks that the processes agree and checkpoints. :func:`own_loop_measures` gathers an own
loop's numbers of a round in the engine's form.

These functions work on a search through :class:`SearchState`, the part of
:class:`tickets.search.ticket_search.TicketSearch` they use (that module imports this one).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol
import torch
from torch.utils.data import DataLoader, Dataset
from tickets import parallel as _dist
import tickets.pruning.methods as methods
from tickets.pruning.rewind import enforce_masks, rewind as rewind_weights, snapshot
from tickets.data.sampling import targets_of
from tickets.prac.rules import Selection
from tickets.prac.stats import EmptySelectionError, SampleStats
from tickets.prac.scores import ScoreContext, ScoreRecord
from tickets.prac.score_rules import Rule, carries, choose_next, needs_pass
from tickets.training.evaluation import predict
from tickets.training.schedule import CompressedSchedule, Schedule
from tickets.search.checks import _current_masks, _round_schedule, _sparsity, _state
from tickets.search.identity import _origin
from tickets.search.options import PrACOptions, Runtime
from tickets.search.round import Round, RoundOwner

__all__: list[str] = []


log = logging.getLogger("tickets")


class SearchState(RoundOwner, Protocol):
    """What closing a round (and starting a search from a folder) uses of the search, beyond
    what a :class:`Round` uses."""

    rounds: int
    adaptive: bool
    rewind_step: int
    rewind_epochs: float
    schedule: Schedule
    prac: PrACOptions
    runtime: Runtime
    rule: Rule
    precision: str
    channels_last: bool
    train_data: Dataset
    train_eval_data: Dataset | DataLoader | None
    optimizer_record: dict[str, Any] | None  # the engine's optimizer (None: an own loop's, per round)
    meta: dict[str, Any]
    _open: Round | None

    def _device(self) -> torch.device: ...


def start_round(search: SearchState, k: int) -> None:
    """Begin round ``k`` of the run (its phase is "start"): the sampler's round, what round 0
    starts from (for searches that start from it), the round's starting weights (round 0 with
    ``rewind_to=0``: also the rewind point), its masks and set; round 0 is checkpointed.

    Rounds >= 1 are not: the folder already holds their start (saved by the previous round's
    end, or by an extension on resume), and a resume from it redoes exactly this."""
    journal, n = search._journal, search.num_samples
    run = journal.run
    if search.is_prac:
        search.sampler.begin_round(k)  # type: ignore[attr-defined]
    if k == 0:
        run.origin = _origin(search.model, search.sampler, n)
    run.round_start = snapshot(search.model)
    if k == 0 and search.rewind_step == 0:
        run.rewind_state = run.round_start
    run.masks = _current_masks(search.parameters, search.names) if k > 0 else None
    run.model = _state(search.model)
    run.phase = "train"
    if journal.directory is not None:
        run.sets[k] = search.sampler.indices if search.is_prac else torch.arange(n)  # type: ignore[attr-defined]
        journal.save_sets(fsync=False)
    if k == 0:
        journal.checkpoint()


def close_round(search: SearchState, rnd: Round, measured: Mapping[str, Any]) -> dict[str, Any]:
    """Everything after a round's training, for the engine and own loops alike: returns the
    round's history entry (``measured``: the round's numbers, see :func:`own_loop_measures`)."""
    after_started = time.perf_counter()
    journal = search._journal
    run, n, k = journal.run, search.num_samples, rnd.index
    round_masks = _current_masks(search.parameters, search.names)
    entry: dict[str, Any] = {
        "round": k,
        "sparsity": _sparsity(round_masks),
        "set_size": rnd.set_size,
        "set_fraction": rnd.fraction,
        "epochs": rnd.schedule.epochs,
        **{key: v for key, v in measured.items() if key != "wall_time_s"},
    }
    trained_with = rnd._optimizer_record or search.optimizer_record  # own loop: the attached optimizer
    if trained_with is not None:
        entry["optimizer"] = trained_with
    if rnd.floored:
        entry["step_floor"] = float(search.prac.min_step_fraction)
    if isinstance(rnd.schedule, CompressedSchedule):  # a step budget: what was compressed into the round's steps
        entry["round_steps"] = rnd.schedule.steps
        entry["compressed_from"] = rnd.schedule.compressed_from()
    if search.adaptive and rnd.stats is not None:
        entry.update({f"stats_{key}": v for key, v in rnd.stats.summary().items()})
        if k + 1 < search.rounds:
            entry["next_set"] = select_next(search, k, rnd.stats)
    prev = run.history[-1] if run.history else {"total_steps": 0, "total_samples": 0, "total_wall_time_s": 0.0}
    entry["wall_time_s"] = round(float(measured["wall_time_s"]) + (time.perf_counter() - after_started) + run.extra_wall, 3)
    entry["total_steps"] = prev["total_steps"] + entry["steps"]
    entry["total_samples"] = prev["total_samples"] + entry["samples"]
    entry["total_wall_time_s"] = round(prev["total_wall_time_s"] + entry["wall_time_s"], 3)
    run.history.append(entry)
    journal.save_round_ticket(round_masks, k)
    keep_stats = rnd.stats.state_dict() if search.adaptive and rnd.stats is not None else None
    if k == 0:
        journal.save_round_0(entry, keep_stats, search.model, n)
    run.extra_wall = 0.0
    if k + 1 < search.rounds:
        pruning_started = time.perf_counter()
        prune_and_rewind(search, k)
        run.stats = keep_stats if carries(search.rule) else None  # scores that carry over (EL2N) seed the next record
        run.extra_wall = time.perf_counter() - pruning_started  # counted in the next round's wall time
    else:
        run.phase = "done"
        run.stats = keep_stats  # a later run with more rounds picks the next set from them
    run.masks = _current_masks(search.parameters, search.names)
    run.model = _state(search.model)
    if search.world_size > 1:  # one all-reduce: the ranks agree on everything the next round starts from
        _dist.check_identical({
            "masks": _dist.mask_checksum(run.masks),
            "PrAC set": float(_dist.mask_checksum({"set": _set_mask(search)})),
            "schedule position": float(entry["end_step"]),
            "steps": float(entry["steps"]),
            "weights": _dist._weight_checksum(search.model),
        }, search._device(), where=f"after round {k}")
    journal.metrics({"kind": "round", **entry})  # before the checkpoint, which records the file's length
    journal.checkpoint()
    if run.phase == "done" and journal.writer:
        journal.finish()  # the final ticket exists before callbacks run
    rnd.closed = True
    search._open = None
    opt = rnd._optimizer() if rnd._optimizer is not None else None
    if opt is not None:
        search._used_optimizers.add(opt)
    journal.note(_summary(entry, n))
    return entry


def own_loop_measures(rnd: Round, device: torch.device, *, val_acc: float | None, val_loss: float | None,
                      test_acc: float | None, test_loss: float | None, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """An own loop's numbers of round ``rnd`` as the engine gives them: keeps the round's
    best-validation weights (if ``val_acc`` went to :meth:`Round.end_epoch`), sums the samples
    of all processes (on ``device``), and takes the validation numbers of the kept weights."""
    kept = rnd.restore_best()
    best = rnd._best if kept is not None else None
    last = rnd.log[-1] if rnd.log else {}
    samples = int(_dist.all_reduce_sum(torch.tensor([float(rnd.samples)], dtype=torch.float64), device)[0])
    measured = {
        "steps": rnd.steps, "samples": samples, "start_step": rnd.start_step, "end_step": rnd.step,
        "epochs_trained": round(rnd.steps / rnd.steps_per_epoch, 4),
        "val_acc": best[0] if best else (float(val_acc) if val_acc is not None else last.get("val_acc")),
        "val_loss": best[1] if best else (float(val_loss) if val_loss is not None else last.get("val_loss")),
        "test_acc": float(test_acc) if test_acc is not None else None,
        "test_loss": float(test_loss) if test_loss is not None else None,
        "best_epoch": kept if kept is not None else (last.get("epoch")),
        "train_acc": last.get("train_acc"),
        "early_stopped": rnd.stopped,
        "precision": None, "channels_last": None,
        "wall_time_s": time.perf_counter() - rnd._started,
    }
    if metrics:
        measured["metrics"] = json.loads(json.dumps(metrics, default=float))
    return measured


def select_next(search: SearchState, k: int, stats: SampleStats | ScoreRecord) -> dict[str, Any]:
    """Pick round ``k + 1``'s PrAC set with the search's rule from round ``k``'s record and, when
    the rule's scores need it, the predictions of the model as it is now (round ``k``'s kept
    weights) on the whole split; returns the selection's info."""
    run, rule, sampler = search._journal.run, search.rule, search.sampler
    predictions, labels_wanted = None, getattr(rule, "needs_targets", False)
    if labels_wanted and run.targets is None and not needs_pass(rule):
        run.targets = targets_of(search.train_data)  # the labels without a pass, where the data set has them
    if needs_pass(rule) or (labels_wanted and run.targets is None):
        data = search.train_eval_data if search.train_eval_data is not None else search.train_data
        predictions, targets = _predictions(search, data)
        if k == 0:
            run.dense_predictions, run.targets = predictions, targets
        elif run.dense_predictions is None and needs_pass(rule):
            raise RuntimeError(f"round {k}: the dense network's predictions of round 0 are missing from the run")
        elif run.targets is None:
            run.targets = targets
    context = ScoreContext(
        round=k, num_samples=search.num_samples, forgetting=stats.scores(), predictions=predictions,
        dense_predictions=run.dense_predictions if k > 0 else None, targets=run.targets,
        current=sampler.indices, step_fraction=_step_fraction(search, k + 1),  # type: ignore[attr-defined]
    )
    chosen = choose_next(rule, stats, context)
    if chosen.info["fallback"]:
        log.warning("round %d: the PrAC selection was empty; keeping the current set of %d samples", k, len(sampler))  # type: ignore[arg-type]
    elif len(chosen.indices) <= search.world_size:
        chosen = _too_small(search, k, chosen)
    sampler.update(chosen.indices, info=chosen.info)  # type: ignore[attr-defined]
    return dict(chosen.info)


def _too_small(search: SearchState, k: int, chosen: Selection) -> Selection:
    """A selection too small to train (fewer than 2 samples per process: no batching keeps a
    train-mode batch of one out of it, see :mod:`tickets.data.batching`) is treated as an empty
    one: the current set is kept (``"fallback": "kept (too small)"`` in the history), or under
    ``empty="error"`` the search stops with the reason, before any of the round is trained."""
    size, current = len(chosen.indices), search.sampler.indices  # type: ignore[attr-defined]
    if getattr(search.rule, "empty", "keep") == "error":
        raise EmptySelectionError(
            f"round {k}'s selection kept {size} sample(s), too few to train in batches of two or more on "
            f"{search.world_size} process(es); use SelectionRule(empty='keep') to keep the current set, "
            f"min_per_class=, or a top_fraction rule"
        )
    log.warning("round %d: the PrAC selection kept %d sample(s), too few to train; keeping the current set of %d", k,
                size, len(current))
    info = {**chosen.info, "fallback": "kept (too small)", "selected": size, "size": len(current),
            "fraction": len(current) / search.num_samples}
    return Selection(current.cpu().long().clone(), info)


def _step_fraction(search: SearchState, k: int) -> Callable[[int], float]:
    """``fn(set_size)``: the optimizer steps round ``k`` trains on a set of that size (its
    schedule as :meth:`TicketSearch.begin_round` makes it: scaled, floored, or a
    ``round_steps`` budget), over those of a full round (every sample, the unscaled schedule,
    from the rewind point)."""
    n, w, prac = search.num_samples, search.world_size, search.prac

    def steps(size: int, scale: bool, budget: int | None) -> int:
        sched, start, _ = _round_schedule(search.schedule, n, size, k, search.rewind_epochs, scale=scale,
                                          min_step_fraction=float(prac.min_step_fraction), world_size=w, budget=budget)
        return sched.total_steps(size, w) - start

    def fraction(size: int) -> float:
        return steps(size, prac.scale_schedule and search.is_prac, prac.budget(k)) / max(1, steps(n, False, None))

    return fraction


def prune_and_rewind(search: SearchState, k: int) -> None:
    """After round ``k``: prune ``amount`` of the survivors, rewind, and make round ``k + 1`` next."""
    run = search._journal.run
    methods.global_magnitude_prune(search.parameters, float(search.pruning.amount))
    if search.pruning.rewind == "weights":
        rewind_weights(search.model, run.rewind_state)  # type: ignore[arg-type]
    else:
        enforce_masks(search.model)
    run.round, run.phase = k + 1, "start"


def _predictions(search: SearchState, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions on the whole training split; under torch.distributed each rank predicts a
    slice and the slices are gathered, so every rank has them all."""
    kwargs = dict(batch_size=max(256, search.schedule.batch_size), num_workers=search.runtime.num_workers,
                  device=search._device(), precision=search.precision, channels_last=search.channels_last)
    if search.world_size > 1 and isinstance(data, Dataset):
        part, _ = _dist.shard_of(data)
        if len(part):  # type: ignore[arg-type]
            preds, targets = predict(search.model, part, **kwargs)  # type: ignore[arg-type]
        else:
            preds = targets = torch.empty(0, dtype=torch.long)
        total = len(data)  # type: ignore[arg-type]
        return _dist.gather_predictions(preds, total), _dist.gather_predictions(targets, total)
    return predict(search.model, data, **kwargs)  # type: ignore[arg-type]


def _set_mask(search: SearchState) -> torch.Tensor:
    """The current set as a membership mask over the training set."""
    member = torch.zeros(search.num_samples, dtype=torch.bool)
    member[search.sampler.indices if search.is_prac else torch.arange(search.num_samples)] = True  # type: ignore[attr-defined]
    return member


def _summary(entry: Mapping[str, Any], n: int) -> str:
    """The progress line of a finished round."""
    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    return (
        f"round {entry['round']}: sparsity {pct(entry['sparsity'])}, set {entry['set_size']:,}/{n:,} "
        f"({pct(entry['set_fraction'])}), {entry['epochs']} epoch{'s' if entry['epochs'] != 1 else ''}, {entry['steps']:,} step{'s' if entry['steps'] != 1 else ''} trained "
        f"(schedule step {entry['start_step']:,} to {entry['end_step']:,}; search total {entry['total_steps']:,}), "
        f"val {pct(entry['val_acc'])}, test {pct(entry['test_acc'])}, "
        f"{entry['wall_time_s']:.1f}s"
    )
