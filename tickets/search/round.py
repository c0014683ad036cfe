"""One round of a search as a training loop sees it: :class:`Round`, and the batch sampler
of :meth:`TicketSearch.loader`.

A round needs a few facts and hooks of its search, named by :class:`RoundOwner` (the
search's module imports this one, so a round knows its search by that protocol, not by class).
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol
import torch
from torch import nn
from torch.utils.data import Sampler
from tickets import parallel as _dist
import tickets.pruning.methods as methods
from tickets.data.batching import EpochBatchSampler
from tickets.pruning.rewind import enforce_masks
from tickets.prac.scores import ScoreRecord
from tickets.prac.stats import SampleStats
from tickets.training.schedule import Schedule
from tickets.training.results import EvalResult
from tickets.training.checkpoint import load_state as _load_state, state_copy as _state_copy
from tickets.search.identity import _describe_diff, _optimizer_diff, describe_optimizer
from tickets.search.journal import Journal
from tickets.search.options import EarlyBird, Pruning


__all__ = ['Round']


class RoundOwner(Protocol):
    """What a :class:`Round` and its batch sampler use of their search
    (:class:`tickets.search.ticket_search.TicketSearch` is the implementation)."""

    model: nn.Module
    sampler: Sampler[int]
    num_samples: int
    classes: int
    is_prac: bool
    rank: int
    world_size: int
    pruning: Pruning
    parameters: list[tuple[nn.Module, str]]
    names: list[str]
    _journal: Journal  # the run (its history) and metrics.jsonl
    _used_optimizers: weakref.WeakSet[torch.optim.Optimizer]  # of earlier rounds: refused

    @property
    def current(self) -> Round | None: ...

    @property
    def _rank_batch(self) -> int: ...

    def _stepped(self, rnd: Round) -> None: ...


# ---------------------------------------------------------------------- the search
class _RoundSampler(EpochBatchSampler):
    """The batches of the search's sampler (this process's share under torch.distributed), cut
    by the batching rule of :mod:`tickets.data.batching` and to the open round's current epoch (see
    :meth:`TicketSearch.loader`): a ``batch_sampler``."""

    def __init__(self, search: RoundOwner) -> None:
        self.search = search
        source: Sampler[int] = search.sampler
        if search.world_size > 1:  # this rank's share of every epoch
            source = _dist.ShardSampler(search.sampler, search.rank, search.world_size)
        super().__init__(source, search._rank_batch, self._left)

    def _left(self) -> int | None:
        rnd = self.search.current
        if rnd is None:
            return None
        left = min(rnd.steps_per_epoch - rnd.step % rnd.steps_per_epoch, rnd.total_steps - rnd.step)
        return max(0, left) if not rnd.stopped else 0

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the round sets its sampler's epoch (frameworks call this with their own count)."""


class Round:
    """One round of a :class:`TicketSearch`: what to train, for how long, and the reports.

    Made by :meth:`TicketSearch.begin_round`; closed by :meth:`TicketSearch.end_round`.

    Attributes:
        index: the round (0 = the dense training on the full data).
        schedule: the round's :class:`Schedule` (a PrAC round's is scaled by its set size; a round
            with a ``round_steps`` budget has a :class:`tickets.training.CompressedSchedule`).
        sampler: the search's sampler; it yields the current set's indices.
        indices: the current set (sorted indices into the training set).
        set_size, fraction: ``len(indices)`` and ``set_size / len(train_set)``.
        steps_per_epoch, total_steps: of the round's schedule over the current set.
        start_step: where the round starts in its schedule (after a rewind, not 0).
        step: the schedule position now (``start_step`` + the steps reported).
        steps, samples: optimizer steps and samples reported in this round.
        stats: the round's :class:`tickets.SampleStats` (None unless the sampler is an
            adaptive :class:`PrACSampler`), or a :class:`tickets.prac.scores.ScoreRecord`
            (the statistics plus the scores of the logits a rule needs, e.g. EL2N).
        stopped: the early-bird stop ended the round.
        log: one dict per :meth:`end_epoch`.
    """

    def __init__(self, search: RoundOwner, index: int, schedule: Schedule, start_step: int,
                 set_size: int, floored: bool, stats: SampleStats | ScoreRecord | None) -> None:
        self.search = search
        self.index = index
        self.schedule = schedule
        self.set_size = set_size
        self.fraction = set_size / search.num_samples
        self.floored = floored
        self.steps_per_epoch = schedule.steps_per_epoch(set_size, search.world_size)
        self.total_steps = schedule.total_steps(set_size, search.world_size)
        self.start_step = start_step
        self.step = start_step
        self.steps = 0
        self.samples = 0
        self.stats = stats
        bird = search.pruning.early_bird
        self.early_bird: EarlyBird | None = None
        if bird and index > 0:
            self.early_bird = (bird if isinstance(bird, EarlyBird) else EarlyBird()).bind(search.parameters, float(search.pruning.amount))
        self.stopped = False
        self.log: list[dict[str, Any]] = []
        self.closed = False
        self._member: torch.Tensor | None = None
        if search.is_prac:
            self._member = torch.zeros(search.num_samples, dtype=torch.bool)
            self._member[search.sampler.indices] = True  # type: ignore[union-attr]
        self._best: tuple[float, float | None, int, dict[str, torch.Tensor]] | None = None
        self._epoch_steps = 0
        self._optimizer: weakref.ReferenceType[torch.optim.Optimizer] | None = None
        self._optimizer_record: dict[str, Any] | None = None  # describe_optimizer() of the attached optimizer
        self._started = time.perf_counter()
        self._sync_epoch()

    def _sync_epoch(self) -> None:
        """Keep the sampler at the epoch of the next step, so that a data iterator created at
        any moment (frameworks create theirs before their epoch hooks) has the right order."""
        if hasattr(self.sampler, "set_epoch") and self.step < self.total_steps:
            self.sampler.set_epoch(self.epoch)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ what to train
    @property
    def sampler(self) -> Sampler[int]:
        return self.search.sampler

    @property
    def indices(self) -> torch.Tensor:
        if self._member is not None:
            return self._member.nonzero().flatten()
        return torch.arange(self.search.num_samples)

    @property
    def epochs(self) -> int:
        """Epochs of the round's schedule (counting from 0, not from :attr:`start_step`)."""
        return self.schedule.epochs

    @property
    def batch_size(self) -> int:
        return self.schedule.batch_size

    @property
    def epoch(self) -> int:
        """The epoch (0-based) that the next step belongs to."""
        return self.step // self.steps_per_epoch

    @property
    def done(self) -> bool:
        """True when the round's schedule is finished or the early-bird stop ended it."""
        return self.stopped or self.step >= self.total_steps

    def lr_factor(self, step: int | None = None) -> float:
        """The schedule's learning-rate multiplier at ``step`` (default: the next step).

        Multiply your optimizer's base learning rates by it before each step, or use
        :meth:`lr_scheduler`.
        """
        return self.schedule.lr_factor(self.step if step is None else int(step), self.steps_per_epoch)

    def lr_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """A ``LambdaLR`` over ``optimizer`` following the round's schedule from :attr:`start_step`.

        Call ``scheduler.step()`` once after every ``optimizer.step()``. The optimizer is
        :meth:`attach`-ed (checked to be fresh and to train the pruned tensors).
        """
        self.attach(optimizer)
        start, spe, schedule = self.start_step, self.steps_per_epoch, self.schedule
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: schedule.lr_factor(start + i, spe))

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Check that ``optimizer`` is fit for this round: a fresh optimizer (IMP restarts the
        schedule and, with weight rewinding, the weights: momentum or Adam moments from an
        earlier round would be wrong) that trains every tensor being pruned.

        Raises:
            TypeError: not a ``torch.optim.Optimizer``.
            ValueError: the optimizer of an earlier round, one that already has state, one
                that does not train a pruned tensor of the model, or one of another class or
                hyperparameters (:func:`describe_optimizer`; ``lr`` is the base learning rate)
                than the earlier rounds of the search recorded in their history (resumes
                included): the own-loop counterpart of the run's fingerprint, which cannot see
                an optimizer built after ``begin_round()``.
        """
        described = _checked_optimizer(optimizer, self.search, self.index)
        self.search._used_optimizers.add(optimizer)
        self._optimizer = weakref.ref(optimizer)
        self._optimizer_record = described

    # ------------------------------------------------------------------ loops
    def __iter__(self) -> Iterator[int]:
        """The round's epochs (0-based, from the epoch of :attr:`start_step`) until it is
        :attr:`done`; sets the sampler's epoch (its data order) and closes each epoch with
        :meth:`end_epoch` if the loop did not."""
        while not self.done:
            epoch = self.epoch
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)  # type: ignore[union-attr]
            before, logged = self.step, len(self.log)
            yield epoch
            if self.step == before:
                raise RuntimeError(
                    f"round {self.index}, epoch {epoch + 1}: no step was reported; call rnd.report(indices, "
                    f"logits, targets) after every optimizer step"
                )
            if len(self.log) == logged:
                self.end_epoch()

    def batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        """The batches of ``loader`` that belong to the current epoch: all of them, except
        that the first epoch after a rewind starts mid-epoch and the last may be cut at the
        round's end.

        A loader of your own over ``search.sampler`` with ``batch_size`` works too: its last
        batch of one sample, if any, is beyond the epoch's steps (the schedule counts that
        sample in the batch before) and is not yielded.

        Raises:
            RuntimeError: the loader ran out before the epoch's steps (``drop_last=True``, or
                another sampler or batch size than the search's); the epoch would be cut in
                two parts. Use :meth:`TicketSearch.loader`.
        """
        left = min(self.steps_per_epoch - self.step % self.steps_per_epoch, self.total_steps - self.step)
        if left <= 0 or self.stopped:
            return
        given = 0
        for batch in loader:
            yield batch
            given += 1
            if given >= left:
                return
        raise RuntimeError(
            f"round {self.index}, epoch {self.epoch + 1}: the loader gave {given} batches, but the epoch has {left} "
            f"more steps ({self.steps_per_epoch} per epoch over {self.set_size:,} samples in batches of "
            f"{self.batch_size}, a last single sample joining the batch before it): build the loader with "
            f"search.loader() (no drop_last, the search's sampler and batch size)"
        )

    # ------------------------------------------------------------------ reports
    @torch.no_grad()
    def report(self, indices: torch.Tensor | Sequence[int], logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Report one optimizer step: the batch's sample ``indices`` (positions in the
        training set), its train-mode ``logits`` ``[batch, classes]`` and ``targets`` (class
        labels, or a ``[batch, classes]`` soft/one-hot target whose argmax is the label).

        Call it after ``optimizer.step()``. It records the per-sample statistics of a PrAC
        round, counts the step and samples, zeroes the pruned entries of the weights again
        (:func:`tickets.enforce_masks`), and keeps the rewind point in round 0.

        Raises:
            RuntimeError: the round is closed or its schedule is already finished.
            ValueError / TypeError: indices outside the training set or outside the current
                PrAC set, logits or targets of the wrong shape.
        """
        if self.closed:
            raise RuntimeError(f"round {self.index} is closed: report to the round returned by the last begin_round()")
        if self.step >= self.total_steps:
            raise RuntimeError(
                f"round {self.index} has {self.total_steps} steps and all were reported: iterate the loader "
                f"with rnd.batches(loader) and the epochs with `for epoch in rnd` to stop on time"
            )
        if self.stopped:
            raise RuntimeError(f"round {self.index} was stopped by the early-bird test: end it with end_round()")
        search = self.search
        cpu, target, batch = _checked_batch(indices, logits, targets, search.classes, search.num_samples)
        if self._member is not None:
            outside = ~self._member[cpu]
            if bool(outside.any()):
                raise ValueError(
                    f"round {self.index} trains on its PrAC set of {self.set_size:,} samples, but sample "
                    f"{int(cpu[outside][0])} is not in it ({int(outside.sum())} of the batch): draw the batches "
                    f"with the search's sampler (search.loader() or DataLoader(..., sampler=search.sampler))"
                )
        if self.stats is not None:
            correct = logits.detach().argmax(1).eq(target.to(logits.device))
            where = cpu.to(self.stats.device)  # one copy of the indices for the record and its scores
            self.stats.record(where, correct.to(self.stats.device))
            if getattr(self.stats, "needs_logits", False):  # scores of the logits (EL2N), when the rule needs them
                self.stats.observe(where, logits, target)  # type: ignore[union-attr]
        enforce_masks(search.model)
        self.steps += 1
        self.samples += batch
        self._epoch_steps += 1
        self.step += 1
        search._stepped(self)

    def end_epoch(self, val_acc: float | EvalResult | None = None, val_loss: float | None = None,
                  **metrics: Any) -> bool:
        """Close an epoch; returns True when the round should stop (the early-bird test).

        Args:
            val_acc: the epoch's validation accuracy, a number in [0, 1] (optional), e.g.
                ``tickets.evaluate(model, val_set).accuracy``, or the
                :class:`tickets.training.EvalResult` of ``tickets.evaluate`` itself (its
                ``accuracy`` is taken, and its ``loss`` when ``val_loss`` is not given): the
                round then keeps its best-validation weights, as the engine does, and
                :meth:`restore_best` or :meth:`TicketSearch.end_round` loads them.
            val_loss: the matching loss (recorded).
            metrics: other JSON-able numbers, recorded in :attr:`log`.

        Raises:
            TypeError: ``val_acc`` is neither a number nor an ``EvalResult``.
            ValueError: ``val_acc`` is outside [0, 1] (a percentage?).
        """
        if self.closed:
            raise RuntimeError(f"round {self.index} is closed")
        if self._epoch_steps == 0:
            raise RuntimeError(f"round {self.index}: end_epoch() without a reported step since the last one")
        if hasattr(self.stats, "flush"):
            self.stats.flush()  # type: ignore[union-attr]  # the epoch's statistics of every rank
        _dist.broadcast_buffers(self.search.model)  # every rank evaluates with rank 0's buffers
        entry: dict[str, Any] = {"epoch": (self.step - 1) // self.steps_per_epoch + 1, "step": self.step, **metrics}
        if isinstance(val_acc, EvalResult):
            val_acc, val_loss = val_acc.accuracy, val_acc.loss if val_loss is None else val_loss
        if val_acc is not None:
            val = _number(val_acc, "val_acc")
            if not 0.0 <= val <= 1.0:
                raise ValueError(f"val_acc must be an accuracy in [0, 1]; got {val_acc!r}")
            entry["val_acc"] = val
            if val_loss is not None:
                entry["val_loss"] = float(val_loss)
            if self._best is None or val > self._best[0]:
                self._best = (val, entry.get("val_loss"), entry["epoch"], _state_copy(self.search.model))
        full_epoch = self.step % self.steps_per_epoch == 0
        if self.early_bird is not None and full_epoch and self.early_bird(self.search.model, entry["epoch"]):
            self.stopped = True
            entry["early_stop"] = True
        self.log.append(entry)
        self.search._journal.metrics({"kind": "epoch", "round": self.index, **entry, "epochs": self.epochs,
                                      "steps_trained": self.steps, "schedule_steps": self.total_steps})
        self._epoch_steps = 0
        self._sync_epoch()
        return self.stopped

    def restore_best(self) -> int | None:
        """Load the best-validation weights reported to :meth:`end_epoch` (nothing after an
        early-bird stop, which keeps the weights of its epoch); returns the kept epoch."""
        if self._best is None or self.stopped:
            return None
        _load_state(self.search.model, self._best[3])
        return self._best[2]

    def __repr__(self) -> str:
        return (f"Round({self.index}: {self.set_size:,} samples ({self.fraction:.1%}), {self.epochs} epochs, "
                f"step {self.step}/{self.total_steps}, from {self.start_step})")


def _checked_optimizer(optimizer: Any, search: RoundOwner, index: int) -> dict[str, Any]:
    """The checks of :meth:`Round.attach` for round ``index``: an optimizer, fresh (not of an
    earlier round, no state), training every pruned tensor, of the recipe the earlier rounds
    recorded. Returns its :func:`describe_optimizer` record."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
    if optimizer in search._used_optimizers:
        raise ValueError(
            f"round {index} got the optimizer of an earlier round: create a fresh optimizer (and "
            f"scheduler) after begin_round() in every round; its momentum/moment state belongs to weights "
            f"that were pruned and rewound"
        )
    if len(optimizer.state) > 0:
        raise ValueError(
            f"the optimizer already holds state (momentum or moments) for {len(optimizer.state)} tensors: "
            f"create a fresh optimizer after begin_round() (or clear optimizer.state) for round {index}"
        )
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for (module, name), q in zip(search.parameters, search.names):
        tensor = methods._original(module, name)
        if id(tensor) not in trained:
            raise ValueError(
                f"the optimizer does not train {q!r}, a tensor being pruned: build it over "
                f"model.parameters() of the model given to the search"
            )
    described = describe_optimizer(optimizer)
    earlier = next((h["optimizer"] for h in reversed(search._journal.run.history) if h.get("optimizer")), None)
    diff = _optimizer_diff(earlier, described) if earlier is not None else []
    if diff:
        raise ValueError(
            f"round {index} got another optimizer than the earlier rounds of this search "
            f"({_describe_diff(diff, before='earlier')}): a search trains every round with one recipe; build the "
            f"same optimizer each round, or start a new search (another checkpoint_dir) for another recipe"
        )
    return described


def _number(value: Any, name: str) -> float:
    """``value`` as a float; a TypeError naming its type when it is not a number."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"{name} must be a number (a float) or the EvalResult of tickets.evaluate; got {type(value).__name__}"
        ) from None


def _checked_batch(indices: torch.Tensor | Sequence[int], logits: torch.Tensor, targets: torch.Tensor,
                   classes: int, n: int) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The checks of one :meth:`Round.report`: ``logits`` ``[batch, classes]`` of the model's
    class count, ``batch`` integer ``indices`` into the training set of ``n`` samples, ``batch``
    class labels (or soft targets). Returns the indices (long, on the CPU), the labels and the
    batch size."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"logits must be a [batch, classes] tensor; got {shape}")
    batch, found = logits.shape
    if found != classes:
        raise ValueError(f"logits have {found} classes; the model gave {classes} when the search checked it")
    idx = torch.as_tensor(indices)
    if idx.dim() != 1 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
        raise TypeError(f"indices must be a 1-d integer tensor of sample positions; got {idx.dtype} of shape {tuple(idx.shape)}")
    if idx.numel() != batch:
        raise ValueError(f"{idx.numel()} indices for {batch} logits: report the indices of the batch the logits came from")
    target = torch.as_tensor(targets)
    if target.dim() == 2 and target.shape == logits.shape:
        target = target.argmax(1)
    if target.dim() != 1 or target.numel() != batch or target.dtype.is_floating_point:
        raise ValueError(
            f"targets must be {batch} class labels (or a [{batch}, {found}] soft target); got "
            f"{target.dtype} of shape {tuple(target.shape)}"
        )
    cpu = idx.detach().long().cpu()
    if batch and (int(cpu.min()) < 0 or int(cpu.max()) >= n):
        bad = int(cpu.min()) if int(cpu.min()) < 0 else int(cpu.max())
        raise ValueError(
            f"index {bad} is outside the training set (0..{n - 1}): report positions in the search's "
            f"train_data (batches of search.loader() or IndexedDataset(train_set) carry them)"
        )
    return cpu, target, int(batch)
