"""How an epoch over a set of samples is cut into training batches: the one rule every path uses.

The rule: consecutive batches of ``batch_size`` samples in the sampler's order, except that a
last batch of exactly **one** sample joins the batch before it (which then holds
``batch_size + 1`` samples). An epoch over ``n`` samples therefore has::

    steps_per_epoch = ceil(n / batch_size)     unless n % batch_size == 1 and n > batch_size,
                    = n // batch_size          then

optimizer steps, every sample of the epoch is trained exactly once, and no train-mode step
sees a batch of one sample (BatchNorm raises "Expected more than 1 value per channel when
training" on one; PrAC sets have sizes the user does not choose, so about one round in
``batch_size`` would hit it). Merging is chosen over dropping the sample because dropping
would leave a member of the PrAC set without its per-sample statistics for the epoch and
change the sample accounting; one sample more in one batch per epoch changes nothing else.

:meth:`tickets.Schedule.steps_per_epoch` (the schedule, its learning-rate factors and every
step count), the engine's loaders (:class:`tickets.data.BatchLoader` and the ``DataLoader`` of
:class:`tickets.training.Trainer`), ``TicketSearch.loader()`` and the Lightning callback all
follow it. ``drop_last`` is refused where the library builds the loader (see
:func:`check_loader_kwargs`): the rule already keeps one-sample batches out, and dropping
samples would break the per-sample statistics and the step counts the schedule is made of.

Under ``torch.distributed`` the rule applies to each process's share: with ``world_size``
processes each one takes ``ceil(n / world_size)`` samples of the epoch
(:class:`tickets.distributed.ShardSampler`) in batches of ``batch_size / world_size``, and a
last per-process batch of one joins the one before it (globally: a last batch of 1 to
``world_size`` samples joins the previous batch). The step count is
``steps_per_epoch(n, batch_size, world_size)``, the same on every process.

An epoch of fewer than two samples (per process) cannot be trained in batches of two or more:
:func:`steps_per_epoch` refuses it with an error naming the set.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
import torch
from torch.utils.data import Sampler

__all__ = ['num_batches', 'batch_sizes', 'steps_per_epoch', 'split_batches', 'EpochBatchSampler', 'check_loader_kwargs']


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
    return batch_size


def num_batches(n: int, batch_size: int) -> int:
    """Batches of an epoch over ``n`` samples under the rule: ``ceil(n / batch_size)``, or
    ``n // batch_size`` when the last batch would hold exactly one sample (``n % batch_size
    == 1``, ``n > batch_size``). ``n == 0`` gives 0, ``n == 1`` gives one batch of one (there is
    no batch to merge it into; :func:`steps_per_epoch` refuses such an epoch for training).

    Args:
        n: samples in the epoch (>= 0).
        batch_size: samples per batch (>= 1).
    """
    _check_batch_size(batch_size)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of samples must be an int >= 0; got {n!r}")
    full, rest = divmod(n, batch_size)
    if rest == 1 and full > 0:
        return full  # the single sample joins the last full batch
    return full + (1 if rest else 0)


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """The size of every batch of an epoch over ``n`` samples, in order (see :func:`num_batches`):
    ``batch_size`` each, the last one ``batch_size + 1`` or the remainder (never 1 when ``n >= 2``
    and ``batch_size >= 2``)."""
    count = num_batches(n, batch_size)
    if count == 0:
        return []
    sizes = [batch_size] * count
    sizes[-1] = n - batch_size * (count - 1)
    return sizes


def steps_per_epoch(n: int, batch_size: int, world_size: int = 1, *, what: str = "the training set") -> int:
    """Optimizer steps of one training epoch over ``n`` samples with a global ``batch_size``
    on ``world_size`` processes (each takes ``ceil(n / world_size)`` samples in batches of
    ``batch_size / world_size``; the rule of :func:`num_batches` on that share).

    Args:
        n: samples in the epoch (the training set, or a round's PrAC set).
        batch_size: the global batch (a multiple of ``world_size``).
        world_size: processes sharing every batch (1 without ``torch.distributed``).
        what: names the set in error messages.

    Raises:
        ValueError: an epoch of fewer than 2 samples (per process), which no batching can
            train without a batch of one sample, or a ``batch_size`` that is not a multiple
            of ``world_size``.
    """
    _check_batch_size(batch_size)
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be an int >= 1; got {world_size!r}")
    if batch_size % world_size:
        raise ValueError(f"batch_size {batch_size} must be a multiple of the world size {world_size} (it is the global batch)")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"the number of samples must be an int >= 0; got {n!r}")
    share = math.ceil(n / world_size)
    if share < 2:
        where = "" if world_size == 1 else f" ({share} per process on {world_size} processes)"
        raise ValueError(
            f"{what} has {n} sample{'s' if n != 1 else ''}{where}: a training epoch needs at least 2 samples"
            f"{' per process' if world_size > 1 else ''}, since a train-mode batch of one sample fails in BatchNorm "
            f"and cannot be merged into another batch; use a larger set"
        )
    return num_batches(share, batch_size // world_size)


def split_batches(order: torch.Tensor | Sequence[int], batch_size: int) -> list[Any]:
    """Cut an epoch's ``order`` (a tensor or sequence of sample positions) into the batches of
    the rule: slices of ``order`` of the sizes :func:`batch_sizes` gives."""
    sizes = batch_sizes(len(order), batch_size)
    out, start = [], 0
    for size in sizes:
        out.append(order[start:start + size])
        start += size
    return out


class EpochBatchSampler(Sampler[list[int]]):
    """A ``batch_sampler`` for ``DataLoader`` that cuts each pass over ``sampler`` by the rule
    (batches of ``batch_size``, a last single sample joined to the batch before it).

    ``DataLoader(dataset, batch_sampler=EpochBatchSampler(sampler, 32))`` is
    ``DataLoader(dataset, batch_size=32, sampler=sampler)`` without the batch of one sample.
    ``set_epoch`` is passed on to ``sampler``.

    Args:
        sampler: the order of one epoch (any sampler or sized iterable of positions).
        batch_size: samples per batch (>= 1).
        max_batches: optional ``() -> int | None``: the epoch stops after that many batches
            (asked at each ``iter``; None = all).
    """

    def __init__(self, sampler: Sampler[int] | Sequence[int], batch_size: int,
                 max_batches: Callable[[], int | None] | None = None) -> None:
        self.source = sampler
        self.batch_size = _check_batch_size(batch_size)
        self.max_batches = max_batches

    def _limit(self) -> int | None:
        return self.max_batches() if self.max_batches is not None else None

    def __iter__(self) -> Iterator[list[int]]:
        limit = self._limit()
        if limit is not None and limit <= 0:
            return
        order = [int(i) for i in self.source]
        for k, batch in enumerate(split_batches(order, self.batch_size)):
            if limit is not None and k >= limit:
                return
            yield batch

    def __len__(self) -> int:
        count = num_batches(len(self.source), self.batch_size)  # type: ignore[arg-type]
        limit = self._limit()
        return count if limit is None else max(0, min(count, limit))

    def set_epoch(self, epoch: int) -> None:
        """Pass the epoch to the underlying sampler (its data order)."""
        if hasattr(self.source, "set_epoch"):
            self.source.set_epoch(epoch)  # type: ignore[union-attr]

    def __repr__(self) -> str:
        return f"EpochBatchSampler({self.source!r}, batch_size={self.batch_size})"


_ENGINE_KEYS = ("sampler", "batch_sampler", "batch_size", "shuffle")


def check_loader_kwargs(kwargs: Mapping[str, Any] | None, where: str = "loader_kwargs") -> dict[str, Any]:
    """Check ``DataLoader`` options for a loader the library builds; returns them as a dict.

    Raises:
        TypeError: ``kwargs`` is not a mapping, or it sets what the library sets itself
            (``sampler``, ``batch_sampler``, ``batch_size``, ``shuffle``).
        ValueError: ``drop_last``, which is not supported: no batch of one sample is ever
            formed (a last single sample joins the batch before it), and dropping samples
            would leave PrAC-set members without statistics and break the epoch's step count
            that the schedule and its learning rate are computed from.
    """
    if kwargs is None:
        return {}
    if not isinstance(kwargs, Mapping):
        raise TypeError(f"{where} must be a mapping of DataLoader arguments; got {type(kwargs).__name__}")
    if "drop_last" in kwargs:
        raise ValueError(
            f"{where}: drop_last={kwargs['drop_last']!r} is not supported. The library never forms a batch of one "
            f"sample (a last single sample joins the batch before it, so BatchNorm models are safe), and dropping "
            f"samples would leave PrAC-set members unseen in an epoch and change the epoch's step count that the "
            f"schedule and its learning rate are computed from. Remove drop_last"
        )
    for key in _ENGINE_KEYS:
        if key in kwargs:
            raise TypeError(
                f"{where} sets {key!r}, which the library sets itself (the search's or trainer's sampler, the "
                f"schedule's batch_size); pass other DataLoader options such as num_workers, pin_memory, "
                f"persistent_workers, prefetch_factor"
            )
    return dict(kwargs)
