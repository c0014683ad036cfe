"""Reading image folders (``<root>/<class>/*.jpg``) into memory or from disk, and the facts
:func:`tickets.data.datasets.load_folder_dataset` reads off them: the image sizes (headers
only) and the per-channel statistics of the pixels.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path
import torch
from torch import Tensor
from tickets.data.images import IMAGE_EXTENSIONS, ImageDataset, _read_image
from tickets.data.splits import balanced_subset

__all__ = ['load_image_folder']


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
