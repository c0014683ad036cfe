"""In-memory image data sets and their batched data path (one gather and one batched
augmentation per batch, no worker processes).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset
from tickets.data.batching import num_batches, split_batches

__all__ = ['IMAGE_EXTENSIONS', 'ImageDataset', 'BatchLoader', 'batch_loader']


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


# --------------------------------------------------------------------------- data set
def _read_image(path: str | os.PathLike[str], size: int | None) -> Tensor:
    """Decode an image file to a uint8 RGB CHW tensor, resized to ``size`` if it differs."""
    from PIL import Image

    with Image.open(path) as file:
        image = file.convert("RGB")
        if size is not None and image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


class ImageDataset(Dataset):
    """Labelled images held either decoded in memory or as files read on demand.

    Args:
        images: a uint8 tensor ``N x C x H x W`` (in memory) or a list of N image paths.
        targets: N class indices.
        transform: applied to the uint8 CHW image; returns the model input.
        indices: which of the N samples this data set shows, in order (default: all).
            Views made by :meth:`subset` share the image storage.
        image_size: for path-backed data sets, images of another size are resized to it.

    ``dataset[i]`` is ``(input, target)``; ``dataset.targets`` lists the targets in order.
    """

    def __init__(
        self,
        images: Tensor | Sequence[str | os.PathLike[str]],
        targets: Sequence[int],
        transform: Callable[[Tensor], Tensor] | None = None,
        indices: Sequence[int] | None = None,
        image_size: int | None = None,
    ) -> None:
        if len(images) != len(targets):
            raise ValueError(f"images and targets differ in length: {len(images)} vs {len(targets)}")
        if isinstance(images, Tensor) and (images.dtype != torch.uint8 or images.dim() != 4):
            raise ValueError(f"in-memory images must be a uint8 N x C x H x W tensor, got {images.dtype} {tuple(images.shape)}")
        self._images = images
        self._targets = torch.as_tensor(list(targets), dtype=torch.long)
        self._indices = torch.arange(len(targets)) if indices is None else torch.as_tensor(list(indices), dtype=torch.long)
        self.transform = transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self._indices)

    @property
    def targets(self) -> list[int]:
        """Class index of every sample, in dataset order."""
        return self._targets[self._indices].tolist()

    @property
    def in_memory(self) -> bool:
        return isinstance(self._images, Tensor)

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        j = int(self._indices[i])
        if isinstance(self._images, Tensor):
            image = self._images[j]
        else:
            image = _read_image(self._images[j], self.image_size)
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self._targets[j])

    @property
    def batchable(self) -> bool:
        """True when :meth:`get_batch` works with tensor operations only (in-memory images,
        a transform that has a ``batch`` method, or none)."""
        t = self.transform
        return self.in_memory and (t is None or bool(getattr(t, "batchable", hasattr(t, "batch"))))

    def get_batch(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """The samples at ``positions`` (a LongTensor of positions in this data set) as one
        ``(inputs, targets)`` batch, transformed batch-wise.

        In memory with a batchable transform, this is one gather and a few tensor operations
        (no per-sample Python); otherwise the items are read one by one and stacked.
        """
        positions = torch.as_tensor(positions, dtype=torch.long)
        if positions.numel() and (int(positions.min()) < 0 or int(positions.max()) >= len(self)):
            raise IndexError(f"positions must lie in [0, {len(self)}), got range [{int(positions.min())}, {int(positions.max())}]")
        rows = self._indices[positions]
        if not self.batchable:
            items = [self[int(i)] for i in positions]
            return torch.stack([torch.as_tensor(x) for x, _ in items]), torch.tensor([y for _, y in items])
        images = self._images[rows]  # type: ignore[index]
        if self.transform is not None:
            images = self.transform.batch(images)  # type: ignore[attr-defined]
        return images, self._targets[rows]

    def subset(self, indices: Sequence[int] | Tensor, transform: Callable[[Tensor], Tensor] | None | str = "same") -> ImageDataset:
        """A view of the samples at ``indices`` (positions in this data set), sharing storage.

        ``transform="same"`` keeps this data set's transform; pass another (or ``None``) to change it.
        """
        idx = torch.as_tensor(indices, dtype=torch.long)
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= len(self)):
            raise IndexError(f"subset indices must lie in [0, {len(self)}), got range [{int(idx.min())}, {int(idx.max())}]")
        return ImageDataset(
            self._images,
            self._targets.tolist(),
            self.transform if transform == "same" else transform,  # type: ignore[arg-type]
            indices=self._indices[idx].tolist(),
            image_size=self.image_size,
        )

    def __repr__(self) -> str:
        where = "in memory" if self.in_memory else "on disk"
        return f"ImageDataset({len(self)} images {where}, transform={self.transform!r})"


class BatchLoader:
    """Batches of an in-memory data set made with tensor operations, in a sampler's order.

    Iterating gives ``(inputs, targets, indices)`` batches like a ``DataLoader`` over
    :class:`tickets.data.sampling.IndexedDataset` with the same sampler and batch size would, cut by
    the library's batching rule (:mod:`tickets.data.batching`: the last batch may be smaller, and a
    last single sample joins the batch before it, so no batch holds one sample), but each
    batch is one gather from the decoded uint8 images plus a batched transform
    (:meth:`ImageDataset.get_batch`): no per-sample Python, no worker processes. The sampler
    is iterated once per pass, so ``set_epoch`` and PrAC sets work as with a ``DataLoader``.

    Args:
        dataset: a data set with ``get_batch`` (an in-memory :class:`ImageDataset`).
        batch_size: samples per batch.
        sampler: the order (any iterable of positions with a length); None = 0..N-1 in order.
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, sampler: Sequence[int] | object | None = None) -> None:
        if not hasattr(dataset, "get_batch"):
            raise TypeError(f"BatchLoader needs a data set with get_batch (an in-memory ImageDataset); got {type(dataset).__name__}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {batch_size!r}")
        self.dataset, self.batch_size, self.sampler = dataset, batch_size, sampler

    def __len__(self) -> int:
        n = len(self.sampler) if self.sampler is not None else len(self.dataset)  # type: ignore[arg-type]
        return num_batches(n, self.batch_size)

    def __iter__(self):  # type: ignore[no-untyped-def]
        if self.sampler is None:
            order = torch.arange(len(self.dataset))
        else:
            order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)  # type: ignore[call-overload]
        for chunk in split_batches(order, self.batch_size):
            x, y = self.dataset.get_batch(chunk)
            yield x, y, chunk


def batch_loader(data: object, batch_size: int, sampler: object | None = None) -> BatchLoader | None:
    """A :class:`BatchLoader` over ``data`` when it can be batched with tensor operations
    (an in-memory :class:`ImageDataset` whose transform has a batched form), else None
    (the caller then uses a ``DataLoader``)."""
    if isinstance(data, ImageDataset) and data.batchable:
        return BatchLoader(data, batch_size, sampler)
    return None
