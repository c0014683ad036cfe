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

__all__ = ['LossFn', 'OptimizerFactory', 'parse_step', 'Schedule', 'make_schedule']


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
        return self.epochs * self.steps_per_epoch(num_samples, world_size)

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
