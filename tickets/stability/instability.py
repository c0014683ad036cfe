"""Instability: train two copies of a network from the same starting weights with
different SGD noise and measure the error barrier between them.
"""

from __future__ import annotations

import copy
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
import tickets.pruning.methods as methods
from tickets.stability.interpolation import (
    Batches, ErrorBarrier, _as_batches, _check_alphas, _check_count, _check_model, _device_of, _evaluate, _interpolate_many,
)
from tickets.ticket.ticket import Ticket
from tickets.training.loop import train as _train
from tickets.training.schedule import Schedule, make_schedule, parse_step

__all__ = ['Instability', 'TrainFn', 'instability']


@dataclass
class Instability:
    """Result of :func:`instability`: two copies trained from the same start, and their barrier.

    Attributes:
        accuracies: test accuracy (fraction) of the two copies, in the order of ``seeds``.
        barrier: the error barrier between them.
        seeds: the two training seeds.
        rewind_to: the training step the copies started from.
        sparsity: fraction of pruned weights over the pruned tensors (0 for a dense network).
        models: the two trained models (kept only with ``keep_models=True``), else empty.
        histories: whatever the training engine reported for each copy.
    """

    accuracies: tuple[float, float]
    barrier: ErrorBarrier
    seeds: tuple[int, int]
    rewind_to: int
    sparsity: float
    models: tuple[nn.Module, ...] = field(default_factory=tuple, repr=False)
    histories: tuple[Any, ...] = field(default_factory=tuple, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (models left out)."""
        return {
            "accuracies": list(self.accuracies),
            "seeds": list(self.seeds),
            "rewind_to": self.rewind_to,
            "sparsity": self.sparsity,
            "barrier": self.barrier.to_dict(),
        }


class TrainFn(Protocol):
    """A training loop :func:`instability` can use instead of ``tickets.training.train``.

    ``train_fn(model, data, seed=..., start_step=..., stop_step=..., device=..., **schedule)``
    trains ``model`` in place on ``data`` from optimizer step ``start_step`` of the schedule
    (the learning rate at that step, a fresh optimizer) to ``stop_step`` (None: the end),
    drawing the data order and augmentation from ``seed``, keeping pruned weights at zero;
    it returns anything (a history, kept in :attr:`Instability.histories`).
    """

    def __call__(
        self,
        model: nn.Module,
        data: Any,
        *,
        seed: int,
        start_step: int,
        stop_step: int | None,
        device: torch.device | str | None,
        **schedule: Any,
    ) -> Any: ...


def _engine_train(
    model: nn.Module,
    data: Any,
    *,
    seed: int,
    start_step: int,
    stop_step: int | None,
    device: torch.device | str | None,
    **schedule: Any,
) -> Any:
    return _train(model, data, seed=seed, start_step=start_step, stop_step=stop_step, device=device, **schedule)


def _schedule_kwargs(schedule: Any) -> dict[str, Any]:
    """The schedule as trainer keyword arguments: a mapping as it is, a Schedule as ``schedule=``;
    it must leave the arguments instability sets for each copy to it."""
    if isinstance(schedule, Schedule):
        kwargs = {"schedule": schedule}
    elif isinstance(schedule, Mapping):
        kwargs = dict(schedule)
    else:
        raise TypeError(
            f"schedule must be a tickets.training.Schedule or a mapping of trainer keyword arguments "
            f"(epochs=, batch_size=, lr=, milestones=, ...); got {type(schedule).__name__}"
        )
    clash = sorted({"seed", "start_step", "stop_step", "device", "start_epoch"} & set(kwargs))
    if clash:
        raise ValueError(f"schedule must not set {clash}: instability sets them for each copy")
    return kwargs


def _resolve_step(value: int | str, data: Any, schedule: dict[str, Any], engine: bool) -> int:
    """``rewind_to`` in optimizer steps; epochs (``"3ep"``) need the engine's batch arithmetic."""
    if isinstance(value, str) and engine and not value.strip().lower().endswith("it"):
        if isinstance(data, DataLoader):
            per_epoch = max(1, len(data))
        else:
            sched = make_schedule(schedule.get("schedule"), **{k: v for k, v in schedule.items() if k != "schedule"})
            per_epoch = sched.steps_per_epoch(len(data))
        return parse_step(value, per_epoch, "rewind_to")
    return _step(value, "rewind_to")


def _step(value: int | str, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, str)):
        raise TypeError(f"{argument} must be a step count (int, e.g. 500) or a string like '500it'; got {value!r}")
    if isinstance(value, str):
        text = value.strip().lower()
        if not text.endswith("it") or not text[:-2].isdigit():
            raise ValueError(
                f"{argument}={value!r} is not understood with a custom train_fn; pass an optimizer "
                f"step as an int (500) or '500it'"
            )
        value = int(text[:-2])
    if value < 0:
        raise ValueError(f"{argument} must be >= 0 optimizer steps; got {value}")
    return int(value)


def _seeds(seeds: tuple[int, int]) -> tuple[int, int]:
    """The two training seeds as ints; they must be two, and differ."""
    if isinstance(seeds, (str, bytes)) or len(tuple(seeds)) != 2:
        raise ValueError(f"seeds must be two different ints, e.g. (1, 2); got {seeds!r}")
    seed_a, seed_b = (int(s) for s in seeds)
    if seed_a == seed_b:
        raise ValueError(f"seeds must differ (the copies need different SGD noise); got {seeds!r}")
    return seed_a, seed_b


def _starting_model(model_or_ticket: nn.Module | Ticket, model: nn.Module | None) -> nn.Module:
    """A copy holding the starting weights: the model's, or the ticket applied to a copy of ``model``."""
    if not isinstance(model_or_ticket, Ticket):
        return copy.deepcopy(_check_model(model_or_ticket, "model_or_ticket"))
    if model_or_ticket.rewind_state is None:
        raise ValueError("the ticket has no rewind state: instability starts from its rewind weights")
    if model is None:
        raise ValueError("a ticket needs model=: a fresh, unpruned model of the ticket's architecture")
    return model_or_ticket.apply(copy.deepcopy(_check_model(model, "model")))


def _train_copies(
    start: nn.Module, data: Any, train: TrainFn, seeds: tuple[int, int], k: int, from_init: bool,
    device: torch.device, schedule: dict[str, Any],
) -> tuple[list[nn.Module], list[Any]]:
    """The two copies of ``start`` trained from step ``k`` to the end, one per seed (in eval
    mode), and their histories; with ``from_init``, ``start`` is first trained to step ``k``
    with the first seed."""
    if from_init and k > 0:
        train(start, data, seed=seeds[0], start_step=0, stop_step=k, device=device, **schedule)
    copies, histories = [], []
    for seed in seeds:
        twin = copy.deepcopy(start)
        histories.append(train(twin, data, seed=seed, start_step=k, stop_step=None, device=device, **schedule))
        copies.append(twin.eval())
    return copies, histories


def _accuracy(model: nn.Module, data: Batches, device: torch.device, batches: int | None) -> float:
    error, _, _ = _evaluate(model, data, device, batches, F.cross_entropy)
    return 1.0 - error


def _sparsity(model: nn.Module) -> float:
    """Fraction of pruned weights over the pruned tensors of ``model`` (0 when it has none)."""
    found = methods.masks(model)
    if not found:
        return 0.0
    total = sum(m.numel() for m in found.values())
    return 1.0 - sum(int(m.sum()) for m in found.values()) / total


def instability(
    model_or_ticket: nn.Module | Ticket,
    data: Any,
    *,
    rewind_to: int | str,
    seeds: tuple[int, int] = (1, 2),
    schedule: Any,
    test_data: Any,
    train_eval_data: Any,
    model: nn.Module | None = None,
    from_init: bool = False,
    alphas: int | Sequence[float] = 30,
    bn_data: Any = None,
    recompute_bn: bool = True,
    bn_batches: int | None = None,
    eval_batches: int | None = None,
    device: torch.device | str | None = None,
    keep_models: bool = False,
    train_fn: TrainFn | None = None,
) -> Instability:
    """Train two copies from the same weights with different SGD noise; measure their barrier.

    The stability test of Frankle et al. (2020): both copies start from the same weights
    ``W_k`` (a dense network, or a ticket ``m * W_k`` whose copies both keep the mask ``m``),
    at step ``k = rewind_to`` of the schedule, and train to its end with data order and
    augmentation drawn from ``seeds[0]`` and ``seeds[1]``. The result holds both copies' test
    accuracies and the error barrier between them on training and test data
    (:func:`error_barrier`, batch-norm statistics recomputed at every point by default).

    Example::

        ticket = tickets.Ticket.load("r20.ticket")          # rewind state taken at step 500
        result = instability(ticket, train_set, model=create_model("res20s", 10),
                             rewind_to=500, schedule=dict(epochs=160, batch_size=128, lr=0.1,
                                                          milestones=[80, 120]),
                             test_data=test_set, train_eval_data=train_eval_set)
        result.accuracies, result.barrier.test_barrier, result.barrier.stable()

    Args:
        model_or_ticket: a model (dense or pruned) holding the starting weights ``W_k`` (or the
            initialization ``W_0`` with ``from_init=True``), or a :class:`tickets.Ticket` with a
            rewind state, applied to a copy of ``model``. Any architecture (timm,
            torchvision, your own). Not modified.
        data: the training set (with its augmentation), as the trainer takes it.
        rewind_to: the step ``k`` the starting weights belong to: an int number of optimizer
            steps, ``"500it"``, or (with the default trainer) ``"2ep"``, ``"1ep20it"``. The
            schedule resumes at step ``k`` with its learning rate there and a fresh optimizer.
        seeds: the two training seeds (data order and augmentation); must differ.
        schedule: the training schedule, the same for both copies: a
            :class:`tickets.training.Schedule`, or a mapping of trainer keyword arguments
            (``dict(epochs=160, batch_size=128, lr=0.1, milestones=[80, 120])``; any keyword
            of ``tickets.training.train`` except seed, start_step, stop_step and device).
        test_data: test batches (a DataLoader, list of batches or Dataset) for the
            accuracies and the test barrier.
        train_eval_data: training batches without augmentation, for the training barrier
            (and, unless ``bn_data`` is given, to recompute batch-norm statistics on).
        model: for a ticket, a fresh unpruned model of its architecture (copied, not changed).
        from_init: the model holds ``W_0``: train one copy to step ``rewind_to`` first, with
            ``seeds[0]``, and fork the two copies there.
        alphas, bn_data, recompute_bn, bn_batches, eval_batches: as in :func:`error_barrier`
            (``bn_data`` defaults to ``train_eval_data``; ``eval_batches`` also limits the
            accuracy measurement).
        device: where to train and measure; None uses the model's device.
        keep_models: keep the two trained copies in the result.
        train_fn: a training loop following :class:`TrainFn`; None uses
            ``tickets.training.train``.

    Raises:
        ValueError: equal seeds, a ticket without a rewind state or without ``model``, a bad
            ``rewind_to``; the errors of :func:`interpolate`.
    """
    seed_pair = _seeds(seeds)
    schedule = _schedule_kwargs(schedule)
    k = _resolve_step(rewind_to, data, schedule, engine=train_fn is None)
    _check_alphas(alphas)
    eval_batches = _check_count(eval_batches, "eval_batches")
    _check_count(bn_batches, "bn_batches")
    test = _as_batches(test_data, "test_data")
    train_eval = _as_batches(train_eval_data, "train_eval_data")
    start = _starting_model(model_or_ticket, model)
    device = _device_of(start, device)
    start.to(device)
    copies, histories = _train_copies(start, data, train_fn or _engine_train, seed_pair, k, from_init, device, schedule)
    accuracies = (_accuracy(copies[0], test, device, eval_batches), _accuracy(copies[1], test, device, eval_batches))
    curves = _interpolate_many(
        copies[0], copies[1], [train_eval, test], alphas=alphas, bn_data=bn_data if bn_data is not None else train_eval,
        recompute_bn=recompute_bn, bn_batches=bn_batches, eval_batches=eval_batches, loss_fn=None, device=device,
    )
    return Instability(
        accuracies=accuracies,
        barrier=ErrorBarrier(curves[0], curves[1]),
        seeds=seed_pair,
        rewind_to=k,
        sparsity=_sparsity(start),
        models=tuple(copies) if keep_models else (),
        histories=tuple(histories),
    )
