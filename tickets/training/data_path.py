"""The trainer's data path: how the training data becomes the batches of every epoch.

:func:`data_path` takes what :class:`tickets.training.Trainer` was given (a ``DataLoader`` used
as it is, or a ``Dataset`` with an optional sampler) and decides:

* the sampler: the caller's, else a seeded :class:`tickets.PrACSampler` over all samples;
  under ``torch.distributed`` it is wrapped in :class:`tickets.distributed.ShardSampler`
  (each rank takes its share of every epoch) and ``batch_size`` is the global batch;
* the loader: :class:`tickets.data.BatchLoader` (in-memory images, batched with tensor
  operations) when no ``DataLoader`` option asks otherwise, else a ``DataLoader`` over
  :class:`tickets.IndexedDataset` cut by :class:`tickets.data.batching.EpochBatchSampler`;
* the steps per epoch, by the batching rule of :mod:`tickets.data.batching` (the count the
  schedule uses).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
import torch
from torch.utils.data import DataLoader, Dataset, Sampler
import tickets.data.batching as _batching
from tickets import parallel as _dist
from tickets.data.images import batch_loader
from tickets.data.sampling import IndexedDataset
from tickets.prac.sampler import PrACSampler

__all__ = ['DataPath', 'data_path']


@dataclass(frozen=True)
class DataPath:
    """The training data of one run as the trainer iterates it.

    Attributes:
        loader: yields the batches of one epoch per iteration (``(x, y)`` or ``(x, y, idx)``).
        sampler: the sampler the loader draws from (``set_epoch`` and its ``generator`` are
            the trainer's to drive and checkpoint), or None for a caller's loader without one.
        steps_per_epoch: optimizer steps of a full epoch (>= 1).
    """

    loader: Iterable[Any]
    sampler: Any
    steps_per_epoch: int


def data_path(
    data: Dataset | DataLoader,
    batch_size: int,
    *,
    sampler: Sampler[int] | None,
    seed: int,
    world: tuple[int, int] | None,
    num_workers: int,
    loader_kwargs: Mapping[str, Any] | None,
    device: torch.device,
) -> DataPath:
    """Build the loader of ``data`` for batches of ``batch_size`` (see the module's text).

    Args:
        data: a ``DataLoader`` (used as it is: under torch.distributed its sharding is the
            caller's) or a ``Dataset`` of ``(input, target)`` items.
        batch_size: the schedule's batch size (the global batch under torch.distributed).
        sampler: the sampler over ``data``; None = ``PrACSampler(data, seed=seed)``.
        seed: seed of the default sampler.
        world: ``(rank, world_size)`` when training as one rank of a process group, else None.
        num_workers, loader_kwargs: ``DataLoader`` options; with either, no ``BatchLoader``.
        device: the training device (``pin_memory`` on CUDA).
    """
    if isinstance(data, DataLoader):
        return DataPath(data, getattr(data, "sampler", None), max(1, len(data)))
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a Dataset or a DataLoader; got {type(data).__name__}")
    loader_kwargs = _batching.check_loader_kwargs(loader_kwargs)
    if isinstance(sampler, DataLoader):
        raise TypeError("sampler is a DataLoader: pass a Sampler over data (e.g. RandomSampler(data)), or pass "
                        "the DataLoader itself as data")
    chosen: Any = sampler if sampler is not None else PrACSampler(data, seed=seed)
    epoch_size = len(chosen)
    batch, world_size = batch_size, 1
    if world is not None:  # batch_size is the global batch: each rank takes its share of every batch
        rank, world_size = world
        if batch % world_size:
            raise ValueError(
                f"batch_size {batch} is the global batch of all {world_size} processes: it must be a "
                f"multiple of the world size (e.g. {batch - batch % world_size or world_size})"
            )
        batch //= world_size
        chosen = _dist.ShardSampler(chosen, rank, world_size)
    # the batching rule (tickets.data.batching): no batch of one sample, the count the schedule uses
    steps = _batching.steps_per_epoch(
        epoch_size, batch_size, world_size,
        what=f"the training epoch ({type(chosen).__name__} over {type(data).__name__})",
    )
    fast = None if (loader_kwargs or num_workers) else batch_loader(data, batch, chosen)
    if fast is not None:  # in-memory images: batches gathered and augmented with tensor operations
        return DataPath(fast, chosen, steps)
    kwargs = dict(loader_kwargs or {})
    kwargs.setdefault("num_workers", num_workers)
    kwargs.setdefault("pin_memory", device.type == "cuda")
    loader = DataLoader(IndexedDataset(data), batch_sampler=_batching.EpochBatchSampler(chosen, batch), **kwargs)
    return DataPath(loader, chosen, steps)
