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
    "load_dataset",
    "load_image_folder",
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
    :class:`tickets.sampler.IndexedDataset` with the same sampler and batch size would (the
    last batch may be smaller), but each batch is one gather from the decoded uint8 images
    plus a batched transform (:meth:`ImageDataset.get_batch`): no per-sample Python, no
    worker processes. The sampler is iterated once per pass, so ``set_epoch`` and PrAC sets
    work as with a ``DataLoader``.

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
        return -(-n // self.batch_size)

    def __iter__(self):  # type: ignore[no-untyped-def]
        if self.sampler is None:
            order = torch.arange(len(self.dataset))
        else:
            order = torch.as_tensor(list(iter(self.sampler)), dtype=torch.long)  # type: ignore[call-overload]
        for chunk in order.split(self.batch_size):
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
    image_size: int,
    in_memory: bool = True,
    progress: bool = False,
) -> tuple[ImageDataset, list[str]]:
    """Read ``root/<split>/<class>/**/*.<image>`` into an :class:`ImageDataset` (no transform).

    Args:
        root: folder holding ``split``.
        split: sub-folder name (``"train"``, ``"test"``, ``"val"``).
        classes: class folder names in label order; default: the sorted folder names
            (which is the canonical order for CIFAR-10 and CIFAR-100).
        image_size: images are resized to this side if they differ.
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
