"""Data sets that carry sample indices, and the facts of a sampler's data set
(which data set, which labels) that the layers above read.
"""

from __future__ import annotations

from typing import Any
import torch
from torch.utils.data import Dataset

__all__ = ['IndexedDataset', 'dataset_of', 'targets_of']


def _seed_for(*parts: int) -> int:
    """A 63-bit seed derived deterministically from integers (stable across processes)."""
    value = 0x9E3779B97F4A7C15
    for p in parts:
        value = (value ^ (int(p) & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        value ^= value >> 31
    return value & 0x7FFFFFFFFFFFFFFF


class IndexedDataset(Dataset):
    """Wrap a ``(input, target)`` data set so that items are ``(input, target, index)``.

    The index is the position in the wrapped data set, returned with the sample by the
    worker that loaded it, so per-sample statistics stay right with ``num_workers > 0``,
    ``persistent_workers`` and prefetching (the loader may run ahead of the training step
    and workers may finish out of order; nothing here depends on that). The default collate
    function turns the indices into a ``LongTensor`` batch.

    Args:
        dataset: a map-style data set whose items are ``(input, target, ...)``.
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, Any, int]:
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise TypeError(
                f"item {index} of {type(self.dataset).__name__} is a {type(item).__name__}, not an "
                f"(input, target) pair: per-sample statistics need labelled data"
            )
        return item[0], item[1], int(index)

    def __repr__(self) -> str:
        return f"IndexedDataset({self.dataset!r})"


def dataset_of(sampler: Any) -> Dataset | None:
    """The data set a sampler draws from (``data_source``), or None if it does not say."""
    for attribute in ("data_source", "dataset"):
        found = getattr(sampler, attribute, None)
        if found is not None:
            return found
    return None


def targets_of(dataset: Any) -> torch.Tensor | None:
    """All labels of ``dataset`` as a ``LongTensor`` if it exposes them cheaply, else None.

    Looks for a ``targets`` attribute (torchvision, :class:`tickets.data.ImageDataset`) and
    follows ``Subset`` indices; None means the labels must be read item by item.
    """
    from torch.utils.data import Subset

    if isinstance(dataset, IndexedDataset):
        return targets_of(dataset.dataset)
    if isinstance(dataset, Subset):
        inner = targets_of(dataset.dataset)
        if inner is None:
            return None
        return inner[torch.as_tensor(list(dataset.indices)).long()]
    targets = getattr(dataset, "targets", None)
    if targets is None:
        tensors = getattr(dataset, "tensors", None)  # TensorDataset
        if isinstance(tensors, tuple) and len(tensors) >= 2:
            targets = tensors[1]
    if targets is None:
        return None
    try:
        t = torch.as_tensor(targets if isinstance(targets, torch.Tensor) else list(targets))
    except (TypeError, ValueError):
        return None
    if t.dim() != 1 or t.dtype.is_floating_point or len(t) != len(dataset):
        return None
    return t.long()
