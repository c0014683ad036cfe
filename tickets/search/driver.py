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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tickets.search.options import PrACOptions, Pruning, RunInterrupted, Runtime
from tickets.search.round import Round
from tickets.search.ticket_search import TicketSearch
from tickets.search.checks import _check_labelled
from tickets.ticket.ticket import Ticket
from tickets.training.schedule import LossFn, Schedule
from tickets.training.trainer import Trainer, interactive
from tickets.training.results import TrainResult

__all__ = ['prune']


log = logging.getLogger("tickets")


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
