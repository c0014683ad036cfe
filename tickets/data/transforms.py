"""Image transforms that work per sample and per batch (normalization, the CIFAR-style
random crop and flip), and the test for a training set that augments.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import torch
from torch import Tensor

__all__ = ['Normalize', 'Augment', 'random_transform']


# --------------------------------------------------------------------------- transforms
class Normalize:
    """uint8 CHW image -> float32, scaled to [0, 1] and normalized per channel."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32).view(-1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(-1, 1, 1)

    def __call__(self, image: Tensor) -> Tensor:
        return (image.float().div_(255.0) - self.mean) / self.std

    def batch(self, images: Tensor) -> Tensor:
        """The same for a uint8 ``N x C x H x W`` batch, in one tensor operation."""
        scale = (1.0 / (255.0 * self.std)).to(images.device)
        return images.float().mul_(scale).sub_((self.mean / self.std).to(images.device))

    def __repr__(self) -> str:
        return f"Normalize(mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()})"


class Augment:
    """Random crop of ``size`` from the image zero-padded by ``padding``, then a random
    horizontal flip (probability 0.5): the CIFAR / Tiny ImageNet augmentation of the papers.

    Works on uint8 CHW tensors and draws from torch's global generator, so DataLoader
    workers (seeded per worker by PyTorch) give different, reproducible augmentations.
    :meth:`batch` does the same for a whole ``N x C x H x W`` batch with tensor operations
    (each image its own crop offsets and flip), which is how in-memory data sets are
    augmented by the training engine.
    """

    def __init__(self, size: int, padding: int = 4, flip: bool = True) -> None:
        if size < 1 or padding < 0:
            raise ValueError(f"Augment needs size >= 1 and padding >= 0, got size={size}, padding={padding}")
        self.size, self.padding, self.flip = size, padding, flip

    def __call__(self, image: Tensor) -> Tensor:
        p, s = self.padding, self.size
        if p:
            image = torch.nn.functional.pad(image, (p, p, p, p))
        h, w = image.shape[-2:]
        top = int(torch.randint(0, h - s + 1, ()))
        left = int(torch.randint(0, w - s + 1, ()))
        image = image[..., top : top + s, left : left + s]
        if self.flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        return image

    def batch(self, images: Tensor) -> Tensor:
        """Augment a ``N x C x H x W`` batch: an independent crop offset and flip per image.

        Three draws per batch from torch's global generator (tops, lefts, flips), so a
        seeded epoch gives the same augmentation every time.
        """
        n, p, s = images.shape[0], self.padding, self.size
        if p:
            images = torch.nn.functional.pad(images, (p, p, p, p))
        h, w = images.shape[-2:]
        tops = torch.randint(0, h - s + 1, (n,))
        lefts = torch.randint(0, w - s + 1, (n,))
        steps = torch.arange(s)
        rows = (tops[:, None] + steps).to(images.device)  # n x s
        cols = (lefts[:, None] + steps).to(images.device)  # n x s
        if self.flip:
            flips = (torch.rand(n) < 0.5).to(images.device)
            cols = torch.where(flips[:, None], cols.flip(1), cols)
        batch_index = torch.arange(n, device=images.device)[:, None, None]
        # advanced indexing on dims 0, 2, 3 -> n x s x s x C; back to n x C x s x s
        return images[batch_index, :, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2).contiguous()

    def __repr__(self) -> str:
        return f"Augment(size={self.size}, padding={self.padding}, flip={self.flip})"


class _Compose:
    def __init__(self, *steps: Callable[[Tensor], Tensor]) -> None:
        self.steps = steps

    def __call__(self, image: Tensor) -> Tensor:
        for step in self.steps:
            image = step(image)
        return image

    @property
    def batchable(self) -> bool:
        return all(hasattr(step, "batch") for step in self.steps)

    def batch(self, images: Tensor) -> Tensor:
        for step in self.steps:
            images = step.batch(images)  # type: ignore[attr-defined]
        return images

    def __repr__(self) -> str:
        return " -> ".join(repr(s) for s in self.steps)


# names of random transforms without "Random" in them (torchvision v1 and v2, and this module's)
_RANDOM_TRANSFORMS = frozenset({
    "RandAugment", "AutoAugment", "TrivialAugmentWide", "AugMix", "ColorJitter", "ElasticTransform",
    "ScaleJitter", "Augment",
})


def _random_step(transform: object, depth: int = 0) -> str | None:
    if transform is None or depth > 8:
        return None
    name = type(transform).__name__
    if "Random" in name or name in _RANDOM_TRANSFORMS:
        return name
    for attribute in ("transforms", "steps"):  # Compose (v1, v2), tickets.data.transforms._Compose, RandomApply/Choice
        inner = getattr(transform, attribute, None)
        if isinstance(inner, (list, tuple)):
            for step in inner:
                found = _random_step(step, depth + 1)
                if found is not None:
                    return found
    return None


def random_transform(dataset: object, depth: int = 0) -> str | None:
    """The class name of a random (augmenting) transform that ``dataset`` applies, or None.

    Looks at the data set's ``transform`` (torchvision data sets, :class:`ImageDataset`) and
    inside ``Compose`` (torchvision v1 and v2) for transforms whose class name contains
    ``Random`` (``RandomCrop``, ``RandomResizedCrop``, ``RandomHorizontalFlip``...) or is one of
    ``RandAugment``, ``AutoAugment``, ``TrivialAugmentWide``, ``AugMix``, ``ColorJitter``,
    ``ElasticTransform``, ``ScaleJitter`` or :class:`Augment`; follows wrappers that keep the
    data set in ``dataset`` / ``datasets`` (``Subset``, ``ConcatDataset``,
    :class:`tickets.IndexedDataset`). Transforms it cannot see into (a ``Lambda``, a plain
    function) are not detected.

    Args:
        dataset: a data set (any object; others give None).
        depth: recursion depth (internal).
    """
    if dataset is None or depth > 8:
        return None
    for attribute in ("transform", "transforms"):
        found = _random_step(getattr(dataset, attribute, None))
        if found is not None:
            return found
    inner = getattr(dataset, "dataset", None)
    if inner is not None and inner is not dataset:
        found = random_transform(inner, depth + 1)
        if found is not None:
            return found
    for part in getattr(dataset, "datasets", None) or ():
        found = random_transform(part, depth + 1)
        if found is not None:
            return found
    return None
