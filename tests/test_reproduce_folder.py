"""An image folder of one's own: tickets.data.load_folder_dataset and
``python -m benchmarks.reproduce folder --data-dir DIR`` on tiny folders the tests write."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.reproduce import load_folder_splits, main, parse_args
from tickets.data.datasets import IMAGENET_MEAN, load_folder_dataset
from tickets.data.transforms import Augment
from tickets.data.images import ImageDataset
from tickets.data.splits import stratified_split

CLASSES = ["cat", "dog", "emu"]


def write_folder(root: Path, split: str = "train", per_class: int = 12, size: tuple[int, int] = (8, 8),
                 classes: list[str] = CLASSES, offset: int = 0) -> Path:
    """``root/split/<class>/<i>.png``: each image unique, its class in channel 0 and its number
    in channel 1 of every pixel (so a decoded image says which file it was), noise in channel 2."""
    g = np.random.default_rng(len(split) + offset)
    for k, name in enumerate(classes):
        folder = root / split / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = np.empty((size[1], size[0], 3), np.uint8)
            image[..., 0] = 50 * k
            image[..., 1] = offset + i
            image[..., 2] = g.integers(0, 256, (size[1], size[0]))
            Image.fromarray(image).save(folder / f"{i:03d}.png")
    return root


def identities(dataset: ImageDataset) -> list[tuple[int, int]]:
    """(class colour, image number) of every sample, from the untransformed pixels."""
    raw = dataset.subset(range(len(dataset)), transform=None)
    images, targets = raw.get_batch(torch.arange(len(raw)))
    assert (images[:, 0, 0, 0] // 50).tolist() == targets.tolist()  # the label is the folder's class
    return list(zip(targets.tolist(), images[:, 1, 0, 0].tolist()))


def test_absent_val_and_test_are_stratified_disjoint_seeded_splits(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data")
    splits = load_folder_dataset(root, seed=3)
    assert splits.classes == CLASSES and splits.num_classes == 3 and splits.info.image_size == 8
    train, val, test = identities(splits.train), identities(splits.val), identities(splits.test)
    assert Counter(c for c, _ in train) == {0: 10, 1: 10, 2: 10}  # 10% of each class of 12 -> 1 val, 1 test
    assert Counter(c for c, _ in val) == Counter(c for c, _ in test) == {0: 1, 1: 1, 2: 1}
    assert len(set(train) | set(val) | set(test)) == 36 and not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert identities(splits.train_eval) == train  # same samples, not augmented
    again = load_folder_dataset(root, seed=3)
    assert identities(again.val) == val and identities(again.test) == test
    other = load_folder_dataset(root, seed=4, val_fraction=0.25, test_fraction=0.25)
    assert Counter(c for c, _ in identities(other.val)) == {0: 3, 1: 3, 2: 3} and len(other.train) == 18
    assert "stratified, seed 3" in " ".join(splits.notes)


def test_given_val_and_test_are_used_in_the_training_class_order(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data")
    write_folder(root, "val", per_class=2, offset=100)
    write_folder(root, "test", per_class=3, offset=200)
    splits = load_folder_dataset(root)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (36, 6, 9)
    assert Counter(splits.test.targets) == {0: 3, 1: 3, 2: 3}
    assert all(n >= 200 for _, n in identities(splits.test)) and all(100 <= n < 200 for _, n in identities(splits.val))
    with pytest.raises(ValueError, match="val/ exists|'val' exists|val_fraction=0.2 would not be used"):
        load_folder_dataset(root, val_fraction=0.2)


def test_only_test_given_splits_validation_off_train(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data")
    write_folder(root, "test", per_class=2, offset=200)
    splits = load_folder_dataset(root, val_fraction=0.0)
    assert splits.val is None and len(splits.train) == 36 and len(splits.test) == 6
    splits = load_folder_dataset(root)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (33, 3, 6)


def test_class_mismatches_are_clear_errors(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "missing")
    write_folder(root, "val", per_class=2, classes=["cat", "dog"])
    with pytest.raises(ValueError, match=r"no images of the training classes \['emu'\]"):
        load_folder_dataset(root)
    root = write_folder(tmp_path / "unknown")
    write_folder(root, "test", per_class=2, classes=["cat", "dog", "emu", "yak"])
    with pytest.raises(ValueError, match="not in the training classes: \\['yak'\\]"):
        load_folder_dataset(root)
    with pytest.raises(FileNotFoundError, match="train/<class>/<images>"):
        load_folder_dataset(tmp_path / "nothing")
    one = write_folder(tmp_path / "one", classes=["cat"])
    with pytest.raises(ValueError, match="at least 2"):
        load_folder_dataset(one)
    small = write_folder(tmp_path / "small", per_class=2)
    with pytest.raises(ValueError, match="class 'cat' has 2 samples"):
        load_folder_dataset(small)


def test_image_sizes_keep_or_resize(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "mixed", classes=["cat", "dog"])
    write_folder(root, classes=["emu"], size=(16, 16))
    with pytest.raises(ValueError, match=r"2 different sizes \(8x8 \(24 images\), 16x16 \(12 images\)\).*--image-size"):
        load_folder_dataset(root)
    splits = load_folder_dataset(root, image_size=12)
    x, _ = splits.train.get_batch(torch.arange(len(splits.train)))
    assert x.shape[1:] == (3, 12, 12) and splits.test[0][0].shape == (3, 12, 12)
    assert "36 images resized to 12x12" in " ".join(splits.notes)
    wide = write_folder(tmp_path / "wide", size=(12, 8))
    with pytest.raises(ValueError, match="12x8, not square"):
        load_folder_dataset(wide)
    assert load_folder_dataset(wide, image_size=8).info.image_size == 8
    on_disk = load_folder_dataset(root, image_size=12, in_memory=False)
    assert not on_disk.train.in_memory and on_disk.train[0][0].shape == (3, 12, 12)


def test_normalization_and_augmentation(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", size=(16, 16))
    splits = load_folder_dataset(root)
    raw = splits.train.subset(range(len(splits.train)), transform=None).get_batch(torch.arange(len(splits.train)))[0]
    pixels = raw.double().div(255).permute(1, 0, 2, 3).reshape(3, -1)
    assert torch.allclose(torch.tensor(splits.info.mean, dtype=torch.float64), pixels.mean(1), atol=1e-4)
    assert torch.allclose(torch.tensor(splits.info.std, dtype=torch.float64), pixels.std(1, unbiased=False), atol=1e-4)
    normalized, _ = splits.train_eval.get_batch(torch.arange(len(splits.train_eval)))
    assert abs(float(normalized.mean())) < 1e-3  # the training split comes out centred
    augment = splits.train.transform.steps[0]
    assert isinstance(augment, Augment) and (augment.size, augment.padding, augment.flip) == (16, 2, True)
    torch.manual_seed(0)
    assert not torch.equal(splits.train.get_batch(torch.arange(8))[0], normalized[:8])  # train augments, train_eval not
    assert load_folder_dataset(root, normalize="imagenet").info.mean == IMAGENET_MEAN
    with pytest.raises(ValueError, match="normalize must be 'train' or 'imagenet'; got 'cifar'"):
        load_folder_dataset(root, normalize="cifar")


def test_stratified_split_rounds_per_class_and_checks_fractions() -> None:
    targets = [0] * 20 + [1] * 5
    rest, part = stratified_split(targets, [0.2], seed=0)
    assert Counter(targets[i] for i in part) == {0: 4, 1: 1} and sorted(rest + part) == list(range(25))
    with pytest.raises(ValueError, match="sum to less than 1"):
        stratified_split(targets, [0.5, 0.5])


def test_cli_options_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="folder needs --data-dir"):
        parse_args(["folder"])
    with pytest.raises(ValueError, match="--image-size apply to the 'folder' data set only"):
        parse_args(["cifar10", "--image-size", "32"])
    with pytest.raises(ValueError, match="val_fraction must be a fraction in \\[0, 1\\); got 1.5"):
        parse_args(["folder", "--data-dir", str(tmp_path), "--val-fraction", "1.5"])
    config = parse_args(["folder", "--data-dir", str(tmp_path / "mine"), "--image-size", "16", "--device", "cpu"])
    assert config.folder.image_size == 16 and config.out == "runs/folder-mine-res20s-quick-imp-vs-prac"
    assert parse_args(["cifar10", "--device", "cpu"]).data_dir == "data"


def test_presets_are_sized_for_the_folder(tmp_path: Path) -> None:
    root = write_folder(tmp_path / "data", per_class=6)
    config = parse_args(["folder", "--data-dir", str(root), "--preset", "smoke", "--device", "cpu", "--quiet"])
    splits, preset = load_folder_splits(config)
    assert len(splits.train) == 12 and preset.batch_size == 12  # smoke's batch of 20 > the 12 training images
    assert preset.train_size == config.preset.train_size == 120  # an upper bound here: all 12 used
    config = parse_args(["folder", "--data-dir", str(root), "--preset", "smoke", "--batch-size", "13", "--device", "cpu"])
    with pytest.raises(ValueError, match="--batch-size 13 is more than the 12 training images"):
        load_folder_splits(config)
    config = parse_args(["folder", "--data-dir", str(root), "--preset", "smoke", "--train-size", "9", "--device", "cpu"])
    splits, preset = load_folder_splits(config)
    assert Counter(splits.train.targets) == Counter(splits.train_eval.targets) == {0: 3, 1: 3, 2: 3}
    config = parse_args(["folder", "--data-dir", str(root), "--preset", "smoke", "--train-size", "50", "--device", "cpu"])
    with pytest.raises(ValueError, match="--train-size 50 is more than the 12 images"):
        load_folder_splits(config)


def test_folder_smoke_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = write_folder(tmp_path / "shapes", per_class=12)
    out = tmp_path / "run"
    args = ["folder", "--data-dir", str(root), "--preset", "smoke", "--rounds", "2", "--out", str(out),
            "--quiet", "--threads", "1", "--device", "cpu"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["num_classes"] == 3 and results["data"]["classes"] == CLASSES
    assert (results["data"]["train"], results["data"]["val"], results["data"]["test"]) == (30, 3, 3)
    assert [r["round"] for r in results["rows"]] == [0, 1] and results["rows"][1]["prac_test_acc"] is not None
    assert results["config"]["folder"]["normalize"] == "train" and results["config"]["preset"]["batch_size"] == 20
    assert "folder shapes" in (out / "table.md").read_text()
    assert main(args[:-2] + ["--device", "cpu", "--batch-size", "31"]) == 2
    assert "--batch-size 31 is more than the 30 training images" in capsys.readouterr().err
