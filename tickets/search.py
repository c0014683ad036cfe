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
import itertools
import json
import logging
import math
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from tickets import distributed as _dist, methods
from tickets.rewind import enforce_masks, rewind as rewind_weights, snapshot
from tickets.sampler import IndexedDataset, PrACSampler, dataset_of, targets_of
from tickets.selection import prunable_parameters
from tickets.stats import SampleStats, SelectionRule, disagreement, predict, select
from tickets.ticket import Ticket, atomic_save
from tickets.training import (
    Schedule, _load_state, _state_copy, make_schedule, parse_step, resolve_channels_last, resolve_precision,
)

__all__ = [
    "TicketSearch", "Round", "Pruning", "PrACOptions", "Runtime", "EarlyBird", "RunInterrupted", "load_prac_sets",
]

log = logging.getLogger("tickets")

STATE_FORMAT = "torch-tickets/imp-run"
STATE_VERSION = 1


class RunInterrupted(RuntimeError):
    """Raised by callbacks to stop a run on purpose (a rerun with the same checkpoint_dir resumes)."""


# ---------------------------------------------------------------------- early-bird
class EarlyBird:
    """Early-bird stop of a round: the mask that pruning would give has stopped moving.

    After each epoch, compute the mask that pruning ``amount`` more of the surviving weights
    (global magnitude) would give, and its Hamming distance to the previous epoch's mask
    divided by the number of surviving weights. Keep the last ``window`` distances; stop when
    their maximum falls below ``eps``. The round's mask is then taken from that epoch's weights.

    Args:
        eps: the distance threshold (0.08 in the PrAC paper).
        window: how many consecutive distances must all be below ``eps`` (5 in the paper).
        amount: the fraction pruned for the comparison; None = ``tickets.prune``'s ``amount``.
    """

    def __init__(self, eps: float = 0.08, window: int = 5, amount: float | None = None) -> None:
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1); got {eps!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1; got {window!r}")
        if amount is not None and not 0.0 < amount < 1.0:
            raise ValueError(f"amount must be in (0, 1) or None; got {amount!r}")
        self.eps, self.window, self.amount = float(eps), window, amount
        self.parameters: list[tuple[nn.Module, str]] = []
        self._previous: torch.Tensor | None = None
        self.distances: list[float] = []

    def bind(self, parameters: list[tuple[nn.Module, str]], amount: float) -> EarlyBird:
        """A fresh copy for one round over ``parameters`` (``amount`` unless set)."""
        bound = EarlyBird(self.eps, self.window, self.amount if self.amount is not None else amount)
        bound.parameters = parameters
        return bound

    @torch.no_grad()
    def _next_mask(self) -> torch.Tensor:
        scores = []
        for module, name in self.parameters:
            orig = methods._original(module, name).detach()
            keep = methods._current_mask(module, name) if methods.is_pruned_tensor(module, name) else torch.ones_like(orig, dtype=torch.bool)
            scores.append(orig.abs()[keep.bool()].flatten().float().cpu())
        flat = torch.cat(scores)
        drop = int(round(float(self.amount or 0.2) * flat.numel()))
        order = torch.sort(flat, stable=True).indices
        mask = torch.ones(flat.numel(), dtype=torch.bool)
        mask[order[:drop]] = False
        return mask

    def __call__(self, model: nn.Module, epoch: int) -> bool:
        mask = self._next_mask()
        if self._previous is not None:
            self.distances.append(float((mask != self._previous).sum()) / mask.numel())
            self.distances = self.distances[-self.window:]
        self._previous = mask
        return len(self.distances) == self.window and max(self.distances) < self.eps

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self._previous, "distances": list(self.distances)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._previous = state["previous"]
        self.distances = list(state["distances"])

    def __repr__(self) -> str:
        return f"EarlyBird(eps={self.eps}, window={self.window}, amount={self.amount})"


# ---------------------------------------------------------------------- checks
def _is_label(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, torch.Tensor) and value.dim() == 0 and not value.dtype.is_floating_point


def _check_labelled(dataset: Any, argument: str) -> None:
    if dataset is None or isinstance(dataset, DataLoader):
        return
    if not isinstance(dataset, Dataset):
        return  # an iterable of batches: checked when used
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{argument} must be a map-style Dataset with a length; got {type(dataset).__name__}") from None
    if size == 0:
        raise ValueError(f"{argument} is empty")
    item = dataset[0]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise ValueError(
            f"{argument} ({type(dataset).__name__}) has no labels: its items are {type(item).__name__}, "
            f"not (input, target) pairs; ticket finding needs a labelled classification data set"
        )
    if not _is_label(item[1]):
        raise ValueError(
            f"{argument} ({type(dataset).__name__}) item 0 has target {item[1]!r}: expected an integer "
            f"class label (int or 0-d integer tensor)"
        )


@torch.no_grad()
def _check_model_output(model: nn.Module, dataset: Dataset, device: torch.device) -> int:
    """Run one tiny batch in eval mode; return the number of classes."""
    items = [dataset[i] for i in range(min(2, len(dataset)))]  # type: ignore[arg-type]
    x = torch.stack([torch.as_tensor(it[0]) for it in items]).to(device)
    was = model.training
    model.eval()
    try:
        out = model(x)
    except Exception as e:
        raise ValueError(f"the model failed on a batch of the training data (inputs of shape {tuple(x.shape)}): {e}") from e
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model's output for a batch of {x.shape[0]} samples is {shape}; expected logits of shape "
            f"[{x.shape[0]}, classes] (a classification model)"
        )
    classes = int(out.shape[1])
    targets = targets_of(dataset)
    labels = targets if targets is not None else torch.tensor([int(it[1]) for it in items])
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise ValueError(
            f"the training data has label {high if high >= classes else low} but the model outputs {classes} "
            f"classes (valid labels 0..{classes - 1}): wrong num_classes for this data set?"
        )
    return classes


def _rewind_point(rewind_to: int | str, spe_full: int, total_full: int) -> int:
    if isinstance(rewind_to, str) and rewind_to.strip().lower() in ("init", "initialization"):
        return 0
    step = parse_step(rewind_to, spe_full, "rewind_to")
    if step >= total_full:
        raise ValueError(
            f"rewind_to={rewind_to!r} is step {step}, at or after the end of round 0 ({total_full} steps): "
            f"rewind to an early point, e.g. '3ep' or 500"
        )
    return step


def _time_ratio(sched: Schedule, n: int, set_size: int, min_step_fraction: float) -> tuple[float, bool]:
    """The schedule ratio of a PrAC round on ``set_size`` of ``n`` samples, and whether the
    small-set floor raised it.

    The paper's reduced schedule runs ``int(E * r)`` epochs of ``r * N`` samples (about
    ``r**2`` of a full round's steps). The floor raises the epochs (never above ``E``) so
    that the round takes at least ``min_step_fraction`` of a full round's steps.
    """
    ratio = set_size / n
    plain = max(1, int(sched.epochs * ratio + 1e-9))
    needed = math.ceil(min_step_fraction * sched.total_steps(n) / sched.steps_per_epoch(set_size) - 1e-9)
    epochs = min(sched.epochs, max(plain, needed))
    if epochs <= plain:
        return ratio, False
    return epochs / sched.epochs, True


def _qualified(model: nn.Module, parameters: list[tuple[nn.Module, str]]) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for module, name in parameters:
        if id(module) not in names:
            raise ValueError(f"parameters holds a {type(module).__name__} that is not a module of the model")
        prefix = names[id(module)]
        out.append(f"{prefix}.{name}" if prefix else name)
    return out


def _current_masks(parameters: list[tuple[nn.Module, str]], names: list[str]) -> dict[str, torch.Tensor]:
    found = {}
    for (module, name), q in zip(parameters, names):
        if methods.is_pruned_tensor(module, name):
            found[q] = methods._current_mask(module, name).detach().bool().cpu().clone()
        else:
            found[q] = torch.ones_like(methods._original(module, name), dtype=torch.bool, device="cpu")
    return found


def _sparsity(found: Mapping[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in found.values())
    return 1.0 - sum(int(m.sum()) for m in found.values()) / total


def load_prac_sets(checkpoint_dir: str | Path) -> list[torch.Tensor]:
    """The PrAC set of every round of a :func:`prune` run saved in ``checkpoint_dir``.

    ``sets[k]`` is the set round ``k`` trained on (``sets[0]`` = all samples). Pass them to
    :meth:`tickets.PrACSampler.replay` to reuse them for another architecture.
    """
    path = Path(checkpoint_dir) / "prac_sets.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no PrAC sets in {str(checkpoint_dir)!r} (expected {path.name} written by tickets.prune)")
    sets = torch.load(path, map_location="cpu", weights_only=True)
    return [sets[k] for k in sorted(sets)]


# ---------------------------------------------------------------------- the run
@dataclass
class _Run:
    """Mutable state of a search, checkpointed between epochs and rounds."""

    round: int = 0
    phase: Literal["start", "train", "done"] = "start"
    model: dict[str, torch.Tensor] | None = None
    masks: dict[str, torch.Tensor] | None = None
    trainer: dict[str, Any] | None = None
    rewind_state: dict[str, torch.Tensor] | None = None
    round_start: dict[str, torch.Tensor] | None = None
    dense_predictions: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    sampler: dict[str, Any] | None = None
    sampler_generator: torch.Tensor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    sets: dict[int, torch.Tensor] = field(default_factory=dict)
    extra_wall: float = 0.0


def _save_run(run: _Run, fingerprint: str, directory: Path) -> None:
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, "fingerprint": fingerprint,
               **{k: getattr(run, k) for k in run.__dataclass_fields__}}
    payload["history"] = json.dumps(run.history)
    atomic_save(payload, directory / "state.pt")


def _load_run(directory: Path, fingerprint: str) -> _Run | None:
    path = directory / "state.pt"
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    except Exception as e:
        raise ValueError(f"{str(path)!r} is not a readable checkpoint of tickets.prune: {e}") from None
    if payload.get("format") != STATE_FORMAT or payload.get("version") != STATE_VERSION:
        raise ValueError(f"{str(path)!r} is not a checkpoint of this version of tickets.prune")
    if payload["fingerprint"] != fingerprint:
        saved, now = json.loads(payload["fingerprint"]), json.loads(fingerprint)
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise ValueError(
            f"checkpoint_dir {str(directory)!r} holds a run with other settings (differing: {diff}); "
            f"rerun with the same arguments to resume, or use another checkpoint_dir"
        )
    payload["history"] = json.loads(payload["history"])
    return _Run(**{k: payload[k] for k in _Run.__dataclass_fields__})


def _apply_masks(parameters: list[tuple[nn.Module, str]], names: list[str], found: Mapping[str, torch.Tensor]) -> None:
    for (module, name), q in zip(parameters, names):
        mask = found[q]
        if methods.is_pruned_tensor(module, name):
            if not torch.equal(methods._current_mask(module, name).bool().cpu(), mask):
                raise ValueError(f"{q!r} of the model is already pruned with another mask: pass a fresh model to resume")
        else:
            methods.FixedMask.apply(module, name, mask)


# ---------------------------------------------------------------------- options
_REWIND_KINDS = ("weights", "lr")


@dataclass(frozen=True)
class Pruning:
    """What to prune after each round, and what to rewind to.

    Args:
        amount: fraction of the surviving weights pruned after each round (0.2 = 20%).
        rewind_to: the rewind point in round 0: ``0``/``"init"`` (the original LTH), an
            optimizer step (``500``, ``"500it"``) or epochs (``"3ep"``, late rewinding).
        rewind: ``"weights"`` resets the surviving weights (and normalization statistics) to
            the rewind point and the schedule to that step; ``"lr"`` (learning-rate rewinding)
            keeps the trained weights and only restarts the schedule at ``rewind_to``.
        parameters: ``(module, name)`` pairs to prune; None = :func:`tickets.prunable_parameters`
            (conv and linear layers; the classifier and the stem stay dense).
        early_bird: True or an :class:`EarlyBird` to stop rounds >= 1 when the mask stops
            moving (round 0 always runs to the end).
    """

    amount: float = 0.2
    rewind_to: int | str = 0
    rewind: Literal["weights", "lr"] = "weights"
    parameters: Sequence[tuple[nn.Module, str]] | None = field(default=None, compare=False, repr=False)
    early_bird: bool | EarlyBird = False

    def __post_init__(self) -> None:
        amount = self.amount
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 < float(amount) < 1.0:
            raise ValueError(f"amount must be a fraction of the surviving weights in (0, 1), e.g. 0.2; got {amount!r}")
        if self.rewind not in _REWIND_KINDS:
            raise ValueError(f"rewind must be 'weights' (rewind weights and schedule) or 'lr' (schedule only); got {self.rewind!r}")
        if isinstance(self.rewind_to, bool) or not isinstance(self.rewind_to, (int, str)):
            raise TypeError(f"rewind_to must be a step (int), '500it', '3ep' or 'init'; got {self.rewind_to!r}")
        if not isinstance(self.early_bird, (bool, EarlyBird)):
            raise TypeError(f"early_bird must be True/False or a tickets.EarlyBird; got {self.early_bird!r}")
        if self.parameters is not None:
            pairs = tuple(self.parameters)
            for pair in pairs:
                if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], nn.Module) and isinstance(pair[1], str)):
                    raise TypeError(f"parameters must hold (module, name) pairs; got {pair!r}")
            object.__setattr__(self, "parameters", pairs)


@dataclass(frozen=True)
class PrACOptions:
    """How PrAC rounds pick their sets and scale their schedule (ignored for vanilla IMP).

    Args:
        selection: how the next set is chosen (:class:`tickets.stats.SelectionRule`); None =
            the paper's rule (hard to memorize ∪ dense/pruned disagreement).
        scale_schedule: scale a round's schedule by ``r = |PrAC| / N`` (the paper); False
            trains every round for the full number of epochs.
        min_step_fraction: the small-set safeguard: a PrAC round trains at least this
            fraction of a full round's optimizer steps (0 disables it).
    """

    selection: SelectionRule | None = None
    scale_schedule: bool = True
    min_step_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.selection is not None and not isinstance(self.selection, SelectionRule):
            raise TypeError(f"selection must be a tickets.SelectionRule or None; got {type(self.selection).__name__}")
        value = self.min_step_fraction
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"min_step_fraction must be a fraction of a full round's steps in [0, 1], e.g. 0.1; got {value!r}")


@dataclass(frozen=True)
class Runtime:
    """Where and how the engine runs (none of it changes which ticket is found, except
    through floating-point rounding).

    Args:
        device: where to train; None = the model's device.
        precision: ``"auto"`` (bf16 autocast where the CPU or GPU has native bf16, fp16 on
            older GPUs, fp32 otherwise), ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        amp: the older switch (True = mixed precision, False = fp32); ``precision`` wins.
        channels_last: memory format; None = the rule of :func:`tickets.resolve_channels_last`.
        compile: ``torch.compile`` the training forward.
        num_workers, loader_kwargs: DataLoader options (workers, ``persistent_workers``...).
        quiet: no progress bars and no per-round summary lines.
    """

    device: torch.device | str | None = None
    precision: str | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    num_workers: int = 0
    loader_kwargs: Mapping[str, Any] | None = field(default=None, compare=False)
    quiet: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0; got {self.num_workers!r}")
        if self.loader_kwargs is not None and not isinstance(self.loader_kwargs, Mapping):
            raise TypeError(f"loader_kwargs must be a mapping of DataLoader arguments; got {type(self.loader_kwargs).__name__}")


_GROUPS: dict[str, type] = {"pruning": Pruning, "prac": PrACOptions, "runtime": Runtime}
_FIELDS = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in _GROUPS.items()}
_SCHEDULE_KEYWORDS = {f.name for f in dataclasses.fields(Schedule)} | {"lr_schedule", "warmup"}


def resolve_options(
    schedule: Schedule | Mapping[str, Any] | None = None,
    pruning: Pruning | None = None,
    prac: PrACOptions | None = None,
    runtime: Runtime | None = None,
    **options: Any,
) -> tuple[Schedule, Pruning, PrACOptions, Runtime]:
    """Merge the option groups with loose keywords (the 0.1 form: ``amount=0.2, epochs=30``).

    Each keyword goes to the group that owns the field and overrides it; ``None`` means "not
    given". An unknown keyword is a ``TypeError`` listing the valid ones.
    """
    given = {"pruning": pruning, "prac": prac, "runtime": runtime}
    for name, value in given.items():
        if value is not None and not isinstance(value, _GROUPS[name]):
            raise TypeError(f"{name} must be a tickets.{_GROUPS[name].__name__}; got {type(value).__name__}")
    changes: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
    schedule_kwargs: dict[str, Any] = {}
    unknown = []
    for key, value in options.items():
        owner = next((name for name, fields in _FIELDS.items() if key in fields), None)
        if owner is not None:
            if value is not None:
                changes[owner][key] = value
        elif key in _SCHEDULE_KEYWORDS:
            schedule_kwargs[key] = value
        else:
            unknown.append(key)
    if unknown:
        valid = sorted(_SCHEDULE_KEYWORDS | set().union(*_FIELDS.values()))
        raise TypeError(f"unknown argument(s) {sorted(unknown)}; valid option keywords: {valid}")
    groups = []
    for name, cls in _GROUPS.items():
        base = given[name] or cls()
        groups.append(dataclasses.replace(base, **changes[name]) if changes[name] else base)
    sched = make_schedule(schedule, **schedule_kwargs)
    return (sched, *groups)  # type: ignore[return-value]


# ---------------------------------------------------------------------- the search
class _RoundSampler(Sampler[int]):
    """The search's sampler cut to the open round's current epoch (see :meth:`TicketSearch.loader`)."""

    def __init__(self, search: TicketSearch) -> None:
        self.search = search

        self.source: Sampler[int] = search.sampler
        if search.world_size > 1:  # this rank's share of every epoch
            self.source = _dist.ShardSampler(search.sampler, search.rank, search.world_size)

    def _limit(self) -> int | None:
        rnd = self.search._open
        if rnd is None:
            return None
        left = min(rnd.steps_per_epoch - rnd.step % rnd.steps_per_epoch, rnd.total_steps - rnd.step)
        return max(0, left) * self.search._rank_batch if not rnd.stopped else 0

    def __iter__(self) -> Iterator[int]:
        limit = self._limit()
        order = iter(self.source)
        return order if limit is None else itertools.islice(order, limit)

    def __len__(self) -> int:
        size = len(self.source)  # type: ignore[arg-type]
        limit = self._limit()
        return size if limit is None else min(size, limit)

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the round sets its sampler's epoch (frameworks call this with their own count)."""


class Round:
    """One round of a :class:`TicketSearch`: what to train, for how long, and the reports.

    Made by :meth:`TicketSearch.begin_round`; closed by :meth:`TicketSearch.end_round`.

    Attributes:
        index: the round (0 = the dense training on the full data).
        schedule: the round's :class:`Schedule` (a PrAC round's is scaled by its set size).
        sampler: the search's sampler; it yields the current set's indices.
        indices: the current set (sorted indices into the training set).
        set_size, fraction: ``len(indices)`` and ``set_size / len(train_set)``.
        steps_per_epoch, total_steps: of the round's schedule over the current set.
        start_step: where the round starts in its schedule (after a rewind, not 0).
        step: the schedule position now (``start_step`` + the steps reported).
        steps, samples: optimizer steps and samples reported in this round.
        stats: the round's :class:`tickets.SampleStats` (None unless the sampler is an
            adaptive :class:`PrACSampler`).
        stopped: the early-bird stop ended the round.
        log: one dict per :meth:`end_epoch`.
    """

    def __init__(self, search: TicketSearch, index: int, schedule: Schedule, start_step: int,
                 set_size: int, floored: bool, stats: SampleStats | None) -> None:
        self.search = search
        self.index = index
        self.schedule = schedule
        self.set_size = set_size
        self.fraction = set_size / search.num_samples
        self.floored = floored
        self.steps_per_epoch = schedule.steps_per_epoch(set_size)
        self.total_steps = schedule.total_steps(set_size)
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
            ValueError: the optimizer of an earlier round, one that already has state, or one
                that does not train a pruned tensor of the model.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
        search = self.search
        if optimizer in search._used_optimizers:
            raise ValueError(
                f"round {self.index} got the optimizer of an earlier round: create a fresh optimizer (and "
                f"scheduler) after begin_round() in every round; its momentum/moment state belongs to weights "
                f"that were pruned and rewound"
            )
        if len(optimizer.state) > 0:
            raise ValueError(
                f"the optimizer already holds state (momentum or moments) for {len(optimizer.state)} tensors: "
                f"create a fresh optimizer after begin_round() (or clear optimizer.state) for round {self.index}"
            )
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for (module, name), q in zip(search.parameters, search.names):
            tensor = methods._original(module, name)
            if id(tensor) not in trained:
                raise ValueError(
                    f"the optimizer does not train {q!r}, a tensor being pruned: build it over "
                    f"model.parameters() of the model given to the search"
                )
        search._used_optimizers.add(optimizer)
        self._optimizer = weakref.ref(optimizer)

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
        round's end."""
        left = min(self.steps_per_epoch - self.step % self.steps_per_epoch, self.total_steps - self.step)
        if left <= 0 or self.stopped:
            return
        for i, batch in enumerate(loader):
            yield batch
            if i + 1 >= left:
                break

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
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"logits must be a [batch, classes] tensor; got {shape}")
        batch, classes = logits.shape
        if classes != search.classes:
            raise ValueError(f"logits have {classes} classes; the model gave {search.classes} when the search checked it")
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
                f"targets must be {batch} class labels (or a [{batch}, {classes}] soft target); got "
                f"{target.dtype} of shape {tuple(target.shape)}"
            )
        cpu = idx.detach().long().cpu()
        n = search.num_samples
        if batch and (int(cpu.min()) < 0 or int(cpu.max()) >= n):
            bad = int(cpu.min()) if int(cpu.min()) < 0 else int(cpu.max())
            raise ValueError(
                f"index {bad} is outside the training set (0..{n - 1}): report positions in the search's "
                f"train_data (batches of search.loader() or IndexedDataset(train_set) carry them)"
            )
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
            self.stats.record(cpu.to(self.stats.device), correct.to(self.stats.device))
        enforce_masks(search.model)
        self.steps += 1
        self.samples += batch
        self._epoch_steps += 1
        self.step += 1
        search._stepped(self)

    def end_epoch(self, val_acc: float | None = None, val_loss: float | None = None, **metrics: Any) -> bool:
        """Close an epoch; returns True when the round should stop (the early-bird test).

        Args:
            val_acc: the epoch's validation accuracy in [0, 1] (optional): the round then keeps
                its best-validation weights, as the engine does, and :meth:`restore_best` or
                :meth:`TicketSearch.end_round` loads them.
            val_loss: the matching loss (recorded).
            metrics: other JSON-able numbers, recorded in :attr:`log`.
        """
        if self.closed:
            raise RuntimeError(f"round {self.index} is closed")
        if self._epoch_steps == 0:
            raise RuntimeError(f"round {self.index}: end_epoch() without a reported step since the last one")
        if hasattr(self.stats, "flush"):
            self.stats.flush()  # type: ignore[union-attr]  # the epoch's statistics of every rank
        _dist.broadcast_buffers(self.search.model)  # every rank evaluates with rank 0's buffers
        entry: dict[str, Any] = {"epoch": (self.step - 1) // self.steps_per_epoch + 1, "step": self.step, **metrics}
        if val_acc is not None:
            val = float(val_acc)
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


class TicketSearch:
    """The state of a lottery-ticket search by IMP (on PrAC sets or on the full data),
    driven one round at a time by any training loop.

    Arguments are those of :func:`tickets.prune` that concern the search (the engine's
    ``eval_data``, ``test_data``, ``loss_fn`` and callbacks are the loop's business): the
    model, a sampler, ``rounds``, and the option groups ``schedule`` (:class:`Schedule`),
    ``pruning`` (:class:`Pruning`), ``prac`` (:class:`PrACOptions`), ``runtime``
    (:class:`Runtime`), or their fields as keywords (``amount=0.2, epochs=30, rewind_to="1ep"``).

    Args:
        model: the dense, untrained model; pruned and rewound in place between rounds.
        sampler: a :class:`PrACSampler` (PrAC IMP), any sampler with a ``data_source``
            (vanilla IMP), or a ``Dataset`` (= ``PrACSampler(dataset, seed=seed)``).
        rounds: trainings in all, round 0 included (>= 1).
        train_data: the training set; default the sampler's ``data_source``.
        train_eval_data: the training split without augmentation, for the disagreement pass.
        checkpoint_dir: where the search is saved after every round (and ``round_<k>.ticket``,
            ``prac_sets.pt``, the final ``ticket.ticket``); a new search with the same
            arguments resumes at the round it was in (a round cut short starts again).
        seed: the sampler's seed when ``sampler`` is a data set, and part of the run's identity.
        meta: extra JSON-able facts for the tickets' ``meta``.

    Raises:
        ValueError / TypeError, before anything runs: as :func:`tickets.prune`.
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
        _engine: bool = False,
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds must be an int >= 1 (round 0 is the dense training); got {rounds!r}")
        sched, pruning, prac, runtime = resolve_options(schedule, pruning, prac, runtime, **options)
        _dist.init_from_env(runtime.device)  # under torchrun without a process group: make one
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {seed!r}")
        if isinstance(sampler, Dataset):
            sampler = PrACSampler(sampler, seed=seed)
        if sampler is None:
            if train_data is None:
                raise ValueError("pass a sampler over the training set (PrACSampler(train_set) or RandomSampler(train_set))")
            sampler = PrACSampler(train_data, seed=seed)
        if train_data is not None and not isinstance(train_data, Dataset):
            raise TypeError(f"train_data must be a map-style Dataset (the loader is built for you); got {type(train_data).__name__}")
        if not isinstance(sampler, Sampler) and not hasattr(sampler, "__iter__"):
            raise TypeError(f"sampler must be a torch Sampler; got {type(sampler).__name__}")
        source = dataset_of(sampler)
        if train_data is None:
            if source is None:
                raise ValueError(f"{type(sampler).__name__} does not say which data set it samples: pass train_data=")
            train_data = source
        elif source is not None and source is not train_data:
            raise ValueError(
                f"the sampler draws from a {type(source).__name__} of {len(source):,} samples, not from train_data "  # type: ignore[arg-type]
                f"({type(train_data).__name__} of {len(train_data):,}): build the sampler over the training set"  # type: ignore[arg-type]
            )
        _check_labelled(train_data, "train_data")
        _check_labelled(train_eval_data, "train_eval_data")
        n = len(train_data)  # type: ignore[arg-type]
        if isinstance(train_eval_data, Dataset) and len(train_eval_data) != n:  # type: ignore[arg-type]
            raise ValueError(f"train_eval_data has {len(train_eval_data):,} samples; train_data has {n:,}: they must be the same split")  # type: ignore[arg-type]
        is_prac = isinstance(sampler, PrACSampler)
        if is_prac and sampler.num_samples != n:  # type: ignore[union-attr]
            raise ValueError(f"the PrACSampler covers {sampler.num_samples:,} samples but train_data has {n:,}")  # type: ignore[union-attr]
        self.rank, self.world_size = _dist.world()
        if self.world_size > 1:
            if sched.batch_size % self.world_size:
                raise ValueError(
                    f"batch_size {sched.batch_size} is the global batch of all {self.world_size} processes: it must be "
                    f"a multiple of the world size"
                )
            if not runtime.quiet and self.rank != 0:
                runtime = dataclasses.replace(runtime, quiet=True)  # progress and summaries from rank 0 only
        self.model, self.sampler, self.train_data, self.train_eval_data = model, sampler, train_data, train_eval_data
        self.rounds, self.seed = rounds, int(seed)
        self.schedule, self.pruning, self.prac, self.runtime = sched, pruning, prac, runtime
        self.is_prac = is_prac
        self.adaptive = is_prac and sampler.adaptive  # type: ignore[union-attr]
        self.num_samples = n
        dev = torch.device(runtime.device) if runtime.device is not None else next(iter(model.parameters()), torch.empty(0)).device
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
        self.rule = prac.selection or SelectionRule()
        bird = pruning.early_bird
        bird_repr = repr(bird if isinstance(bird, EarlyBird) else EarlyBird()) if bird else None
        config = {
            "rounds": rounds, "amount": float(pruning.amount), "schedule": sched.to_dict(), "rewind_to": self.rewind_step,
            "rewind": pruning.rewind, "num_samples": n, "sampler": type(sampler).__name__, "adaptive": self.adaptive,
            "seed": self.seed, "selection": self.rule.to_dict() if self.adaptive else None,
            "scale_schedule": prac.scale_schedule, "early_bird": bird_repr, "parameters": self.names,
            "classes": self.classes, "precision": self.precision,
            "min_step_fraction": float(prac.min_step_fraction) if self.adaptive else None,
        }
        if not _engine:
            config["loop"] = "own"
        if self.world_size > 1:  # a distributed run resumes with the same number of processes
            config["world_size"] = self.world_size
        self.config = config
        self._fingerprint = json.dumps(config, sort_keys=True)
        self.directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self._writer = self.rank == 0  # only rank 0 writes; every rank reads
        if self.directory is not None and self._writer:
            self.directory.mkdir(parents=True, exist_ok=True)
        self._run = (_load_run(self.directory, self._fingerprint) if self.directory is not None else None) or _Run()
        self.meta = {
            "method": "prac-imp" if is_prac else "imp", "rewind": pruning.rewind, "rewind_step": self.rewind_step,
            "rewind_epochs": self.rewind_epochs, "amount": float(pruning.amount), "rounds": rounds, "num_samples": n,
            "classes": self.classes, "schedule": sched.to_dict(), "seed": self.seed,
            "selection": self.rule.to_dict() if self.adaptive else None, **dict(meta or {}),
        }
        self._engine = _engine
        self._open: Round | None = None
        self._used_optimizers: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()
        # ---- restore a saved search
        run = self._run
        if run.masks is not None:
            _apply_masks(pairs, self.names, run.masks)
        if run.model is not None:
            rewind_weights(model, run.model) if methods.pruned_parameters(model) else model.load_state_dict(run.model)
        if run.sampler is not None and is_prac:
            sampler.load_state_dict(run.sampler)  # type: ignore[union-attr]
        generator = getattr(sampler, "generator", None)
        if isinstance(generator, torch.Generator) and run.sampler_generator is not None:
            generator.set_state(run.sampler_generator)
        if self.world_size > 1:  # every rank has read the checkpoint before rank 0 writes the next one
            torch.distributed.barrier()
        if run.phase == "done" and self._writer:
            _finish(run, self.meta, self.directory)

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
        return _ticket(self._run.masks, self._run, self.meta)  # type: ignore[arg-type]

    def loader(self, **kwargs: Any) -> DataLoader:
        """A ``DataLoader`` of ``(input, target, index)`` batches over the training set that
        follows the search: the current set, in the sampler's order for the epoch, cut to the
        open round's epoch (the first epoch after a rewind starts mid-epoch, and the round
        may end mid-epoch), with the schedule's batch size. Build it once; every
        ``iter(loader)`` follows the round at that moment.

        Args:
            kwargs: other ``DataLoader`` arguments (``num_workers``, ``pin_memory``,
                ``persistent_workers``...; with persistent workers the data order is still
                right: the sampler runs in the main process).
        """
        for key in ("sampler", "shuffle", "batch_sampler", "batch_size", "drop_last"):
            if key in kwargs:
                raise TypeError(
                    f"search.loader() sets {key} itself (the search's sampler, the schedule's batch_size "
                    f"{self.schedule.batch_size}); pass DataLoader options such as num_workers"
                )
        return DataLoader(IndexedDataset(self.train_data), batch_size=self._rank_batch,  # type: ignore[arg-type]
                          sampler=_RoundSampler(self), **kwargs)

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
        run, n, k = self._run, self.num_samples, self._run.round
        if run.phase == "start":
            if self.is_prac:
                self.sampler.begin_round(k)  # type: ignore[union-attr]
            run.round_start = snapshot(self.model)
            if k == 0 and self.rewind_step == 0:
                run.rewind_state = run.round_start
            run.masks = _current_masks(self.parameters, self.names) if k > 0 else None
            run.model = _state(self.model)
            run.phase = "train"
            if self.directory is not None:
                run.sets[k] = self.sampler.indices if self.is_prac else torch.arange(n)  # type: ignore[union-attr]
                if self._writer:
                    atomic_save(dict(run.sets), self.directory / "prac_sets.pt")
            self._checkpoint()
        # (a round cut short starts again from its start: __init__ loaded the round's starting weights)
        set_size = len(self.sampler)  # type: ignore[arg-type]
        ratio = set_size / n
        scaled = self.prac.scale_schedule and self.is_prac and ratio < 1.0
        time_ratio, floored = _time_ratio(self.schedule, n, set_size, float(self.prac.min_step_fraction)) if scaled else (1.0, False)
        round_sched = self.schedule.scaled(time_ratio) if scaled else self.schedule
        spe = round_sched.steps_per_epoch(set_size)
        start = 0 if k == 0 else min(int(round(self.rewind_epochs * time_ratio * spe)), round_sched.total_steps(set_size) - 1)
        stats_type = _dist.DistributedStats if self.world_size > 1 else SampleStats
        stats = stats_type(n, self._device()) if self.adaptive else None
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
        kept = rnd.restore_best()
        best = rnd._best if kept is not None else None
        last = rnd.log[-1] if rnd.log else {}
        samples = int(_dist.all_reduce_sum(torch.tensor([float(rnd.samples)], dtype=torch.float64), self._device())[0])
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

    # ------------------------------------------------------------------ internals
    def _device(self) -> torch.device:
        """The engine's device, or for own loops wherever the model is now."""
        if self._engine:
            return self.device
        return next(iter(self.model.parameters()), torch.empty(0, device=self.device)).device

    def _stepped(self, rnd: Round) -> None:
        if rnd.index == 0 and rnd.step == self.rewind_step:
            self._run.rewind_state = snapshot(self.model)

    def _set_mask(self) -> torch.Tensor:
        member = torch.zeros(self.num_samples, dtype=torch.bool)
        member[self.sampler.indices if self.is_prac else torch.arange(self.num_samples)] = True  # type: ignore[union-attr]
        return member

    def _predict(self, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions on the whole training split; under torch.distributed each rank predicts a
        slice and the slices are gathered, so every rank has them all."""
        kwargs = dict(batch_size=max(256, self.schedule.batch_size), num_workers=self.runtime.num_workers,
                      device=self._device(), precision=self.precision, channels_last=self.channels_last)
        if self.world_size > 1 and isinstance(data, Dataset):
            part, _ = _dist.shard_of(data)
            if len(part):  # type: ignore[arg-type]
                preds, targets = predict(self.model, part, **kwargs)  # type: ignore[arg-type]
            else:
                preds = targets = torch.empty(0, dtype=torch.long)
            total = len(data)  # type: ignore[arg-type]
            return _dist.gather_predictions(preds, total), _dist.gather_predictions(targets, total)
        return predict(self.model, data, **kwargs)  # type: ignore[arg-type]

    def _checkpoint(self, trainer: dict[str, Any] | None = None) -> None:
        run = self._run
        run.trainer = trainer
        if self.directory is None or not self._writer:
            return
        run.sampler = self.sampler.state_dict() if self.is_prac else None  # type: ignore[union-attr]
        generator = getattr(self.sampler, "generator", None)
        run.sampler_generator = generator.get_state() if isinstance(generator, torch.Generator) else None
        _save_run(run, self._fingerprint, self.directory)

    def _close(self, rnd: Round, measured: Mapping[str, Any]) -> dict[str, Any]:
        """Everything after a round's training, for the engine and own loops alike."""
        after_started = time.perf_counter()
        run, n, k = self._run, self.num_samples, rnd.index
        round_masks = _current_masks(self.parameters, self.names)
        entry: dict[str, Any] = {
            "round": k,
            "sparsity": _sparsity(round_masks),
            "set_size": rnd.set_size,
            "set_fraction": rnd.fraction,
            "epochs": rnd.schedule.epochs,
            **{key: v for key, v in measured.items() if key != "wall_time_s"},
        }
        if rnd.floored:
            entry["step_floor"] = float(self.prac.min_step_fraction)
        if self.adaptive and rnd.stats is not None:
            entry.update({f"stats_{key}": v for key, v in rnd.stats.summary().items()})
            if k + 1 < self.rounds:
                data = self.train_eval_data if self.train_eval_data is not None else self.train_data
                preds, targets = self._predict(data)
                if k == 0:
                    run.dense_predictions, run.targets = preds, targets
                    disagree = None
                else:
                    disagree = disagreement(run.dense_predictions, preds)  # type: ignore[arg-type]
                chosen = select(rnd.stats.scores(), disagree=disagree, targets=run.targets, rule=self.rule,
                                current=self.sampler.indices)  # type: ignore[union-attr]
                if chosen.info["fallback"]:
                    log.warning("round %d: the PrAC selection was empty; keeping the current set of %d samples", k, rnd.set_size)
                self.sampler.update(chosen.indices, info=chosen.info)  # type: ignore[union-attr]
                entry["next_set"] = dict(chosen.info)
        prev = run.history[-1] if run.history else {"total_steps": 0, "total_samples": 0, "total_wall_time_s": 0.0}
        entry["wall_time_s"] = round(float(measured["wall_time_s"]) + (time.perf_counter() - after_started) + run.extra_wall, 3)
        entry["total_steps"] = prev["total_steps"] + entry["steps"]
        entry["total_samples"] = prev["total_samples"] + entry["samples"]
        entry["total_wall_time_s"] = round(prev["total_wall_time_s"] + entry["wall_time_s"], 3)
        run.history.append(entry)
        ticket_k = _ticket(round_masks, run, self.meta)
        if self.directory is not None and self._writer:
            ticket_k.save(self.directory / f"round_{k}.ticket")
        run.extra_wall = 0.0
        if k + 1 < self.rounds:
            pruning_started = time.perf_counter()
            methods.global_magnitude_prune(self.parameters, float(self.pruning.amount))
            if self.pruning.rewind == "weights":
                rewind_weights(self.model, run.rewind_state)  # type: ignore[arg-type]
            else:
                enforce_masks(self.model)
            run.round, run.phase = k + 1, "start"
            run.extra_wall = time.perf_counter() - pruning_started  # counted in the next round's wall time
        else:
            run.phase = "done"
        run.masks = _current_masks(self.parameters, self.names)
        run.model = _state(self.model)
        if self.world_size > 1:  # one all-reduce: the ranks agree on everything the next round starts from
            _dist.check_identical({
                "masks": _dist.mask_checksum(run.masks),
                "PrAC set": float(_dist.mask_checksum({"set": self._set_mask()})),
                "schedule position": float(entry["end_step"]),
                "steps": float(entry["steps"]),
                "weights": _dist._weight_checksum(self.model),
            }, self._device(), where=f"after round {k}")
        self._checkpoint()
        if run.phase == "done" and self._writer:
            _finish(run, self.meta, self.directory)  # the final ticket exists before callbacks run
        rnd.closed = True
        self._open = None
        opt = rnd._optimizer() if rnd._optimizer is not None else None
        if opt is not None:
            self._used_optimizers.add(opt)
        if not self.runtime.quiet:
            from tqdm.auto import tqdm

            tqdm.write(_summary(entry, n))
        log.info(_summary(entry, n))
        return entry

    def __repr__(self) -> str:
        state = "done" if self.done else f"round {self.round} of {self.rounds}"
        return f"TicketSearch({type(self.model).__name__}, {type(self.sampler).__name__}, {state})"


def _finish(run: _Run, base_meta: Mapping[str, Any], directory: Path | None) -> Ticket:
    """The final ticket, saved as ``ticket.ticket`` in ``directory`` if not there yet."""
    ticket = _ticket(run.masks, run, base_meta)  # type: ignore[arg-type]
    if directory is not None and not (directory / "ticket.ticket").is_file():
        ticket.save(directory / "ticket.ticket")
    return ticket


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _summary(entry: Mapping[str, Any], n: int) -> str:
    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    return (
        f"round {entry['round']}: sparsity {pct(entry['sparsity'])}, set {entry['set_size']:,}/{n:,} "
        f"({pct(entry['set_fraction'])}), {entry['epochs']} epochs, {entry['steps']:,} steps "
        f"(total {entry['total_steps']:,}), val {pct(entry['val_acc'])}, test {pct(entry['test_acc'])}, "
        f"{entry['wall_time_s']:.1f}s"
    )


def _ticket(found: dict[str, torch.Tensor], run: _Run, base_meta: Mapping[str, Any]) -> Ticket:
    """The ticket of the last finished round: its masks, the weights it started from
    (round 0: the rewind point), the history so far."""
    k = run.history[-1]["round"]
    start = run.rewind_state if k == 0 else run.round_start
    state = None
    if start is not None:
        state = {key: (v * found[key].to(v.dtype) if key in found else v) for key, v in start.items()}
    return Ticket(dict(found), state, list(run.history), {**base_meta, "round": k})


