"""Image classification data sets for ticket finding: CIFAR-10/100 and Tiny ImageNet.

One call, :func:`load_dataset`, gives the three splits the lottery-ticket papers use:

- ``train``: the training split (45,000 CIFAR images, 90,000 Tiny ImageNet images), with the
  standard augmentation (random crop with 4 pixels of zero padding + horizontal flip);
- ``val``: the held-out validation split (the last 5,000 / 10,000 training images), no
  augmentation; it picks each round's best-validation checkpoint;
- ``test``: the official test set (Tiny ImageNet: ``val/``), no augmentation;
- ``train_eval``: the same samples as ``train`` without augmentation (for evaluating the
  model on its own training data, e.g. PrAC's pruning-disagreement side).

Sources, tried in this order for ``cifar10`` / ``cifar100``:

1. an image folder: ``DIR/train/<class>/*.{jpg,png}`` and ``DIR/test/<class>/*`` (also looked
   for in ``DIR/<name>/``), e.g. the unpacked ``cifar10-jpeg.tar.gz``;
2. torchvision's copy (``DIR/cifar-10-batches-py``), downloaded into ``DIR`` when absent and
   ``download=True``; offline and absent gives a :class:`FileNotFoundError` that says what to do.

``tiny-imagenet`` is read from ``DIR`` or ``DIR/tiny-imagenet-200``: ``train/<wnid>/**.JPEG``
and ``val/`` either in the official layout (``val/images/`` + ``val/val_annotations.txt``) or
as class folders ``val/<wnid>/*``.

An image folder of one's own (any classes, any image size) gives the same four splits through
:func:`load_folder_dataset`: ``val/`` and ``test/`` optional (stratified fractions of
``train/`` when absent), normalized with the training split's statistics.

Every data set here exposes ``targets`` (a list of ints, one per sample), which is how the
ticket finder reads the labels without decoding images.

Example::

    splits = load_dataset("cifar10", "/data/cifar10")
    print(len(splits.train), len(splits.val), len(splits.test))   # 45000 5000 10000
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from tickets.batching import num_batches, split_batches

__all__ = [
    "DATASETS",
    "DataSplits",
    "DatasetInfo",
    "ImageDataset",
    "Augment",
    "Normalize",
    "BatchLoader",
    "balanced_subset",
    "batch_loader",
    "random_transform",
    "load_dataset",
    "load_folder_dataset",
    "load_image_folder",
    "stratified_split",
    "validation_indices",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".ppm", ".webp")


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a supported data set.

    Args:
        name: registry name (``"cifar10"``).
        num_classes: number of classes.
        image_size: side of the (square) training crop in pixels.
        mean, std: per-channel normalization statistics (RGB, in [0, 1] units).
        val_size: images held out of the training set for validation.
    """

    name: str
    num_classes: int
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    val_size: int


DATASETS: dict[str, DatasetInfo] = {
    "cifar10": DatasetInfo("cifar10", 10, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 5000),
    "cifar100": DatasetInfo("cifar100", 100, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 5000),
    "tiny-imagenet": DatasetInfo("tiny-imagenet", 200, 64, (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821), 10000),
}


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
    for attribute in ("transforms", "steps"):  # Compose (v1, v2), tickets.data._Compose, RandomApply/Choice
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
    :class:`tickets.sampler.IndexedDataset` with the same sampler and batch size would, cut by
    the library's batching rule (:mod:`tickets.batching`: the last batch may be smaller, and a
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


@dataclass
class DataSplits:
    """The splits of one data set (see the module docstring for what each one is)."""

    train: ImageDataset
    val: ImageDataset | None
    test: ImageDataset
    train_eval: ImageDataset
    info: DatasetInfo
    source: str = ""
    notes: list[str] = field(default_factory=list)
    #: class names in label order (filled by :func:`load_folder_dataset`; empty for the built-in data sets).
    classes: list[str] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def describe(self) -> dict[str, object]:
        """JSON-able summary (sizes, source, split rule) for results files."""
        return {
            "dataset": self.info.name,
            "source": self.source,
            "num_classes": self.info.num_classes,
            "train": len(self.train),
            "val": len(self.val) if self.val is not None else 0,
            "test": len(self.test),
            "notes": list(self.notes),
            **({"classes": list(self.classes)} if self.classes else {}),
        }


# --------------------------------------------------------------------------- splitting
def validation_indices(targets: Sequence[int], val_size: int) -> list[int]:
    """Indices of the validation split taken from a training set.

    The reference holds out the *last* ``val_size`` indices. That is a random class mix for
    torchvision's CIFAR (stored in shuffled order), but for an image folder, whose samples are
    sorted by class, it would be whole classes; so when ``targets`` are sorted, the last
    ``val_size / num_classes`` samples of every class are taken instead (the first classes
    take one extra each when it does not divide evenly).
    """
    n = len(targets)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}) for a training set of {n} samples, got {val_size}")
    if val_size == 0:
        return []
    t = np.asarray(targets)
    if not np.all(t[1:] >= t[:-1]):
        return list(range(n - val_size, n))
    classes = np.unique(t)
    per, extra = divmod(val_size, len(classes))
    chosen: list[int] = []
    for k, c in enumerate(classes):
        members = np.flatnonzero(t == c)
        take = per + (1 if k < extra else 0)
        if take >= len(members):
            raise ValueError(f"val_size={val_size} leaves no training images of class {int(c)} ({len(members)} images)")
        chosen.extend(members[len(members) - take :].tolist())
    return sorted(chosen)


def balanced_subset(targets: Sequence[int], size: int, seed: int = 0) -> list[int]:
    """``size`` positions drawn without replacement, as evenly over classes as possible.

    Deterministic for a given ``seed``; returned sorted. Used for reduced-size runs.
    """
    n = len(targets)
    if not 0 < size <= n:
        raise ValueError(f"subset size must be in [1, {n}], got {size}")
    t = np.asarray(targets)
    rng = np.random.default_rng(seed)
    classes = np.unique(t)
    pools = [rng.permutation(np.flatnonzero(t == c)).tolist() for c in classes]
    chosen: list[int] = []
    # round-robin over classes so that small classes simply run out
    while len(chosen) < size:
        for pool in pools:
            if pool and len(chosen) < size:
                chosen.append(pool.pop())
    return sorted(chosen)


# --------------------------------------------------------------------------- sources
def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _scan_class_tree(root: Path, classes: Sequence[str]) -> tuple[list[Path], list[int]]:
    paths: list[Path] = []
    targets: list[int] = []
    for k, name in enumerate(classes):
        files = _image_files(root / name)
        paths.extend(files)
        targets.extend([k] * len(files))
    return paths, targets


def _decode_all(paths: Sequence[Path], size: int, desc: str, progress: bool) -> Tensor:
    from tqdm.auto import tqdm

    out = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
    if progress and not sys.stderr.isatty():
        print(f"{desc}: {len(paths):,} images", file=sys.stderr, flush=True)
    bar = progress and sys.stderr.isatty()
    for i, p in enumerate(tqdm(paths, desc=desc, disable=not bar, leave=False, mininterval=1.0)):
        out[i] = _read_image(p, size)
    return out


def load_image_folder(
    root: str | os.PathLike[str],
    *,
    split: str,
    classes: Sequence[str] | None = None,
    image_size: int | None,
    in_memory: bool = True,
    progress: bool = False,
) -> tuple[ImageDataset, list[str]]:
    """Read ``root/<split>/<class>/**/*.<image>`` into an :class:`ImageDataset` (no transform).

    Args:
        root: folder holding ``split``.
        split: sub-folder name (``"train"``, ``"test"``, ``"val"``).
        classes: class folder names in label order; default: the sorted folder names
            (which is the canonical order for CIFAR-10 and CIFAR-100).
        image_size: images are resized to this side if they differ (None: kept as they are;
            only with ``in_memory=False``, since decoded images must share one size).
        in_memory: decode every image now (fast epochs) instead of on each access.
        progress: show a progress bar while decoding.

    Returns ``(dataset, classes)``. Tiny ImageNet's official ``val/`` layout
    (``images/`` + ``val_annotations.txt``) is read too.
    """
    folder = Path(root) / split
    if not folder.is_dir():
        raise FileNotFoundError(f"no folder {str(folder)!r}: expected {split}/<class>/<images> under {str(root)!r}")
    annotations = folder / "val_annotations.txt"
    if annotations.is_file() and (folder / "images").is_dir():
        if classes is None:
            raise ValueError(f"{annotations} needs the class list of the training folder (pass classes=)")
        index = {c: k for k, c in enumerate(classes)}
        paths, targets = [], []
        for line in annotations.read_text().splitlines():
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in index:
                raise ValueError(f"{annotations}: class {parts[1]!r} of {parts[0]!r} is not a training class")
            paths.append(folder / "images" / parts[0])
            targets.append(index[parts[1]])
    else:
        found = [p.name for p in _class_folders(folder)]
        if classes is None:
            classes = found
        missing = sorted(set(found) - set(classes))
        if missing:
            raise ValueError(f"{folder} has class folders not in the training classes: {missing[:5]}")
        paths, targets = _scan_class_tree(folder, classes)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {str(folder)!r}")
    if in_memory:
        if image_size is None:
            raise ValueError("load_image_folder(in_memory=True) needs an image_size (decoded images must share one size)")
        images: Tensor | list[Path] = _decode_all(paths, image_size, f"decoding {folder}", progress)
    else:
        images = list(paths)
    return ImageDataset(images, targets, image_size=image_size), list(classes)


def _find_folder_root(data_dir: Path, name: str, test_split: str) -> Path | None:
    for root in (data_dir, data_dir / name, data_dir / "tiny-imagenet-200"):
        if (root / "train").is_dir() and (root / test_split).is_dir():
            return root
    return None


def _load_torchvision_cifar(name: str, data_dir: Path, download: bool) -> tuple[ImageDataset, ImageDataset, str]:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train = cls(str(data_dir), train=True, download=False)
        test = cls(str(data_dir), train=False, download=False)
    except RuntimeError:
        if not download:
            raise FileNotFoundError(
                f"{name} is not in {str(data_dir)!r} and download=False. Either allow the download, or "
                f"point data_dir at an image folder with train/<class>/*.jpg and test/<class>/*.jpg."
            ) from None
        try:
            train = cls(str(data_dir), train=True, download=True)
            test = cls(str(data_dir), train=False, download=True)
        except Exception as error:  # URLError, socket errors, ... when offline
            raise FileNotFoundError(
                f"{name} is not in {str(data_dir)!r} and could not be downloaded ({type(error).__name__}: {error}). "
                f"On a machine without internet, copy torchvision's {cls.base_folder!r} folder into "
                f"{str(data_dir)!r}, or point --data-dir at an image folder with train/<class>/*.jpg and "
                f"test/<class>/*.jpg (for example an unpacked JPEG copy of {name})."
            ) from error

    def as_dataset(ds: object) -> ImageDataset:
        images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()  # type: ignore[attr-defined]
        return ImageDataset(images, list(ds.targets), image_size=32)  # type: ignore[attr-defined]

    return as_dataset(train), as_dataset(test), f"torchvision {cls.__name__} in {data_dir}"


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str],
    *,
    download: bool = True,
    augment: bool = True,
    val_size: int | None = None,
    train_size: int | None = None,
    test_size: int | None = None,
    in_memory: bool | None = None,
    seed: int = 0,
    progress: bool = False,
) -> DataSplits:
    """Load a data set by name and split it as the reference does.

    Args:
        name: one of :data:`DATASETS` (``"cifar10"``, ``"cifar100"``, ``"tiny-imagenet"``).
        data_dir: where the data is (image folder or torchvision copy) or will be downloaded to.
        download: for CIFAR, download into ``data_dir`` when no copy is found there.
        augment: random crop + flip on ``train`` (``val``, ``test``, ``train_eval`` never augment).
        val_size: images held out of the training set (default: the data set's, 5,000 or 10,000;
            0 = no validation split). See :func:`validation_indices` for which ones.
        train_size: keep only this many images of the training split, class-balanced and
            drawn with ``seed`` (for reduced runs); default all.
        test_size: likewise for the test set; default the whole official test set.
        in_memory: decode all images up front (default: yes for CIFAR, no for Tiny ImageNet).
        seed: seed of the ``train_size`` / ``test_size`` draws.
        progress: progress bar while decoding image folders.

    Raises:
        ValueError: an unknown ``name`` or sizes that do not fit.
        FileNotFoundError: no data in ``data_dir`` and it could not be downloaded.
    """
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; valid: {sorted(DATASETS)}")
    info = DATASETS[name]
    data_dir = Path(data_dir).expanduser()
    test_split = "val" if name == "tiny-imagenet" else "test"
    if in_memory is None:
        in_memory = name != "tiny-imagenet"

    root = _find_folder_root(data_dir, name, test_split) if data_dir.is_dir() else None
    notes: list[str] = []
    if root is not None:
        full_train, classes = load_image_folder(root, split="train", image_size=info.image_size, in_memory=in_memory, progress=progress)
        test, _ = load_image_folder(root, split=test_split, classes=classes, image_size=info.image_size, in_memory=in_memory, progress=progress)
        if len(classes) != info.num_classes:
            raise ValueError(f"{root / 'train'} has {len(classes)} class folders, {name} has {info.num_classes}")
        source = f"image folder {root}"
    elif name == "tiny-imagenet":
        raise FileNotFoundError(
            f"Tiny ImageNet not found in {str(data_dir)!r}: expected train/<wnid>/... and val/ "
            f"(val/images + val/val_annotations.txt, or val/<wnid>/...) there or in {str(data_dir / 'tiny-imagenet-200')!r}. "
            f"It is not downloaded automatically."
        )
    else:
        data_dir.mkdir(parents=True, exist_ok=True)
        full_train, test, source = _load_torchvision_cifar(name, data_dir, download)

    val_size = info.val_size if val_size is None else val_size
    val_idx = validation_indices(full_train.targets, val_size)
    if val_idx and val_idx != list(range(len(full_train) - val_size, len(full_train))):
        notes.append(f"validation = last {val_size // info.num_classes} images of each class (class-sorted image folder)")
    elif val_idx:
        notes.append(f"validation = last {val_size} training indices")
    held = set(val_idx)
    train_idx = [i for i in range(len(full_train)) if i not in held]
    if train_size is not None:
        sub = balanced_subset([full_train.targets[i] for i in train_idx], train_size, seed)
        train_idx = [train_idx[i] for i in sub]
        notes.append(f"training split reduced to {train_size} class-balanced images (seed {seed})")
    if test_size is not None:
        test = test.subset(balanced_subset(test.targets, test_size, seed + 1))
        notes.append(f"test set reduced to {test_size} class-balanced images (seed {seed + 1})")

    normalize = Normalize(info.mean, info.std)
    train_transform = _Compose(Augment(info.image_size, 4), normalize) if augment else normalize
    return DataSplits(
        train=full_train.subset(train_idx, transform=train_transform),
        val=full_train.subset(val_idx, transform=normalize) if val_idx else None,
        test=test.subset(range(len(test)), transform=normalize),
        train_eval=full_train.subset(train_idx, transform=normalize),
        info=info,
        source=source,
        notes=notes,
    )


# --------------------------------------------------------------------------- a folder of one's own
#: ImageNet's per-channel statistics (RGB, [0, 1] units), for ``load_folder_dataset(normalize="imagenet")``.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Fractions of every class of ``train/`` held out when ``val/`` / ``test/`` are absent.
FOLDER_VAL_FRACTION = 0.1
FOLDER_TEST_FRACTION = 0.1
#: ``load_folder_dataset(in_memory=None)`` decodes up front when the decoded uint8 images take at most this many bytes.
FOLDER_IN_MEMORY_BYTES = 2 * 1024**3


def stratified_split(
    targets: Sequence[int], fractions: Sequence[float], seed: int = 0, class_names: Sequence[str] | None = None
) -> list[list[int]]:
    """Split positions ``0..N-1`` class by class into a remainder and one part per fraction.

    Every class's samples are shuffled (``numpy.random.default_rng(seed)``, so the split is
    reproducible) and part ``j`` takes ``round(fractions[j] * n_c)`` of a class's ``n_c``
    samples, at least one when ``fractions[j] > 0``, so every class is in every nonzero part;
    the remainder keeps the rest.

    Args:
        targets: the class index of every sample.
        fractions: one fraction in ``[0, 1)`` per part; their sum must be below 1.
        seed: seed of the shuffles.
        class_names: names of the class indices, for error messages.

    Returns ``[remainder, part_1, ..., part_k]``, each a sorted list of positions.

    Raises:
        ValueError: a fraction out of range, or a class too small to give every nonzero part
            one sample and keep one (the message names the class and its count).
    """
    if any(not 0.0 <= f < 1.0 for f in fractions) or sum(fractions) >= 1.0:
        raise ValueError(f"fractions must lie in [0, 1) and sum to less than 1; got {list(fractions)}")
    t = np.asarray(targets)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(t):
        members = rng.permutation(np.flatnonzero(t == c))
        takes = [max(1, round(f * len(members))) if f > 0 else 0 for f in fractions]
        if sum(takes) >= len(members):
            name = class_names[int(c)] if class_names is not None else int(c)
            raise ValueError(
                f"class {name!r} has {len(members)} samples: too few to hold out {sum(takes)} "
                f"(fractions {list(fractions)}, at least one each) and keep one for training"
            )
        start = sum(takes)
        parts[0].extend(members[start:].tolist())
        for j, take in enumerate(takes):
            begin = sum(takes[:j])
            parts[j + 1].extend(members[begin : begin + take].tolist())
    return [sorted(p) for p in parts]


def _image_sizes(paths: Sequence[str | os.PathLike[str]]) -> dict[tuple[int, int], int]:
    """``{(width, height): count}`` over image files (headers only, nothing decoded)."""
    from PIL import Image

    sizes: dict[tuple[int, int], int] = {}
    for path in paths:
        with Image.open(path) as file:
            sizes[file.size] = sizes.get(file.size, 0) + 1
    return sizes


def _channel_stats(dataset: ImageDataset, limit: int, seed: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (in [0, 1] units) of the untransformed images of
    ``dataset``, over all of them or a class-balanced ``limit`` of them."""
    raw = dataset.subset(range(len(dataset)), transform=None)
    if len(raw) > limit:
        raw = raw.subset(balanced_subset(raw.targets, limit, seed))
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    count = 0
    for chunk in torch.arange(len(raw)).split(256):
        images, _ = raw.get_batch(chunk)
        x = images.to(torch.float64).div_(255.0)
        total += x.sum(dim=(0, 2, 3))
        squares += x.square().sum(dim=(0, 2, 3))
        count += x.shape[0] * x.shape[2] * x.shape[3]
    mean = total / count
    std = (squares / count - mean.square()).clamp_min(0.0).sqrt().clamp_min(1.0 / 255.0)  # a constant channel stays finite
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


def load_folder_dataset(
    root: str | os.PathLike[str],
    *,
    image_size: int | None = None,
    val_fraction: float | None = None,
    test_fraction: float | None = None,
    normalize: str = "train",
    augment: bool = True,
    padding: int | None = None,
    in_memory: bool | None = None,
    seed: int = 0,
    progress: bool = False,
    stats_images: int = 10_000,
) -> DataSplits:
    """Load an image folder of one's own as :class:`DataSplits`, split and augmented like the
    built-in data sets.

    Layout: ``root/train/<class>/**/*.{jpg,jpeg,png,bmp,ppm,webp}``; ``root/val/<class>/...``
    and ``root/test/<class>/...`` are optional. The classes are ``train/``'s folder names,
    sorted; that order is the label order, and ``val/`` and ``test/`` must hold images of
    every one of them and no other. A split that is absent is taken out of ``train/``
    (:func:`stratified_split`: the same fraction of every class, drawn with ``seed``).
    Images are read as RGB (grayscale and RGBA are converted).

    Args:
        root: the folder holding ``train/`` (and possibly ``val/``, ``test/``).
        image_size: side of the square images the model gets; images of another size are
            resized (bilinear). None keeps the images' size, which needs all of them to share
            one square size (otherwise a ValueError lists the sizes found).
        val_fraction: when ``val/`` is absent, the fraction of every class of ``train/``
            held out for validation (default ``FOLDER_VAL_FRACTION`` = 0.1; 0 = no
            validation split, so best-validation selection is off). An error when ``val/`` exists.
        test_fraction: likewise for ``test/`` (default 0.1; must be > 0: the harness reports
            test accuracy). An error when ``test/`` exists.
        normalize: ``"train"``: per-channel mean and std of the training split's images
            (after resizing, at most ``stats_images`` of them, class-balanced), the right
            statistics for models trained from scratch, as ticket finding does;
            ``"imagenet"``: ImageNet's (for ImageNet-pretrained weights).
        augment: random crop with ``padding`` pixels of zero padding plus a horizontal flip on
            ``train`` (``val``, ``test`` and ``train_eval`` are never augmented).
        padding: default ``max(1, image_size // 8)``: 4 pixels at 32, CIFAR's augmentation.
        in_memory: decode every image up front (fast epochs, the batched data path); default:
            when the decoded images take at most ``FOLDER_IN_MEMORY_BYTES`` (2 GiB), else read
            from disk on each access.
        seed: seed of the stratified splits (and of the statistics subset).
        progress: show progress while decoding.
        stats_images: the most training images the ``"train"`` statistics are computed on.

    Returns the splits (``info.name == "folder"``, ``info.num_classes`` = the class count,
    ``classes`` = the class names, ``notes`` = how each split was made).

    Raises:
        FileNotFoundError: no ``root/train`` folder, or no images in a split.
        ValueError: fewer than two classes, a class without training images, a class
            missing from ``val/`` or ``test/`` (or one they have that ``train/`` lacks),
            images of several sizes without ``image_size``, a fraction for a split that
            exists, or a class too small to split.
    """
    root = Path(root).expanduser()
    train_dir = root / "train"
    if not train_dir.is_dir():
        raise FileNotFoundError(
            f"no folder {str(train_dir)!r}: an image folder data set needs {str(root)!r} to hold "
            f"train/<class>/<images> (val/<class>/... and test/<class>/... are optional)"
        )
    if normalize not in ("train", "imagenet"):
        raise ValueError(f"normalize must be 'train' or 'imagenet'; got {normalize!r}")
    if image_size is not None and (isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1):
        raise ValueError(f"image_size must be an int >= 1 (or None to keep the images' size); got {image_size!r}")
    if padding is not None and (isinstance(padding, bool) or not isinstance(padding, int) or padding < 0):
        raise ValueError(f"padding must be an int >= 0; got {padding!r}")
    present = {split: (root / split).is_dir() for split in ("val", "test")}
    fractions = {"val": val_fraction, "test": test_fraction}
    for split, fraction in fractions.items():
        if fraction is None:
            continue
        if present[split]:
            raise ValueError(
                f"{str(root / split)!r} exists, so {split}_fraction={fraction} would not be used: drop the "
                f"option to use {split}/, or remove {split}/ to split it off train/"
            )
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
            raise ValueError(f"{split}_fraction must be a fraction in [0, 1); got {fraction!r}")
    val_fraction = FOLDER_VAL_FRACTION if val_fraction is None else float(val_fraction)
    test_fraction = FOLDER_TEST_FRACTION if test_fraction is None else float(test_fraction)
    if not present["test"] and test_fraction == 0.0:
        raise ValueError(f"{str(root)!r} has no test/ folder and test_fraction=0: a test split is needed; pass test_fraction > 0")

    # the files of every split (nothing decoded yet), the class checks
    full_train, classes = load_image_folder(root, split="train", image_size=None, in_memory=False)
    if len(classes) < 2:
        raise ValueError(f"{str(train_dir)!r} has {len(classes)} class folder(s) ({classes}); a classifier needs at least 2")
    counts = np.bincount(full_train.targets, minlength=len(classes))
    empty = [classes[k] for k in np.flatnonzero(counts == 0)]
    if empty:
        raise ValueError(f"{str(train_dir)!r}: class folders without images ({', '.join(IMAGE_EXTENSIONS)}): {empty}")
    given: dict[str, ImageDataset] = {}
    for split in ("val", "test"):
        if present[split]:
            given[split], _ = load_image_folder(root, split=split, classes=classes, image_size=None, in_memory=False)
            have = np.bincount(given[split].targets, minlength=len(classes))
            missing = [classes[k] for k in np.flatnonzero(have == 0)]
            if missing:
                raise ValueError(
                    f"{str(root / split)!r} has no images of the training classes {missing}: every class of "
                    f"train/ needs {split} images (or remove {split}/ to split it off train/)"
                )

    # one image size for all
    paths = [p for d in (full_train, *given.values()) for p in d._images]  # type: ignore[union-attr]
    sizes = _image_sizes(paths)
    if image_size is None:
        listed = ", ".join(f"{w}x{h} ({n} images)" for (w, h), n in sorted(sizes.items(), key=lambda kv: -kv[1])[:5])
        listed += ", ..." if len(sizes) > 5 else ""
        if len(sizes) > 1:
            raise ValueError(f"the images of {str(root)!r} have {len(sizes)} different sizes ({listed}); pass an image size "
                             f"(--image-size N) to resize them all to N x N")
        (width, height), = sizes
        if width != height:
            raise ValueError(f"the images of {str(root)!r} are {width}x{height}, not square; pass an image size "
                             f"(--image-size N) to resize them to N x N")
        image_size = width
    resized = sum(n for (w, h), n in sizes.items() if (w, h) != (image_size, image_size))
    if in_memory is None:
        in_memory = len(paths) * 3 * image_size * image_size <= FOLDER_IN_MEMORY_BYTES

    def materialize(dataset: ImageDataset, split: str) -> ImageDataset:
        files = list(dataset._images)  # type: ignore[arg-type]
        images = _decode_all(files, image_size, f"decoding {root / split}", progress) if in_memory else files
        return ImageDataset(images, dataset.targets, image_size=image_size)  # type: ignore[arg-type]

    full_train = materialize(full_train, "train")
    given = {split: materialize(d, split) for split, d in given.items()}

    # the splits
    notes = [f"{len(classes)} classes (label order = sorted folder names of train/)"]
    wanted = [0.0 if present["val"] else val_fraction, 0.0 if present["test"] else test_fraction]
    train_idx, val_idx, test_idx = stratified_split(full_train.targets, wanted, seed, classes)
    for split, fraction in zip(("val", "test"), wanted):
        if present[split]:
            notes.append(f"{split} = {split}/ ({len(given[split])} images)")
        elif fraction:
            notes.append(f"{split} = {fraction:.0%} of every class of train/ (stratified, seed {seed})")
    if not present["val"] and not val_idx:
        notes.append("no validation split (val_fraction=0)")
    if resized:
        notes.append(f"{resized} of {len(paths)} images resized to {image_size}x{image_size}")

    if normalize == "imagenet":
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        notes.append("normalization: ImageNet's mean and std")
    else:
        mean, std = _channel_stats(full_train.subset(train_idx), stats_images, seed)  # type: ignore[assignment]
        notes.append(f"normalization: mean {list(mean)}, std {list(std)} of the training split "
                     f"({min(len(train_idx), stats_images)} images)")
    norm = Normalize(mean, std)
    padding = max(1, image_size // 8) if padding is None else padding
    if augment:
        notes.append(f"training augmentation: random {image_size}x{image_size} crop with {padding} pixels of zero padding, horizontal flip")
    train_transform = _Compose(Augment(image_size, padding), norm) if augment else norm
    val = given["val"].subset(range(len(given["val"])), transform=norm) if present["val"] else (
        full_train.subset(val_idx, transform=norm) if val_idx else None)
    test = given["test"].subset(range(len(given["test"])), transform=norm) if present["test"] else full_train.subset(test_idx, transform=norm)
    info = DatasetInfo("folder", len(classes), image_size, mean, std, len(val) if val is not None else 0)  # type: ignore[arg-type]
    return DataSplits(
        train=full_train.subset(train_idx, transform=train_transform),
        val=val,
        test=test,
        train_eval=full_train.subset(train_idx, transform=norm),
        info=info,
        source=f"image folder {root}" + ("" if in_memory else " (read from disk)"),
        notes=notes,
        classes=list(classes),
    )
