"""A ticket search as rounds that any training loop can drive.

:class:`TicketSearch` owns everything a search keeps between rounds: the masks, the rewind
point, the PrAC sets and their statistics, the history and the checkpoints. It hands a
training loop one :class:`Round` at a time (which samples, how many steps, the learning-rate
factor at each step) and takes back what happened (per batch: sample indices, logits and
targets; per epoch: an optional validation number). Between rounds it prunes, rewinds,
picks the next PrAC set and checkpoints.

``tickets.prune`` is this object driven by the library's own engine
(:class:`tickets.training.Trainer`); your own loop drives it the same way::

    search = tickets.TicketSearch(model, PrACSampler(train_set), rounds=5, epochs=30)
    loader = search.loader(num_workers=4)               # (input, target, index) batches
    for rnd in search:                                  # begin_round() ... end_round()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = rnd.lr_scheduler(optimizer)         # the round's (scaled) schedule
        for epoch in rnd:
            for x, y, idx in rnd.batches(loader):
                loss = F.cross_entropy(logits := model(x), y)
                optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()
                rnd.report(idx, logits, y)              # statistics, accounting, masks
    ticket = search.ticket

See ``docs/own-loop.md`` for the protocol and what it guarantees.
"""

from __future__ import annotations

import dataclasses
import json
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tickets import parallel as _dist
from tickets.data.batching import check_loader_kwargs, steps_per_epoch as batch_steps
from tickets.data.sampling import IndexedDataset
from tickets.prac.sampler import PrACSampler
from tickets.prac.score_rules import pick_rule, record_for
from tickets.pruning.parameters import prunable_parameters
from tickets.pruning.rewind import snapshot
from tickets.ticket.ticket import Ticket
from tickets.training.schedule import Schedule
from tickets.training.precision import resolve_channels_last, resolve_device, resolve_precision
from tickets.search.checks import (
    _check_model_output, _check_round_steps, _check_search_arguments, _check_world_batch, _qualified,
    _resolve_training_data, _rewind_point, _round_schedule, _warn_augmented,
)
from tickets.search.closing import close_round, own_loop_measures, start_round
from tickets.search.identity import _engine_optimizer, _run_config, _ticket_meta
from tickets.search.journal import Journal
from tickets.search.options import PrACOptions, Pruning, Runtime, resolve_options
from tickets.search.round import Round, _RoundSampler
from tickets.search.run_folder import STATE_FORMAT, STATE_VERSION, _Run
from tickets.search.start import resume

__all__ = ['TicketSearch']


class TicketSearch:
    """The state of a lottery-ticket search by IMP (on PrAC sets or on the full data),
    driven one round at a time by any training loop.

    Arguments are those of :func:`tickets.prune` that concern the search (the engine's
    ``eval_data``, ``test_data``, ``loss_fn`` and callbacks are the loop's business): the
    model, a sampler, ``rounds``, and the option groups ``schedule`` (:class:`Schedule`),
    ``pruning`` (:class:`Pruning`), ``prac`` (:class:`PrACOptions`), ``runtime``
    (:class:`Runtime`), or their fields as keywords (``amount=0.2, epochs=30, rewind_to="1ep"``).

    Args:
        model: the dense, untrained model; pruned and rewound in place between rounds, it
            ends as the last round's trained, pruned model (not the ticket: apply
            :attr:`ticket` to a fresh model for its rewound weights).
        sampler: a :class:`PrACSampler` (PrAC IMP), any sampler with a ``data_source``
            (vanilla IMP, e.g. ``RandomSampler(train_set)``), or a ``Dataset``; a ``Dataset``,
            or None with ``train_data``, means ``PrACSampler(train_data, seed=seed)``.
        rounds: trainings in all, round 0 included (>= 1). The one setting that may change
            when a checkpoint_dir is resumed: a larger value extends a finished or running
            search (a finished one continues with the pruning its last round skipped), a
            value below the rounds already begun is refused.
        train_data: the training set; default the sampler's ``data_source``.
        train_eval_data: the training split without augmentation, for the disagreement pass.
        checkpoint_dir: where the search is saved after every round (and ``round_<k>.ticket``,
            ``prac_sets.pt``, ``round_0.pt``, the final ``ticket.ticket``); a new search with
            the same arguments (and a fresh model) resumes at the round it was in (a round
            cut short starts again).
        seed: the sampler's seed when ``sampler`` is a data set, and part of the run's identity.
        meta: extra JSON-able facts for the tickets' ``meta``.
        start_from: the checkpoint_dir of another search whose round 0 has finished: this
            search takes that round 0 (history entry, trained weights, rewind point,
            per-sample statistics, sampler state) instead of computing it, and goes on from
            round 1. The two must agree on everything round 0 depends on (model and initial
            weights, data, seed, sampler and data order, schedule and optimizer, rewind
            point, precision); ``rounds``, ``amount``, ``rewind`` and the PrAC options may
            differ. A PrAC search needs round-0 statistics: start it from a PrAC search's
            round 0. Ignored when this search's own checkpoint_dir already holds a finished
            round.

    Raises:
        ValueError / TypeError, before anything runs: as :func:`tickets.prune`; a model that
        is already pruned; a ``start_from`` folder without a finished round 0 or of a search
        with other settings.
    """

    def __init__(
        self,
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
        checkpoint_dir: str | Path | None = None,
        seed: int = 0,
        meta: Mapping[str, Any] | None = None,
        start_from: str | Path | None = None,
        _engine: bool = False,
        **options: Any,
    ) -> None:
        _check_search_arguments(model, sampler, rounds, start_from)
        sched, pruning, prac, runtime = resolve_options(schedule, pruning, prac, runtime, **options)
        _check_round_steps(prac.round_steps, rounds)  # type: ignore[arg-type]
        _dist.init_from_env(runtime.device)  # under torchrun without a process group: make one
        resolved, train_data = _resolve_training_data(sampler, train_data, train_eval_data, seed)
        n = len(train_data)  # type: ignore[arg-type]
        self.rank, self.world_size = _dist.world()
        _check_world_batch(sched.batch_size, self.world_size)
        if self.world_size > 1 and not runtime.quiet and self.rank != 0:
            runtime = dataclasses.replace(runtime, quiet=True)  # progress and summaries from rank 0 only
        self.model, self.sampler, self.train_data, self.train_eval_data = model, resolved, train_data, train_eval_data
        self.rounds, self.seed = rounds, int(seed)
        self.schedule, self.pruning, self.prac, self.runtime = sched, pruning, prac, runtime
        self.is_prac = isinstance(resolved, PrACSampler)
        self.adaptive = isinstance(resolved, PrACSampler) and resolved.adaptive
        self.num_samples = n
        if self.adaptive and rounds > 1 and train_eval_data is None:
            _warn_augmented(train_data)
        dev = resolve_device(runtime.device) if runtime.device is not None else next(iter(model.parameters()), torch.empty(0)).device
        model.to(dev)
        self.device = dev
        self.precision = resolve_precision(dev, runtime.precision, runtime.amp)
        self.channels_last = resolve_channels_last(model, runtime.channels_last)
        self.classes = _check_model_output(model, train_data, dev)
        spe_full = sched.steps_per_epoch(n)
        self.rewind_step = _rewind_point(pruning.rewind_to, spe_full, sched.total_steps(n))
        self.rewind_epochs = self.rewind_step / spe_full
        pairs = list(pruning.parameters) if pruning.parameters is not None else prunable_parameters(model)
        if not pairs:
            raise ValueError("parameters is empty: nothing to prune")
        self.parameters = pairs
        self.names = _qualified(model, pairs)
        self.rule = pick_rule(prac.selection, resolved)  # PrACOptions.selection or the sampler's; the paper's by default
        # the engine's optimizer is part of the run's identity; an own loop's is checked by Round.attach
        self.optimizer_record: dict[str, Any] | None = _engine_optimizer(sched, model) if _engine else None
        self.config = _run_config(
            rounds=rounds, schedule=sched, pruning=pruning, prac=prac, rewind_step=self.rewind_step, num_samples=n,
            sampler=resolved, adaptive=self.adaptive, seed=self.seed, rule=self.rule, names=self.names,
            classes=self.classes, precision=self.precision, optimizer=self.optimizer_record, world_size=self.world_size,
        )
        self._fingerprint = json.dumps(self.config, sort_keys=True)  # what a resume must match
        self.directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self._journal = Journal(self.directory, self._fingerprint, rounds, resolved, runtime=runtime, rank=self.rank)
        self.meta = self._journal.meta = _ticket_meta(self.config, is_prac=self.is_prac, rewind_epochs=self.rewind_epochs,
                                                      schedule=sched, engine=_engine, meta=meta)
        self._engine = _engine
        self._open: Round | None = None
        self._used_optimizers: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()
        try:  # restore a saved run, or take another's round 0, or extend a finished run
            resume(self, pairs, resolved, start_from)
        except BaseException:
            self._journal.release()  # a refused start leaves the folder free
            raise
        self._journal.open_folder(self.done, self.rounds)  # stale temporary files, metrics.jsonl, the "resuming" line

    # ------------------------------------------------------------------ facts
    @property
    def round(self) -> int:
        """The round that :meth:`begin_round` starts next (or that is open)."""
        return self._run.round

    @property
    def done(self) -> bool:
        """All rounds are trained; :attr:`ticket` is the result."""
        return self._run.phase == "done"

    @property
    def current(self) -> Round | None:
        """The open round, or None."""
        return self._open

    @property
    def history(self) -> list[dict[str, Any]]:
        """One dict per finished round (as ``ticket.history``)."""
        return [dict(h) for h in self._run.history]

    @property
    def ticket(self) -> Ticket:
        """The ticket of the last finished round (the search's result once :attr:`done`)."""
        if not self._run.history:
            raise RuntimeError("no round has finished yet: the search has no ticket")
        return self._journal.ticket(self._run.masks)  # type: ignore[arg-type]

    def loader(self, **kwargs: Any) -> DataLoader:
        """A ``DataLoader`` of ``(input, target, index)`` batches over the training set that
        follows the search: the current set, in the sampler's order for the epoch, cut to the
        open round's epoch (the first epoch after a rewind starts mid-epoch, and the round
        may end mid-epoch), with the schedule's batch size. Build it once; every
        ``iter(loader)`` follows the round at that moment. Batches follow the library's rule
        (:mod:`tickets.data.batching`): a last single sample joins the batch before it, so no
        train-mode batch holds one sample and ``len(loader)`` is the epoch's step count of
        the round's schedule.

        Args:
            kwargs: other ``DataLoader`` arguments (``num_workers``, ``pin_memory``,
                ``persistent_workers``...; with persistent workers the data order is still
                right: the sampler runs in the main process).

        Raises:
            TypeError: ``sampler``, ``batch_sampler``, ``batch_size`` or ``shuffle`` (set by the
                search). ValueError: ``drop_last`` (not supported: see
                :func:`tickets.data.batching.check_loader_kwargs`).
        """
        kwargs = check_loader_kwargs(kwargs, "search.loader()")
        return DataLoader(IndexedDataset(self.train_data), batch_sampler=_RoundSampler(self), **kwargs)  # type: ignore[arg-type]

    @property
    def _rank_batch(self) -> int:
        """This process's share of the global batch."""
        return self.schedule.batch_size // self.world_size

    # ------------------------------------------------------------------ rounds
    def begin_round(self) -> Round:
        """Start the next round: returns the :class:`Round` to train.

        Raises:
            RuntimeError: the search is done, or a round is still open.
        """
        if self.done:
            raise RuntimeError(f"the search is finished ({self.rounds} rounds): search.ticket holds the result")
        if self._open is not None:
            raise RuntimeError(f"round {self._open.index} is still open: call end_round() before begin_round()")
        n, k = self.num_samples, self._run.round
        if self._run.phase == "start":
            start_round(self, k)
        # (a round cut short starts again from its start: __init__ loaded the round's starting weights)
        set_size = len(self.sampler)  # type: ignore[arg-type]
        w = self.world_size
        # the batching rule refuses an epoch of one sample (per process), naming the set
        batch_steps(set_size, self.schedule.batch_size, w, what=f"round {k}'s {'PrAC set' if self.is_prac else 'training set'}")
        scale = self.prac.scale_schedule and self.is_prac
        round_sched, start, floored = _round_schedule(self.schedule, n, set_size, k, self.rewind_epochs, scale=scale,
                                                      min_step_fraction=float(self.prac.min_step_fraction), world_size=w,
                                                      budget=self.prac.budget(k))
        stats = record_for(self.rule, n, self._device(), distributed=w > 1, previous=self._run.stats) if self.adaptive else None
        self._open = Round(self, k, round_sched, start, set_size, floored, stats)
        return self._open

    def end_round(self, *, val_acc: float | None = None, val_loss: float | None = None,
                  test_acc: float | None = None, test_loss: float | None = None, **metrics: Any) -> dict[str, Any]:
        """Close the open round of your own loop: keep its best-validation weights (if
        ``val_acc`` went to :meth:`Round.end_epoch`), record it, pick the next PrAC set, save
        the round's ticket, prune and rewind for the next round, checkpoint.

        Args:
            val_acc, val_loss: the validation numbers of the weights kept (leave out when
                :meth:`Round.end_epoch` got them: the best epoch's are used).
            test_acc, test_loss: test numbers of the kept weights (measure them after
                :meth:`Round.restore_best`).
            metrics: other JSON-able numbers, stored in the history entry under ``metrics``.

        Returns:
            The round's history entry.

        Raises:
            RuntimeError: no round is open, or it ended before any step.
            ValueError: ``val_acc`` given here and to :meth:`Round.end_epoch`.
        """
        rnd = self._open
        if rnd is None:
            raise RuntimeError("no round is open: call begin_round() first")
        if rnd.steps == 0:
            raise RuntimeError(
                f"round {rnd.index} ended before any step: train it and call rnd.report(indices, logits, targets) "
                f"after every optimizer step before end_round()"
            )
        if val_acc is not None and rnd._best is not None:
            raise ValueError("val_acc was reported to end_epoch(): the best epoch's is used; do not pass it to end_round()")
        measured = own_loop_measures(rnd, self._device(), val_acc=val_acc, val_loss=val_loss, test_acc=test_acc,
                                     test_loss=test_loss, metrics=metrics)
        return self._close(rnd, measured)

    def __iter__(self) -> Iterator[Round]:
        """``for rnd in search``: :meth:`begin_round` each round and :meth:`end_round` after
        the loop body (unless the body closed it)."""
        while not self.done:
            rnd = self.begin_round()
            yield rnd
            if self._open is rnd:
                self.end_round()

    def state_dict(self) -> dict[str, Any]:
        """The search's state (what ``checkpoint_dir`` holds), for frameworks that save their own."""
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "fingerprint": self._fingerprint,
                **{k: getattr(self._run, k) for k in self._run.__dataclass_fields__}}

    def close(self) -> None:
        """Give up the run folder now (its lock, so another process may open it); done anyway
        when the search is garbage-collected or, as ``with TicketSearch(...) as search:``, leaves the block."""
        self._journal.release()

    def __enter__(self) -> TicketSearch:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ------------------------------------------------------------------ internals
    @property
    def _run(self) -> _Run:
        """The search's mutable state (kept by its :class:`Journal`)."""
        return self._journal.run

    def _device(self) -> torch.device:
        """The engine's device, or for own loops wherever the model is now."""
        if self._engine:
            return self.device
        return next(iter(self.model.parameters()), torch.empty(0, device=self.device)).device

    def _stepped(self, rnd: Round) -> None:
        if rnd.index == 0 and rnd.step == self.rewind_step:
            self._run.rewind_state = snapshot(self.model)

    def _close(self, rnd: Round, measured: Mapping[str, Any]) -> dict[str, Any]:
        """Everything after a round's training (:func:`tickets.search.closing.close_round`)."""
        return close_round(self, rnd, measured)

    def _engine_epoch(self, index: int, entry: Mapping[str, Any], trainer: Any, *, force: bool = False) -> bool:
        """The engine's end of an epoch of round ``index``: its ``metrics.jsonl`` line, then a
        checkpoint when one is due (``force``: now, e.g. before a callback stops the run).
        Returns whether the run was saved."""
        return self._journal.engine_epoch(index, entry, trainer, force=force)

    def __repr__(self) -> str:
        state = "done" if self.done else f"round {self.round} of {self.rounds}"
        return f"TicketSearch({type(self.model).__name__}, {type(self.sampler).__name__}, {state})"
