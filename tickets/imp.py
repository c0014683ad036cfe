"""Iterative magnitude pruning with rewinding, on the full data or on PrAC sets.

:func:`prune` is one loop for both sides of the PrAC paper's comparison:

* with a :class:`tickets.PrACSampler`, each round trains on the current PrAC set with the
  schedule scaled by ``r = |PrAC| / N``, records per-sample forgetting statistics in the
  training step, and picks the next set (hard to memorize ∪ dense/pruned disagreement);
* with a plain sampler over the training set (``RandomSampler(train_set)``) it is vanilla
  IMP on the full data, through the same code.

A round ``k`` trains the network at sparsity ``1 - (1 - amount) ** k``; round 0 trains the
dense network on the full data and provides the rewind point. Between rounds the surviving
weights are pruned by global magnitude (best-validation weights, or the early-bird stop's)
and rewound (weights and schedule, or only the learning-rate schedule).

Every round's accounting is in ``ticket.history``; :func:`iteration_savings` compares two
runs. :func:`retrain` measures a ticket on the full data. With ``checkpoint_dir`` the run
is saved after every round (and within rounds as ``checkpoint_every`` says) and rerunning
the same call resumes it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from tickets.search import (  # noqa: F401  (the 0.1 home of these names)
    EarlyBird, PrACOptions, Pruning, Round, RunInterrupted, Runtime, TicketSearch, _check_labelled, _time_ratio,
    load_prac_sets,
)
from tickets.ticket import Ticket
from tickets.training import LossFn, Schedule, Trainer, TrainResult, interactive, train

__all__ = ["prune", "retrain", "EarlyBird", "iteration_savings", "Savings", "load_prac_sets", "RunInterrupted"]

log = logging.getLogger("tickets")


# ---------------------------------------------------------------------- accounting
@dataclass(frozen=True)
class Savings:
    """Training iterations saved by PrAC IMP against full-data IMP (same rounds).

    Attributes:
        rows: per round: ``round``, ``steps_prac``, ``steps_full``, cumulative
            ``cum_prac``/``cum_full`` (rounds 0..k, round 0 included in both) and ``saved``
            = ``1 - cum_prac / cum_full``.
        total_prac, total_full: optimizer steps of the two searches.
        saved: ``1 - total_prac / total_full``.
        retrain_steps: steps spent retraining tickets only to measure them (excluded from
            both totals; reported on its own), or None.
    """

    rows: tuple[dict[str, Any], ...]
    total_prac: int
    total_full: int
    saved: float
    retrain_steps: int | None = None

    def __str__(self) -> str:
        lines = [f"{'round':>5}  {'steps PrAC':>10}  {'steps full':>10}  {'saved (cum.)':>12}"]
        for r in self.rows:
            lines.append(f"{r['round']:>5}  {r['steps_prac']:>10,}  {r['steps_full']:>10,}  {r['saved']:>12.1%}")
        lines.append(f"total: PrAC {self.total_prac:,} vs full {self.total_full:,} steps: {self.saved:.1%} saved")
        if self.retrain_steps is not None:
            lines.append(f"retraining to measure tickets (excluded): {self.retrain_steps:,} steps")
        return "\n".join(lines)


def _history(value: Ticket | Sequence[Mapping[str, Any]], argument: str) -> list[Mapping[str, Any]]:
    history = value.history if isinstance(value, Ticket) else list(value)
    if not history or any("steps" not in h for h in history):
        raise ValueError(f"{argument} must be a Ticket from tickets.prune or its history (one dict with 'steps' per round)")
    return history


def iteration_savings(
    prac: Ticket | Sequence[Mapping[str, Any]],
    full: Ticket | Sequence[Mapping[str, Any]],
    *,
    retrain_steps: int | None = None,
) -> Savings:
    """Savings = ``1 - steps(PrAC IMP) / steps(full-data IMP)`` over the same rounds.

    Round 0 (dense training on the full data) counts in both; retraining used only to
    measure a ticket is excluded from both and echoed as ``retrain_steps``.

    Args:
        prac: the PrAC IMP ticket (or its ``history``).
        full: the full-data IMP ticket (or its ``history``).
        retrain_steps: optional steps of measurement retraining, reported separately.

    Raises:
        ValueError: histories of different lengths (compare the same number of rounds).
    """
    hp, hf = _history(prac, "prac"), _history(full, "full")
    if len(hp) != len(hf):
        raise ValueError(f"the two runs have {len(hp)} and {len(hf)} rounds; compare the same number of rounds")
    rows, cum_p, cum_f = [], 0, 0
    for p, f in zip(hp, hf):
        cum_p += int(p["steps"])
        cum_f += int(f["steps"])
        rows.append({
            "round": int(p.get("round", len(rows))),
            "steps_prac": int(p["steps"]),
            "steps_full": int(f["steps"]),
            "cum_prac": cum_p,
            "cum_full": cum_f,
            "saved": 1.0 - cum_p / cum_f if cum_f else 0.0,
        })
    return Savings(tuple(rows), cum_p, cum_f, 1.0 - cum_p / cum_f if cum_f else 0.0, retrain_steps)




# ---------------------------------------------------------------------- the engine
def prune(
    model: nn.Module,
    sampler: Sampler[int] | Dataset | None = None,
    *,
    rounds: int,
    schedule: Schedule | Mapping[str, Any] | None = None,
    pruning: Pruning | None = None,
    prac: PrACOptions | None = None,
    runtime: Runtime | None = None,
    train_data: Dataset | None = None,
    train_eval_data: Dataset | DataLoader | None = None,
    eval_data: Any = None,
    test_data: Any = None,
    checkpoint_dir: str | Path | None = None,
    loss_fn: LossFn | None = None,
    seed: int = 0,
    meta: Mapping[str, Any] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], Any] | None = None,
    on_round: Callable[[dict[str, Any]], Any] | None = None,
    start_from: str | Path | None = None,
    **options: Any,
) -> Ticket:
    """Find a lottery ticket of ``model`` by IMP, on PrAC sets or on the full data.

    Round 0 trains the dense network (on all samples) and keeps the rewind point; every later
    round prunes ``amount`` of the surviving weights by global magnitude, rewinds, and
    trains again. With a :class:`tickets.PrACSampler` each round trains on the current PrAC
    set with the schedule scaled by ``r = |PrAC| / N`` (``int(epochs * r)`` epochs,
    milestones, warm-up and the rewind point times ``r``) and the set is rebuilt after the
    round; with any other sampler over the training set (``RandomSampler(train_set)``) the
    same loop is vanilla IMP on the full data.

    This is a :class:`tickets.TicketSearch` driven by the library's engine; to keep your own
    training loop, drive the search yourself (``docs/own-loop.md``).

    Example::

        ticket = tickets.prune(model, PrACSampler(train_set), rounds=5,
                               schedule=Schedule(epochs=30, lr=0.1, milestones=(15, 25)),
                               pruning=Pruning(amount=0.2, rewind_to="3ep"),
                               eval_data=val_set, test_data=test_set, checkpoint_dir="runs/r18")
        # the same with loose keywords (every field of the option groups is one):
        ticket = tickets.prune(model, PrACSampler(train_set), rounds=5, epochs=30, rewind_to="3ep")

    Args:
        model: the dense, untrained model (any classifier: timm, torchvision, your own); it is
            pruned and trained in place and ends as the last round's trained, pruned model
            (torch's prune state: ``<name>_orig`` and ``<name>_mask``). It is not the ticket:
            ``ticket.apply(fresh_model)`` gives the ticket's masks and rewound weights.
        sampler: a :class:`PrACSampler` (PrAC IMP) or any sampler with a ``data_source``
            (vanilla IMP, e.g. ``RandomSampler(train_set)``); a ``Dataset``, or None with
            ``train_data``, means ``PrACSampler(train_data, seed=seed)``.
        rounds: trainings in all, round 0 included (>= 1); the last trains at sparsity
            ``1 - (1 - amount) ** (rounds - 1)``.
        schedule: a full round's :class:`Schedule` (or a mapping of its fields): epochs,
            batch size, learning rate and its schedule, optimizer factory.
        pruning: :class:`tickets.Pruning`: ``amount``, ``rewind_to``, ``rewind``,
            ``parameters``, ``early_bird``.
        prac: :class:`tickets.PrACOptions`: ``selection``, ``scale_schedule``,
            ``min_step_fraction``.
        runtime: :class:`tickets.Runtime`: ``device``, ``precision``, ``channels_last``,
            ``compile``, ``num_workers``, ``loader_kwargs``, ``quiet``, ``checkpoint_every``,
            ``keep_round_tickets``.
        train_data: the training set; default the sampler's ``data_source``. Given both, they
            must be the same object.
        train_eval_data: the training split *without augmentation*, same order, for the
            dense/pruned disagreement (default ``train_data`` as it is).
        eval_data: validation data: each round keeps its best-validation weights (used for
            pruning, disagreement and the ticket) and reports ``val_acc``.
        test_data: test data, measured once per round with the kept weights (``test_acc``).
        checkpoint_dir: folder for resumable checkpoints (``state.pt``: after every round,
            and within a round as ``checkpoint_every`` says), ``metrics.jsonl`` (a line per
            epoch and per round), ``round_<k>.ticket`` (unless ``keep_round_tickets=False``), ``prac_sets.pt``, ``round_0.pt`` (round 0's result, for
            ``start_from``) and the final ``ticket.ticket``; rerunning the same call with a
            fresh model resumes (a finished run returns its ticket at once). ``rounds`` may
            grow on a rerun: a finished search then goes on with the next round, exactly as
            a run with that many rounds from the start.
        loss_fn: ``(logits, targets) -> loss``; default cross-entropy.
        seed: seed of data order and augmentation (model initialization is the caller's).
        meta: extra JSON-able facts stored in the ticket's ``meta``.
        on_epoch: ``fn(round, epoch_entry)`` after each epoch that ends on an epoch boundary
            (and after its checkpoint, when ``checkpoint_every`` makes one due; raising
            :class:`RunInterrupted` in it saves the run at that epoch first, so a rerun
            repeats nothing): ``round`` the round's index, ``epoch_entry`` a
            dict with ``epoch`` (1-based, of the round's schedule), ``step``, ``lr``,
            ``train_loss``, ``train_acc``, ``seconds``, and ``val_acc``/``val_loss`` with
            ``eval_data``, ``early_stop`` when the early-bird test stopped the round.
        on_round: ``fn(history_entry)`` after each round's checkpoint; the entry is
            ``ticket.history[round]`` (keys under Returns). Raising in a callback (e.g.
            :class:`RunInterrupted`) stops the run; a rerun resumes it.
        start_from: the ``checkpoint_dir`` of another search whose round 0 has finished:
            this search takes that round 0 instead of training it, and goes on from round 1
            (bit for bit what it would have computed itself; see
            :class:`tickets.TicketSearch` and ``docs/prac.md``). Typical: run the PrAC search,
            then full-data IMP (``PrACSampler.replay(train_set, [range(len(train_set))],
            seed=...)``) with ``start_from=`` the PrAC search's folder.
        options: any field of :class:`Schedule` (``epochs``, ``lr``, ``batch_size``,
            ``optimizer``, ``lr_schedule``...), :class:`Pruning`, :class:`PrACOptions` or
            :class:`Runtime` as a keyword; it overrides the group's value (the 0.1 keywords
            all keep working). Defaults: ``amount=0.2``, ``rewind_to=0``, ``rewind="weights"``,
            ``min_step_fraction=0.1``, ``precision="auto"``.

    Returns:
        The :class:`Ticket` of the last round: its masks, the rewind state, ``history`` (one
        dict per round: ``round``, ``sparsity``, ``set_size``, ``set_fraction``, ``epochs``,
        ``epochs_trained``, ``start_step``, ``end_step``, ``steps``, ``samples``,
        ``val_acc``/``val_loss``, ``test_acc``/``test_loss``, ``best_epoch``, ``train_acc``,
        ``early_stopped``, ``precision``, ``channels_last``, ``wall_time_s``, cumulative
        ``total_steps``/``total_samples``/``total_wall_time_s``; PrAC rounds add ``stats_*``
        counts and ``next_set``, a floored round ``step_floor``) and
        ``meta`` (``rewind_epochs``, the schedule, ...), ready for :func:`retrain`.

    Raises:
        ValueError / TypeError, before any training: ``rounds < 1``, a bad ``amount``, an
        unknown keyword, a data set without labels, a sampler over another data set, a model
        whose output does not match the labels, a rewind point after round 0, a
        ``checkpoint_dir`` of another run (or ``rounds`` below the rounds it has begun), a
        model that is already pruned, a ``start_from`` folder without a finished round 0 or
        whose round 0 ran with other settings.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    _check_labelled(eval_data, "eval_data")
    _check_labelled(test_data, "test_data")
    search = TicketSearch(
        model, sampler, rounds=rounds, schedule=schedule, pruning=pruning, prac=prac, runtime=runtime,
        train_data=train_data, train_eval_data=train_eval_data, checkpoint_dir=checkpoint_dir, seed=seed,
        meta=meta, start_from=start_from, _engine=True, **options,
    )
    if search.done:
        return search.ticket
    rt = search.runtime
    from tqdm.auto import tqdm

    bar = tqdm(total=rounds, initial=search.round, desc="rounds", unit="round", disable=rt.quiet or not interactive(), dynamic_ncols=True)
    try:
        while not search.done:
            rnd = search.begin_round()

            def capture(step: int, m: nn.Module, rnd: Round = rnd) -> None:
                rnd.step = step
                search._stepped(rnd)

            def after_epoch(trainer: Trainer, entry: dict[str, Any], k: int = rnd.index) -> None:
                saved = search._engine_epoch(k, entry, trainer)  # metrics.jsonl; a checkpoint when due
                if on_epoch is not None:
                    try:
                        on_epoch(k, entry)
                    except RunInterrupted:
                        if not saved:  # a stop on purpose: the resume repeats nothing
                            search._engine_epoch(k, entry, trainer, force=True)
                        raise

            trainer = Trainer(
                model, search.train_data, rnd.schedule, seed=search.seed, start_step=rnd.start_step, device=search.device,
                eval_data=eval_data, test_data=test_data, sampler=search.sampler, stats=rnd.stats,
                num_workers=rt.num_workers, loader_kwargs=rt.loader_kwargs, precision=search.precision,
                channels_last=search.channels_last, loss_fn=loss_fn, compile=rt.compile, quiet=rt.quiet,
                desc=f"round {rnd.index}", round_index=rnd.index, on_step=capture, on_epoch=after_epoch,
                early_stop=rnd.early_bird,
            )
            if search._run.trainer is not None:
                trainer.load_state_dict(search._run.trainer)
            result = trainer.finish() if trainer.finished else trainer.run()
            entry = search._close(rnd, _measured(result))
            bar.update(1)
            if on_round is not None:
                on_round(entry)
    except KeyboardInterrupt:
        bar.close()
        message = search._interrupted_message()
        search._note(message)
        raise KeyboardInterrupt(message) from None  # scripts still stop; no traceback from inside a write
    finally:
        bar.close()
    return search.ticket


def _measured(result: TrainResult) -> dict[str, Any]:
    keys = ("epochs_trained", "start_step", "end_step", "steps", "samples", "val_acc", "val_loss", "test_acc",
            "test_loss", "best_epoch", "train_acc", "early_stopped", "precision", "channels_last", "wall_time_s")
    return {key: result[key] for key in keys}


# ---------------------------------------------------------------------- retraining
def retrain(
    ticket: Ticket,
    model: nn.Module | Callable[[], nn.Module],
    train_data: Dataset | DataLoader,
    schedule: Schedule | Mapping[str, Any] | None = None,
    *,
    start: int | str | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    eval_data: Any = None,
    test_data: Any = None,
    quiet: bool = True,
    **train_kwargs: Any,
) -> TrainResult:
    """Measure a ticket: train it on the full data from its rewind state.

    Applies ``ticket`` to ``model`` (a fresh, unpruned model of the ticket's architecture, or
    a function making one) and trains it on all of ``train_data`` with the full schedule from
    the ticket's rewind point (``ticket.meta["rewind_epochs"]``, in epochs of the full
    schedule) to the end. The steps spent here are measurement, not search: they are not in
    the ticket's history and :func:`iteration_savings` reports them separately.

    Example::

        result = tickets.retrain(ticket, create_model("res20s", 10), train_set, epochs=30,
                                 lr_schedule=dict(milestones=[15, 25]), eval_data=val_set,
                                 test_data=test_set)
        result.test_acc, result.steps

    Args:
        ticket: a ticket with a rewind state (from :func:`prune` or ``Ticket.load``).
        model: an unpruned model, pruned and trained in place (afterwards it holds the
            trained ticket, in torch's prune state), or a zero-argument factory (its model is
            not returned: pass a model to keep the trained weights).
        train_data: the full training set (or a DataLoader over it).
        schedule: the full schedule (a :class:`Schedule` or mapping); ``train_kwargs`` may
            give its fields (``epochs=``, ``optimizer=``, ``lr_schedule=``...) and any other
            argument of :func:`tickets.training.train` (``amp``, ``num_workers``...).
        start: the schedule point to start from; default the ticket's rewind point.
        seed, device, eval_data, test_data, quiet: as in :func:`tickets.training.train`.

    Returns:
        The :class:`tickets.training.TrainResult` (``test_acc`` at the best-validation epoch,
        ``steps``, ``wall_time_s``...; ``dict(result)`` works).
    """
    if not isinstance(ticket, Ticket):
        raise TypeError(f"ticket must be a tickets.Ticket; got {type(ticket).__name__}")
    if ticket.rewind_state is None:
        raise ValueError("the ticket has no rewind state: retraining starts from its rewind weights")
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a function returning one; got {type(model).__name__}")
        model = model()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model() must return an nn.Module; got {type(model).__name__}")
    ticket.apply(model, rewind=True)
    if start is None:
        epochs_at = float(ticket.meta.get("rewind_epochs", 0.0))
        start = f"{epochs_at}ep" if epochs_at else 0
    return train(model, train_data, schedule, seed=seed, start_step=start, device=device, eval_data=eval_data,
                 test_data=test_data, quiet=quiet, **train_kwargs)

