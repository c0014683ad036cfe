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
from dataclasses import dataclass, field
from pathlib import Path
import numpy as np
import torch
from tickets.data.folders import _channel_stats, _decode_all, _image_sizes, load_image_folder
from tickets.data.images import IMAGE_EXTENSIONS, ImageDataset
from tickets.data.splits import balanced_subset, stratified_split, validation_indices
from tickets.data.transforms import Augment, Normalize, _Compose

__all__ = ['DatasetInfo', 'DATASETS', 'DataSplits', 'load_dataset', 'IMAGENET_MEAN', 'IMAGENET_STD', 'FOLDER_VAL_FRACTION', 'FOLDER_TEST_FRACTION', 'FOLDER_IN_MEMORY_BYTES', 'load_folder_dataset']


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


# --------------------------------------------------------------------------- the built-in data sets
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
    _check_folder_options(root, normalize, image_size, padding)
    fractions = _held_out_fractions(root, val_fraction, test_fraction)
    full_train, classes, given = _scan_folder(root, fractions)
    paths = [p for d in (full_train, *given.values()) for p in d._images]  # type: ignore[union-attr]
    image_size, resized = _common_image_size(root, paths, image_size)
    if in_memory is None:
        in_memory = len(paths) * 3 * image_size * image_size <= FOLDER_IN_MEMORY_BYTES
    full_train = _materialize(full_train, root / "train", image_size, in_memory, progress)
    given = {split: _materialize(d, root / split, image_size, in_memory, progress) for split, d in given.items()}

    notes = [f"{len(classes)} classes (label order = sorted folder names of train/)"]
    (train_idx, val_idx, test_idx), split_notes = _split_folder(full_train.targets, given, fractions, seed, classes)
    notes += split_notes
    if resized:
        notes.append(f"{resized} of {len(paths)} images resized to {image_size}x{image_size}")
    mean, std, note = _folder_statistics(normalize, full_train.subset(train_idx), stats_images, seed)
    notes.append(note)
    norm = Normalize(mean, std)
    padding = max(1, image_size // 8) if padding is None else padding
    if augment:
        notes.append(f"training augmentation: random {image_size}x{image_size} crop with {padding} pixels of zero padding, horizontal flip")
    train_transform = _Compose(Augment(image_size, padding), norm) if augment else norm
    val = _held_out_split("val", given, full_train, val_idx, norm)
    test = _held_out_split("test", given, full_train, test_idx, norm)
    assert test is not None  # test/ exists, or test_fraction > 0 put images of every class in test_idx
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


def _check_folder_options(root: Path, normalize: str, image_size: int | None, padding: int | None) -> None:
    """The checks of :func:`load_folder_dataset`'s layout and options that need no image."""
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


def _held_out_fractions(root: Path, val_fraction: float | None, test_fraction: float | None) -> dict[str, float | None]:
    """How ``val`` and ``test`` are made: None for a split whose folder exists (it is used as it
    is), else the fraction of every class of ``train/`` held out for it (the defaults
    ``FOLDER_VAL_FRACTION`` / ``FOLDER_TEST_FRACTION`` when not given)."""
    present = {split: (root / split).is_dir() for split in ("val", "test")}
    given = {"val": val_fraction, "test": test_fraction}
    for split, fraction in given.items():
        if fraction is None:
            continue
        if present[split]:
            raise ValueError(
                f"{str(root / split)!r} exists, so {split}_fraction={fraction} would not be used: drop the "
                f"option to use {split}/, or remove {split}/ to split it off train/"
            )
        if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
            raise ValueError(f"{split}_fraction must be a fraction in [0, 1); got {fraction!r}")
    fractions: dict[str, float | None] = {}
    for split, default in (("val", FOLDER_VAL_FRACTION), ("test", FOLDER_TEST_FRACTION)):
        fraction = given[split]
        fractions[split] = None if present[split] else float(default if fraction is None else fraction)
    if fractions["test"] == 0.0:
        raise ValueError(f"{str(root)!r} has no test/ folder and test_fraction=0: a test split is needed; pass test_fraction > 0")
    return fractions


def _scan_folder(root: Path, fractions: dict[str, float | None]) -> tuple[ImageDataset, list[str], dict[str, ImageDataset]]:
    """The files of ``train/`` and of the ``val/`` / ``test/`` folders that exist (the splits
    whose fraction is None), nothing decoded yet, with the class checks: at least two
    classes, images in every class of ``train/``, and in ``val/`` / ``test/`` for each of them.

    Returns ``(train, classes, {split: dataset})``.
    """
    train_dir = root / "train"
    full_train, classes = load_image_folder(root, split="train", image_size=None, in_memory=False)
    if len(classes) < 2:
        raise ValueError(f"{str(train_dir)!r} has {len(classes)} class folder(s) ({classes}); a classifier needs at least 2")
    counts = np.bincount(full_train.targets, minlength=len(classes))
    empty = [classes[k] for k in np.flatnonzero(counts == 0)]
    if empty:
        raise ValueError(f"{str(train_dir)!r}: class folders without images ({', '.join(IMAGE_EXTENSIONS)}): {empty}")
    given: dict[str, ImageDataset] = {}
    for split in ("val", "test"):
        if fractions[split] is None:
            given[split], _ = load_image_folder(root, split=split, classes=classes, image_size=None, in_memory=False)
            have = np.bincount(given[split].targets, minlength=len(classes))
            missing = [classes[k] for k in np.flatnonzero(have == 0)]
            if missing:
                raise ValueError(
                    f"{str(root / split)!r} has no images of the training classes {missing}: every class of "
                    f"train/ needs {split} images (or remove {split}/ to split it off train/)"
                )
    return full_train, classes, given


def _common_image_size(root: Path, paths: list[Path], image_size: int | None) -> tuple[int, int]:
    """The side every image of the folder is brought to (``image_size``, or the one square size
    all images share when None) and how many of ``paths`` need resizing to it."""
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
    return image_size, resized


def _materialize(dataset: ImageDataset, folder: Path, image_size: int, in_memory: bool, progress: bool) -> ImageDataset:
    """``dataset`` (image files) at ``image_size``: decoded now when ``in_memory``, else read from disk on each access."""
    files = list(dataset._images)  # type: ignore[arg-type]
    images = _decode_all(files, image_size, f"decoding {folder}", progress) if in_memory else files
    return ImageDataset(images, dataset.targets, image_size=image_size)  # type: ignore[arg-type]


def _split_folder(
    targets: list[int], given: dict[str, ImageDataset], fractions: dict[str, float | None], seed: int, classes: list[str]
) -> tuple[list[list[int]], list[str]]:
    """Positions of ``train/`` kept for training and held out for ``val`` and ``test`` (empty
    for a split that has its own folder), and the notes that say how each split was made."""
    wanted = [fractions[split] or 0.0 for split in ("val", "test")]
    train_idx, val_idx, test_idx = stratified_split(targets, wanted, seed, classes)
    notes = []
    for split, fraction in zip(("val", "test"), wanted):
        if split in given:
            notes.append(f"{split} = {split}/ ({len(given[split])} images)")
        elif fraction:
            notes.append(f"{split} = {fraction:.0%} of every class of train/ (stratified, seed {seed})")
    if "val" not in given and not val_idx:
        notes.append("no validation split (val_fraction=0)")
    return [train_idx, val_idx, test_idx], notes


def _folder_statistics(
    normalize: str, train: ImageDataset, stats_images: int, seed: int
) -> tuple[tuple[float, ...], tuple[float, ...], str]:
    """The normalization's per-channel ``(mean, std, note)``: ImageNet's, or the training split's."""
    if normalize == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD, "normalization: ImageNet's mean and std"
    mean, std = _channel_stats(train, stats_images, seed)
    note = (f"normalization: mean {list(mean)}, std {list(std)} of the training split "
            f"({min(len(train), stats_images)} images)")
    return mean, std, note


def _held_out_split(
    split: str, given: dict[str, ImageDataset], full_train: ImageDataset, indices: list[int], transform: Normalize
) -> ImageDataset | None:
    """``val`` or ``test``: its own folder when it has one, else its positions of ``train/``
    (None when there are none: ``val_fraction=0``)."""
    if split in given:
        return given[split].subset(range(len(given[split])), transform=transform)
    return full_train.subset(indices, transform=transform) if indices else None
