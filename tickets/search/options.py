"""The option groups of a search (:class:`Pruning`, :class:`PrACOptions`, :class:`Runtime`),
the early-bird stop, and how loose keywords resolve into them.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal
import torch
from torch import nn
import tickets.pruning.methods as methods
from tickets.data.batching import check_loader_kwargs
from tickets.prac.score_rules import Rule, resolve_rule
from tickets.training.schedule import Schedule, make_schedule
from tickets.training.precision import resolve_device

__all__ = ['RunInterrupted', 'EarlyBird', 'Pruning', 'PrACOptions', 'Runtime', 'parse_checkpoint_every', 'resolve_options']


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


# ---------------------------------------------------------------------- options
_REWIND_KINDS = ("weights", "lr")


@dataclass(frozen=True)
class Pruning:
    """What to prune after each round, and what to rewind to.

    Args:
        amount: fraction of the surviving weights pruned after each round (0.2 = 20%), a
            float in (0, 1); not a count (unlike the int ``amount`` of one pruning step,
            :func:`tickets.global_magnitude_prune`). ``rounds=R`` ends at sparsity
            ``1 - (1 - amount) ** (R - 1)``.
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
        if isinstance(amount, int) and not isinstance(amount, bool):
            raise ValueError(
                f"amount is the fraction of the surviving weights pruned after each round, a float in (0, 1), "
                f"e.g. 0.2; got the int {amount!r}: a count is not accepted here, since each round prunes a share of "
                f"the weights that survive (a count of weights is for one pruning step, e.g. "
                f"tickets.global_magnitude_prune(params, amount={amount!r}))"
            )
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
    """How PrAC rounds pick their sets and scale their schedule, and the rounds' step budgets.

    Args:
        selection: how the next set is chosen: a rule name (``"paper"``, ``"el2n"``,
            ``"easiest"``, ``"forgetting"``, ``"random"``, ``"budget"``) or a rule object
            (:class:`tickets.SelectionRule`, :class:`tickets.ScoreRule`,
            :class:`tickets.BudgetRule`, :class:`tickets.RandomRule`), stored as the object;
            None = the sampler's ``selection``, else the paper's rule (hard to memorize ∪
            dense/pruned disagreement). PrAC only; see ``docs/prac.md``.
        scale_schedule: scale a round's schedule by ``r = |PrAC| / N`` (the paper); False
            trains every round for the full number of epochs. PrAC only.
        min_step_fraction: the small-set safeguard: a PrAC round trains at least this
            fraction of a full round's optimizer steps (0 disables it). PrAC only.
        round_steps: step budgets, for any sampler (full data included): None (default), or
            ``{round k >= 1: optimizer steps}`` (a sequence works too: entry ``k`` for round
            ``k``, entry 0 None, None = no budget). Round ``k`` then trains exactly that many
            steps on the sampler's current set, from its rewind point, with the round's
            schedule (the one it would have had) from the rewind point to its end compressed
            into those steps (:meth:`tickets.Schedule.compressed`); the floor does not apply.
            Budgets equal to another search's ``history[k]["steps"]`` give a compute-matched
            search. Stored as a ``dict``; part of the run's fingerprint.
    """

    selection: Rule | str | None = None
    scale_schedule: bool = True
    min_step_fraction: float = 0.1
    round_steps: Mapping[int, int] | Sequence[int | None] | None = None

    def __post_init__(self) -> None:
        if self.selection is not None:  # a name becomes its rule; a ValueError/TypeError lists the valid ones
            object.__setattr__(self, "selection", resolve_rule(self.selection))
        value = self.min_step_fraction
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"min_step_fraction must be a fraction of a full round's steps in [0, 1], e.g. 0.1; got {value!r}")
        object.__setattr__(self, "round_steps", _round_steps(self.round_steps))

    def budget(self, k: int) -> int | None:
        """Round ``k``'s step budget (``round_steps``), or None."""
        return None if self.round_steps is None else self.round_steps.get(k)  # type: ignore[union-attr]


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _round_steps(value: Any) -> dict[int, int] | None:
    """``PrACOptions.round_steps`` as ``{round: steps}`` (sorted; None when empty), checked."""
    if value is None:
        return None
    valid = ("None, a mapping {round k >= 1: optimizer steps >= 1} or a sequence whose entry k is round k's "
             "steps (entry 0 None), e.g. {1: 120, 2: 96} or [None, 120, 96]")
    if isinstance(value, Mapping):
        pairs = list(value.items())
    elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) and value[0] is not None:
            raise ValueError(
                f"round_steps[0] is {value[0]!r}: round 0 (the dense training on all the data) has no step budget; "
                f"put None there (the sequence is indexed by round)"
            )
        pairs = [(k, steps) for k, steps in enumerate(value) if steps is not None]
    else:
        raise TypeError(f"round_steps must be {valid}; got {type(value).__name__}")
    budgets: dict[int, int] = {}
    for k, steps in pairs:
        if not _is_int(k) or k < 0:
            raise ValueError(f"round_steps has the key {k!r}: rounds are ints >= 1 (valid: {valid})")
        if k == 0:
            raise ValueError(
                f"round_steps gives round 0 a budget ({steps!r}): round 0 is the dense training on all the data, "
                f"which every search of a comparison shares; budgets are for rounds >= 1"
            )
        if not _is_int(steps) or steps < 1:
            raise ValueError(f"round_steps[{int(k)}] is {steps!r}: a budget is a number of optimizer steps, an int >= 1")
        budgets[int(k)] = int(steps)
    return dict(sorted(budgets.items())) or None


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
        checkpoint_every: how often the engine saves the run within a round (with a
            ``checkpoint_dir``; the end of every round is always saved): ``"5min"`` (the
            default: at the end of an epoch once 5 minutes have passed since the last save;
            also ``"90s"``, ``"2h"``), an int ``N`` (every ``N`` epochs; ``1`` = every epoch)
            or ``"round"`` (round ends only). A resume repeats the epochs since the last save.
        keep_round_tickets: write ``round_<k>.ticket`` (the ticket of every round, the
            sparsity sweep of IMP) into ``checkpoint_dir``; False keeps only the final
            ``ticket.ticket``.
    """

    device: torch.device | str | None = None
    precision: str | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    num_workers: int = 0
    loader_kwargs: Mapping[str, Any] | None = field(default=None, compare=False)
    quiet: bool = False
    checkpoint_every: int | str = "5min"
    keep_round_tickets: bool = True

    def __post_init__(self) -> None:
        parse_checkpoint_every(self.checkpoint_every)
        if not isinstance(self.keep_round_tickets, bool):
            raise TypeError(f"keep_round_tickets must be True or False; got {self.keep_round_tickets!r}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0; got {self.num_workers!r}")
        if self.loader_kwargs is not None and not isinstance(self.loader_kwargs, Mapping):
            raise TypeError(f"loader_kwargs must be a mapping of DataLoader arguments; got {type(self.loader_kwargs).__name__}")
        check_loader_kwargs(self.loader_kwargs)  # drop_last and the engine's own keys are refused, with the reason
        if self.device is not None:
            resolve_device(self.device)  # "gpu" and other non-devices: a clear error before anything runs


_TIME_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}


def parse_checkpoint_every(value: int | str) -> tuple[str, float]:
    """``Runtime.checkpoint_every`` as ``("epochs", N)``, ``("seconds", S)`` or ``("round", 0)``.

    Raises:
        ValueError / TypeError: not an int >= 1, ``"round"`` or a duration such as ``"90s"``,
            ``"5min"``, ``"2h"``.
    """
    valid = "an int N >= 1 (every N epochs), a duration such as '90s', '5min' or '2h', or 'round' (round ends only)"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"checkpoint_every must be {valid}; got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"checkpoint_every must be {valid}; got {value!r}")
        return "epochs", float(value)
    text = value.strip().lower()
    if text == "round":
        return "round", 0.0
    for unit in sorted(_TIME_UNITS, key=len, reverse=True):
        number = text[: -len(unit)].strip() if text.endswith(unit) else None
        if number:
            try:
                seconds = float(number)
            except ValueError:
                break
            if not math.isfinite(seconds) or seconds < 0:
                break
            return "seconds", seconds * _TIME_UNITS[unit]
    raise ValueError(f"checkpoint_every must be {valid}; got {value!r}")


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
