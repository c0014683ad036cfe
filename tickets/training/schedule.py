"""A training schedule: epochs, batch size, learning rate and its decay, the optimizer;
and steps written as ``500``, ``2ep`` or ``2ep10it``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
import torch
from torch import nn
import tickets.data.batching as _batching

__all__ = ['LossFn', 'OptimizerFactory', 'parse_step', 'Schedule', 'CompressedSchedule', 'make_schedule']


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


_STEP_RE = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*ep)?\s*(?:(\d+)\s*it)?\s*$")


def parse_step(value: int | str, steps_per_epoch: int, argument: str = "step") -> int:
    """An optimizer step from ``500``, ``"500it"``, ``"3ep"``, ``"2ep10it"`` or ``"0.5ep"``.

    Args:
        value: the point of the schedule.
        steps_per_epoch: optimizer steps per epoch, to convert epochs.
        argument: the argument's name, for error messages.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{argument} must be an int number of steps or a string like '500it', '3ep', '2ep10it'; got {value!r}")
    if isinstance(value, int):
        steps = value
    else:
        match = _STEP_RE.match(value.lower())
        if not match or not (match.group(1) or match.group(2)):
            raise ValueError(f"{argument}={value!r} is not a step; use an int, '500it', '3ep', '2ep10it' or '0.5ep'")
        epochs = float(match.group(1) or 0)
        steps = int(round(epochs * steps_per_epoch)) + int(match.group(2) or 0)
    if steps < 0:
        raise ValueError(f"{argument} must be >= 0 steps; got {value!r}")
    return steps


@dataclass(frozen=True)
class Schedule:
    """One training run's schedule (frozen; :meth:`replace` and :meth:`scaled` make copies).

    Args:
        epochs: epochs of the whole schedule (a run may start later, at a rewind point).
        batch_size: samples per optimizer step (the last batch of an epoch may be smaller, or
            one larger: a last single sample joins the batch before it; see :mod:`tickets.data.batching`).
        lr: peak learning rate (of SGD, or the base lr every group of ``optimizer`` is scaled from).
        momentum, weight_decay, nesterov: SGD settings (ignored with ``optimizer``).
        milestones: epochs (may be fractional) at which the learning rate is multiplied by
            ``gamma`` (``kind="step"``).
        gamma: the step decay factor.
        warmup_epochs: linear warm-up from ~0 to ``lr`` over this many epochs.
        kind: ``"step"`` (milestones), ``"cosine"`` (to 0 at the end) or ``"constant"``.
        lr_fn: optional ``progress -> factor`` (``progress`` in ``[0, 1)`` of the schedule)
            replacing ``kind``; scale-free, so it also fits scaled PrAC schedules.
        optimizer: optional ``params -> Optimizer`` factory replacing the SGD settings; its
            per-group learning rates are multiplied by the schedule's factor every step.
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    kind: Literal["step", "cosine", "constant"] = "step"
    lr_fn: Callable[[float], float] | None = field(default=None, compare=False)
    optimizer: OptimizerFactory | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an int >= 1; got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {self.batch_size!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr!r}")
        milestones = tuple(float(m) for m in self.milestones)
        if any(m <= 0 for m in milestones) or list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing positive epochs; got {self.milestones!r}")
        object.__setattr__(self, "milestones", milestones)
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0; got {self.warmup_epochs!r}")
        if self.kind not in ("step", "cosine", "constant"):
            raise ValueError(f"kind must be 'step', 'cosine' or 'constant'; got {self.kind!r}")
        if self.optimizer is not None and not callable(self.optimizer):
            raise TypeError(f"optimizer must be a callable params -> torch.optim.Optimizer; got {self.optimizer!r}")

    # ------------------------------------------------------------------ arithmetic
    def steps_per_epoch(self, num_samples: int, world_size: int = 1) -> int:
        """Optimizer steps in one epoch over ``num_samples`` samples: ``ceil(num_samples /
        batch_size)``, or ``num_samples // batch_size`` when the last batch would hold a single
        sample (it joins the batch before it: no train-mode batch of one, see
        :mod:`tickets.data.batching`). ``world_size``: processes sharing each (global) batch under
        ``torch.distributed`` (the rule then applies to each process's share).

        Raises:
            ValueError: fewer than 2 samples (per process): such an epoch cannot be trained.
        """
        return _batching.steps_per_epoch(num_samples, self.batch_size, world_size)

    def total_steps(self, num_samples: int, world_size: int = 1) -> int:
        """Optimizer steps of the whole schedule over ``num_samples`` samples per epoch."""
        return self.total_steps_at(self.steps_per_epoch(num_samples, world_size))

    def total_steps_at(self, steps_per_epoch: int) -> int:
        """Optimizer steps of the whole schedule at ``steps_per_epoch`` steps an epoch
        (``epochs * steps_per_epoch``; a :class:`CompressedSchedule` has its exact count)."""
        return self.epochs * steps_per_epoch

    def compressed(self, steps: int, steps_per_epoch: int, *, start_step: int = 0,
                   run_steps_per_epoch: int | None = None) -> CompressedSchedule:
        """This schedule's learning-rate shape from ``start_step`` to its end, compressed (or
        stretched) into exactly ``steps`` optimizer steps: a :class:`CompressedSchedule`.

        Step ``i`` of the compressed run takes the learning-rate factor of this schedule at
        position ``start_step + (last - start_step) * i / (steps - 1)``, ``last`` being this
        schedule's last step (``epochs * steps_per_epoch - 1``): the first step has the factor
        of ``start_step``, the last step the factor of the schedule's last step, and warm-up,
        milestones or the cosine in between keep their places relative to the span. With
        ``steps == last + 1 - start_step`` the factors are this schedule's from ``start_step``,
        exactly.

        Args:
            steps: optimizer steps of the compressed run (an int >= 1).
            steps_per_epoch: this schedule's optimizer steps per epoch (where its epochs,
                milestones and warm-up fall in steps).
            start_step: the step of this schedule the run starts from (e.g. a rewind point),
                before its last step.
            run_steps_per_epoch: optimizer steps per epoch of the data the compressed run
                trains on (default ``steps_per_epoch``): its ``epochs`` are
                ``ceil(steps / run_steps_per_epoch)``, the last one cut at ``steps``.

        Raises:
            ValueError: ``steps`` or a steps-per-epoch count below 1, or ``start_step`` outside
                this schedule's steps.
        """
        run_spe = steps_per_epoch if run_steps_per_epoch is None else run_steps_per_epoch
        for name, value in (("steps", steps), ("steps_per_epoch", steps_per_epoch), ("run_steps_per_epoch", run_spe)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1; got {value!r}")
        if isinstance(self, CompressedSchedule):
            raise ValueError("the schedule is already compressed: compress its source instead")
        total = self.total_steps_at(steps_per_epoch)
        if isinstance(start_step, bool) or not isinstance(start_step, int) or not 0 <= start_step < total:
            raise ValueError(f"start_step must be a step of the schedule, an int in [0, {total}); got {start_step!r}")
        base = {f.name: getattr(self, f.name) for f in dataclasses.fields(Schedule)}
        base["epochs"] = -(-steps // run_spe)
        return CompressedSchedule(**base, steps=steps, source=self, start_step=start_step,
                                  source_steps_per_epoch=steps_per_epoch)

    def scaled(self, ratio: float) -> Schedule:
        """The reduced PrAC schedule for a set of ``ratio = |PrAC| / N`` of the data.

        ``int(epochs * ratio)`` epochs (at least 1), milestones and warm-up multiplied by
        ``ratio``; everything else unchanged. ``scaled(1.0)`` is the schedule itself.
        """
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1] (|PrAC| / N); got {ratio!r}")
        if ratio == 1.0:
            return self
        return dataclasses.replace(
            self,
            epochs=max(1, int(self.epochs * ratio + 1e-9)),
            milestones=tuple(m * ratio for m in self.milestones),
            warmup_epochs=self.warmup_epochs * ratio,
        )

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """The learning-rate multiplier at optimizer ``step`` (0-based) of this schedule."""
        epoch = step / steps_per_epoch
        warmup_steps = self.warmup_epochs * steps_per_epoch
        factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps >= 1 else 1.0
        if self.lr_fn is not None:
            return factor * float(self.lr_fn(min(1.0, epoch / self.epochs)))
        if self.kind == "step":
            return factor * self.gamma ** sum(1 for m in self.milestones if epoch >= m - 1e-9)
        if self.kind == "cosine":
            return factor * 0.5 * (1.0 + math.cos(math.pi * min(1.0, epoch / self.epochs)))
        return factor

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh optimizer over ``params`` (SGD from the settings, or ``optimizer(params)``)."""
        if self.optimizer is not None:
            made = self.optimizer(params)
            if not isinstance(made, torch.optim.Optimizer):
                raise TypeError(f"optimizer(params) must return a torch.optim.Optimizer; got {type(made).__name__}")
            return made
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
            nesterov=self.nesterov and self.momentum > 0,
        )

    def replace(self, **changes: Any) -> Schedule:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (callables by their repr)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif callable(value):  # a stable name (no memory address), so run fingerprints match across processes
                value = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
            out[f.name] = value
        return out


@dataclass(frozen=True)
class CompressedSchedule(Schedule):
    """A schedule's learning-rate shape, from a start step to its end, compressed (or
    stretched) into an exact number of optimizer steps; made by :meth:`Schedule.compressed`.

    A round with a step budget (``PrACOptions.round_steps``) trains with one: exactly
    :attr:`steps` optimizer steps, in ``epochs = ceil(steps / steps_per_epoch)`` epochs of its
    data (the last one cut at :attr:`steps`), the learning rate following :attr:`source` from
    :attr:`start_step` to its last step. The fields inherited from :class:`Schedule` are
    ``source``'s (batch size, optimizer, learning rate and its shape, which :meth:`lr_factor`
    reads through ``source``), except ``epochs``, the epochs this run touches.

    Attributes:
        steps: optimizer steps of the run.
        source: the uncompressed schedule whose shape is followed.
        start_step: the step of ``source`` that the run's first step takes its factor from.
        source_steps_per_epoch: ``source``'s steps per epoch (where its shape falls in steps).
    """

    steps: int = 1
    source: Schedule | None = None
    start_step: int = 0
    source_steps_per_epoch: int = 1

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.source, Schedule) or isinstance(self.source, CompressedSchedule):
            raise TypeError(f"source must be an uncompressed Schedule; got {type(self.source).__name__}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"steps must be an int >= 1; got {self.steps!r}")

    @property
    def source_end(self) -> int:
        """The step after ``source``'s last one (its total steps)."""
        return self.source.total_steps_at(self.source_steps_per_epoch)  # type: ignore[union-attr]

    def total_steps_at(self, steps_per_epoch: int) -> int:
        """Exactly :attr:`steps`, whatever the epoch length."""
        return self.steps

    def source_position(self, step: float) -> float:
        """The position in ``source`` (a step, possibly fractional) that run step ``step``
        takes its learning-rate factor from; steps outside ``[0, steps)`` are clamped."""
        step = min(max(step, 0), self.steps - 1)
        if self.steps == 1:
            return float(self.start_step)
        return self.start_step + (self.source_end - 1 - self.start_step) * step / (self.steps - 1)

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """The learning-rate multiplier at run ``step``: ``source``'s at :meth:`source_position`
        (``steps_per_epoch``, the run's epoch length, does not change it)."""
        return self.source.lr_factor(self.source_position(step), self.source_steps_per_epoch)  # type: ignore[union-attr,arg-type]

    def scaled(self, ratio: float) -> Schedule:
        raise ValueError("a compressed schedule is not scaled: scale its source, then compress that")

    def compressed_from(self) -> dict[str, Any]:
        """What was compressed, JSON-able: ``source``'s ``epochs`` and ``steps_per_epoch``, and
        the span ``start_step`` .. ``end_step`` (its total steps) mapped onto the run."""
        return {"epochs": self.source.epochs, "steps_per_epoch": self.source_steps_per_epoch,  # type: ignore[union-attr]
                "start_step": self.start_step, "end_step": self.source_end}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``epochs`` and ``steps`` of the run, the batch size and optimizer settings,
        and ``compressed_from`` (``source.to_dict()`` with the span of :meth:`compressed_from`)."""
        source = self.source.to_dict()  # type: ignore[union-attr]
        keep = ("batch_size", "lr", "momentum", "weight_decay", "nesterov", "optimizer")
        return {"epochs": self.epochs, "steps": self.steps, **{k: source[k] for k in keep},
                "compressed_from": {**source, **self.compressed_from()}}

    def __repr__(self) -> str:
        return (f"CompressedSchedule(steps={self.steps}, epochs={self.epochs}, source={self.source!r}, "
                f"start_step={self.start_step}, source_steps_per_epoch={self.source_steps_per_epoch})")


_SCHEDULE_FIELDS = {f.name for f in dataclasses.fields(Schedule)}


def make_schedule(schedule: Schedule | Mapping[str, Any] | None = None, **kwargs: Any) -> Schedule:
    """A :class:`Schedule` from a schedule, a mapping and/or keyword arguments.

    Besides the fields of :class:`Schedule`, ``lr_schedule`` is accepted: a mapping of
    fields (``dict(milestones=[91, 136], gamma=0.1, warmup_epochs=0)``), a kind
    (``"step"``, ``"cosine"``, ``"constant"``) or a callable ``progress -> factor``.
    ``warmup`` is an alias of ``warmup_epochs``.

    Raises:
        TypeError: an unknown keyword (the message lists the valid ones).
    """
    base: dict[str, Any] = {}
    if isinstance(schedule, Schedule):
        base = {f: getattr(schedule, f) for f in _SCHEDULE_FIELDS}
    elif isinstance(schedule, Mapping):
        base = dict(schedule)
    elif schedule is not None:
        raise TypeError(f"schedule must be a Schedule, a mapping or None; got {type(schedule).__name__}")
    base.update({k: v for k, v in kwargs.items() if v is not None})  # None = "not given", keeps the schedule's value
    lr_schedule = base.pop("lr_schedule", None)
    if "warmup" in base:
        base["warmup_epochs"] = base.pop("warmup")
    if isinstance(lr_schedule, Mapping):
        extra = dict(lr_schedule)
        if "warmup" in extra:
            extra["warmup_epochs"] = extra.pop("warmup")
        base.update(extra)
    elif isinstance(lr_schedule, str):
        base["kind"] = lr_schedule
    elif callable(lr_schedule):
        base["lr_fn"] = lr_schedule
    elif lr_schedule is not None:
        raise TypeError(f"lr_schedule must be a mapping, 'step'/'cosine'/'constant' or a callable; got {lr_schedule!r}")
    unknown = sorted(set(base) - _SCHEDULE_FIELDS)
    if unknown:
        raise TypeError(
            f"unknown schedule argument(s) {unknown}; valid: {sorted(_SCHEDULE_FIELDS | {'lr_schedule', 'warmup'})}"
        )
    if "milestones" in base and base["milestones"] is not None:
        base["milestones"] = tuple(base["milestones"])
    return Schedule(**base)
