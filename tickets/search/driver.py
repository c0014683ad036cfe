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

import functools
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
from tickets.training.progress import interactive
from tickets.training.trainer import Trainer
from tickets.training.results import TrainResult

__all__ = ['prune']


log = logging.getLogger("tickets")


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
    round prunes ``amount`` of the surviving weights by global magnitude, rewinds, and trains
    again. With a :class:`tickets.PrACSampler` each round trains on the current PrAC set with
    the schedule scaled by ``r = |PrAC| / N`` and the set is rebuilt after the round; with
    any other sampler over the training set it is vanilla IMP on the full data. This is a
    :class:`tickets.TicketSearch` driven by the library's engine; to keep your own training
    loop, drive the search yourself (``docs/own-loop.md``). Full reference: ``docs/api.md``.

    Example::

        ticket = tickets.prune(model, PrACSampler(train_set), rounds=5,
                               schedule=Schedule(epochs=30, lr=0.1, milestones=(15, 25)),
                               pruning=Pruning(amount=0.2, rewind_to="3ep"),
                               eval_data=val_set, test_data=test_set, checkpoint_dir="runs/r18")

    Args:
        model: the dense, untrained model; pruned and trained in place, it ends as the last
            round's trained, pruned model (not the ticket: ``ticket.apply(fresh_model)``).
        sampler: a :class:`PrACSampler` (PrAC IMP) or any sampler with a ``data_source``
            (vanilla IMP, e.g. ``RandomSampler(train_set)``); a ``Dataset``, or None with
            ``train_data``, means ``PrACSampler(train_data, seed=seed)``.
        rounds: trainings in all, round 0 included (>= 1); the last trains at sparsity
            ``1 - (1 - amount) ** (rounds - 1)``.
        schedule: a full round's :class:`Schedule` (or a mapping of its fields).
        pruning: :class:`tickets.Pruning` (``amount``, ``rewind_to``, ``rewind``, ``parameters``, ``early_bird``).
        prac: :class:`tickets.PrACOptions` (``selection``, ``scale_schedule``, ``min_step_fraction``, ``round_steps``).
        runtime: :class:`tickets.Runtime` (``device``, ``precision``, ``channels_last``, ``compile``,
            ``num_workers``, ``loader_kwargs``, ``quiet``, ``checkpoint_every``, ``keep_round_tickets``).
        train_data: the training set; default the sampler's ``data_source`` (given both, the same object).
        train_eval_data: the training split *without augmentation*, same order, for the
            dense/pruned disagreement (default ``train_data`` as it is).
        eval_data: validation data: each round keeps its best-validation weights (used for
            pruning, disagreement and the ticket) and reports ``val_acc``.
        test_data: test data, measured once per round with the kept weights (``test_acc``).
        checkpoint_dir: folder of the resumable run (``state.pt``, ``metrics.jsonl``,
            ``round_<k>.ticket``, ``prac_sets.pt``, ``round_0.pt``, ``ticket.ticket``): rerunning
            the same call with a fresh model resumes, or returns a finished run's ticket; a
            larger ``rounds`` extends the search exactly.
        loss_fn: ``(logits, targets) -> loss``; default cross-entropy.
        seed: seed of data order and augmentation (model initialization is the caller's).
        meta: extra JSON-able facts stored in the ticket's ``meta``.
        on_epoch: ``fn(round, epoch_entry)`` after each epoch that ends on an epoch boundary (and
            its checkpoint, when due); the entry has ``epoch``, ``step``, ``lr``, ``train_loss``,
            ``train_acc``, ``seconds``, and ``val_acc``/``val_loss``, ``early_stop`` when they apply.
            Raising :class:`RunInterrupted` in it saves the run at that epoch first.
        on_round: ``fn(history_entry)`` after each round's checkpoint (``ticket.history[round]``).
            Raising in a callback stops the run; a rerun resumes it.
        start_from: the ``checkpoint_dir`` of another search whose round 0 has finished: take
            that round 0 instead of training it (bit for bit the same; ``docs/prac.md``).
        options: any field of :class:`Schedule`, :class:`Pruning`, :class:`PrACOptions` or
            :class:`Runtime` as a keyword, overriding the group's value (the 0.1 keywords too).

    Returns:
        The :class:`Ticket` of the last round: masks, rewind state, ``history`` (one dict per
        round: sparsity, set size, steps, samples, accuracies, timings, cumulative totals,
        PrAC statistics; the keys are listed in ``docs/api.md``) and ``meta``.

    Raises:
        ValueError / TypeError, before any training: ``rounds < 1``, a bad option, unlabelled data, a
        sampler over other data, a model output that does not fit the labels, a rewind point after
        round 0, another run's ``checkpoint_dir``, a pruned model, a ``start_from`` without its round 0.
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
    with search:  # the run folder is given up however the search ends
        if not search.done:
            _EngineRounds(search, model, eval_data=eval_data, test_data=test_data, loss_fn=loss_fn,
                          on_epoch=on_epoch, on_round=on_round).run()
        return search.ticket


class _EngineRounds:
    """The rounds of a :class:`TicketSearch` run by the library's :class:`Trainer`, one
    trainer per round: progress over rounds, the callbacks of :func:`prune`, Ctrl-C.

    Each round's trainer reports its steps to the search (within-round checkpoints), hands
    every full epoch to the search (``metrics.jsonl``, a checkpoint when due) and then to the
    caller's ``on_epoch``, resumes from the trainer state of a checkpoint, and its result
    closes the round.
    """

    def __init__(
        self,
        search: TicketSearch,
        model: nn.Module,
        *,
        eval_data: Any,
        test_data: Any,
        loss_fn: LossFn | None,
        on_epoch: Callable[[int, dict[str, Any]], Any] | None,
        on_round: Callable[[dict[str, Any]], Any] | None,
    ) -> None:
        self.search, self.model = search, model
        self.eval_data, self.test_data, self.loss_fn = eval_data, test_data, loss_fn
        self.on_epoch, self.on_round = on_epoch, on_round

    def run(self) -> None:
        """Train rounds until the search is done. Ctrl-C notes where the run stopped (and how
        to resume) and raises ``KeyboardInterrupt`` with that message."""
        from tqdm.auto import tqdm

        search = self.search
        bar = tqdm(total=search.rounds, initial=search.round, desc="rounds", unit="round",
                   disable=search.runtime.quiet or not interactive(), dynamic_ncols=True)
        try:
            while not search.done:
                rnd = search.begin_round()
                entry = search._close(rnd, _measured(self._train(rnd)))
                bar.update(1)
                if self.on_round is not None:
                    self.on_round(entry)
        except KeyboardInterrupt:
            bar.close()
            message = search._journal.interrupted_message()
            search._journal.note(message)
            raise KeyboardInterrupt(message) from None  # scripts still stop; no traceback from inside a write
        finally:
            bar.close()

    def _train(self, rnd: Round) -> TrainResult:
        """Train round ``rnd`` (from the checkpoint's trainer state when there is one)."""
        search, rt = self.search, self.search.runtime

        def capture(step: int, m: nn.Module) -> None:
            rnd.step = step
            search._stepped(rnd)

        trainer = Trainer(
            self.model, search.train_data, rnd.schedule, seed=search.seed, start_step=rnd.start_step,
            device=search.device, eval_data=self.eval_data, test_data=self.test_data, sampler=search.sampler,
            stats=rnd.stats, num_workers=rt.num_workers, loader_kwargs=rt.loader_kwargs, precision=search.precision,
            channels_last=search.channels_last, loss_fn=self.loss_fn, compile=rt.compile, quiet=rt.quiet,
            desc=f"round {rnd.index}", round_index=rnd.index, on_step=capture,
            on_epoch=functools.partial(self._after_epoch, rnd.index), early_stop=rnd.early_bird,
        )
        if search._run.trainer is not None:
            trainer.load_state_dict(search._run.trainer)
        return trainer.finish() if trainer.finished else trainer.run()

    def _after_epoch(self, k: int, trainer: Trainer, entry: dict[str, Any]) -> None:
        """A full epoch of round ``k``: the search's record (a checkpoint when due), then the
        caller's ``on_epoch``; a :class:`RunInterrupted` from it saves the epoch first."""
        saved = self.search._engine_epoch(k, entry, trainer)  # metrics.jsonl; a checkpoint when due
        if self.on_epoch is not None:
            try:
                self.on_epoch(k, entry)
            except RunInterrupted:
                if not saved:  # a stop on purpose: the resume repeats nothing
                    self.search._engine_epoch(k, entry, trainer, force=True)
                raise


def _measured(result: TrainResult) -> dict[str, Any]:
    keys = ("epochs_trained", "start_step", "end_step", "steps", "samples", "val_acc", "val_loss", "test_acc",
            "test_loss", "best_epoch", "train_acc", "early_stopped", "precision", "channels_last", "wall_time_s")
    return {key: result[key] for key in keys}
