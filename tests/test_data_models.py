"""Data loading (tickets.data) and the architecture registry (tickets.models)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader
from PIL import Image

from tickets.data.transforms import Augment
from tickets.data.splits import balanced_subset, validation_indices
from tickets.data.datasets import load_dataset
from tickets.data.folders import load_image_folder
from tickets.models import create_model, list_models


def write_png(image: torch.Tensor, path: str) -> None:
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(path)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_image_folder(root: Path, classes: list[str], train_per_class: int, test_per_class: int,
                       size: int = 32, test_split: str = "test") -> None:
    """A tiny image folder whose images are class-coloured noise (learnable, lossless PNG)."""
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", train_per_class), (test_split, test_per_class)):
        for k, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = torch.tensor([(37 * k) % 256, (91 * k) % 256, (151 * k) % 256]).view(3, 1, 1)
                noise = torch.randint(-40, 41, (3, size, size), generator=g)
                write_png((base + noise).clamp(0, 255).to(torch.uint8), str(folder / f"{i:04d}.png"))


@pytest.fixture(scope="module")
def cifar_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar")
    write_image_folder(root, CIFAR10_CLASSES, train_per_class=6, test_per_class=2)
    return root


def test_image_folder_cifar_splits_sizes_and_labels(cifar_folder: Path) -> None:
    splits = load_dataset("cifar10", cifar_folder, val_size=10)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (50, 10, 20)
    assert len(splits.train_eval) == len(splits.train)
    # class-sorted folder: validation is the last image of every class, not the last class
    assert sorted(splits.val.targets) == list(range(10))
    x, y = splits.train[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and y == 0
    assert splits.describe()["source"].startswith("image folder")


def test_train_eval_has_no_augmentation_and_matches_train_samples(cifar_folder: Path) -> None:
    splits = load_dataset("cifar10", cifar_folder, val_size=10)
    assert splits.train_eval.targets == splits.train.targets
    a, _ = splits.train_eval[3]
    b, _ = splits.train_eval[3]
    assert torch.equal(a, b)


def test_validation_is_last_indices_when_not_class_sorted() -> None:
    targets = [3, 1, 2, 0, 1, 2, 3, 0, 1, 2]
    assert validation_indices(targets, 3) == [7, 8, 9]
    assert validation_indices(sorted(targets), 4) == [1, 4, 7, 9]


def test_validation_size_errors_name_the_value() -> None:
    with pytest.raises(ValueError, match="val_size"):
        validation_indices([0, 1], 5)
    with pytest.raises(ValueError, match="class 1"):
        validation_indices([0, 0, 0, 1, 2, 2, 2], 3)


def test_balanced_subset_is_even_and_deterministic() -> None:
    targets = [c for c in range(4) for _ in range(25)]
    sub = balanced_subset(targets, 20, seed=1)
    assert sub == balanced_subset(targets, 20, seed=1) and len(set(sub)) == 20
    assert [sum(targets[i] == c for i in sub) for c in range(4)] == [5, 5, 5, 5]
    with pytest.raises(ValueError, match="subset size"):
        balanced_subset(targets, 0)


def test_train_size_and_test_size_reduce_splits(cifar_folder: Path) -> None:
    splits = load_dataset("cifar10", cifar_folder, val_size=10, train_size=20, test_size=10)
    assert len(splits.train) == 20 and len(splits.test) == 10
    assert sorted(set(splits.train.targets)) == list(range(10))


def test_augment_crops_and_flips_within_padding() -> None:
    torch.manual_seed(0)
    image = torch.arange(3 * 8 * 8, dtype=torch.uint8).view(3, 8, 8)
    outs = [Augment(8, padding=2)(image) for _ in range(50)]
    assert all(o.shape == (3, 8, 8) for o in outs)
    assert any(not torch.equal(o, image) for o in outs)


def test_loader_with_workers_yields_batches(cifar_folder: Path) -> None:
    splits = load_dataset("cifar10", cifar_folder, val_size=10)
    x, y = next(iter(DataLoader(splits.train, batch_size=8, num_workers=2)))
    assert x.shape == (8, 3, 32, 32) and y.shape == (8,)


def test_on_disk_dataset_reads_files_lazily(cifar_folder: Path) -> None:
    ds, classes = load_image_folder(cifar_folder, split="test", image_size=32, in_memory=False)
    assert classes == CIFAR10_CLASSES and not ds.in_memory and len(ds) == 20
    assert ds[0][0].shape == (3, 32, 32)


def test_tiny_imagenet_official_val_layout(tmp_path: Path) -> None:
    classes = ["n01", "n02"]
    write_image_folder(tmp_path, classes, train_per_class=3, test_per_class=0, size=64, test_split="val")
    for name in classes:  # official train layout: train/<wnid>/images/
        (tmp_path / "train" / name / "images").mkdir()
        for f in (tmp_path / "train" / name).glob("*.png"):
            f.rename(tmp_path / "train" / name / "images" / f.name)
    (tmp_path / "val" / "images").mkdir(parents=True, exist_ok=True)
    for d in classes:
        (tmp_path / "val" / d).rmdir()
    write_png(torch.zeros(3, 64, 64, dtype=torch.uint8), str(tmp_path / "val" / "images" / "val_0.png"))
    write_png(torch.zeros(3, 48, 48, dtype=torch.uint8), str(tmp_path / "val" / "images" / "val_1.png"))
    (tmp_path / "val" / "val_annotations.txt").write_text("val_0.png\tn02\t0\t0\t1\t1\nval_1.png\tn01\t0\t0\t1\t1\n")
    train, classes_found = load_image_folder(tmp_path, split="train", image_size=64)
    val, _ = load_image_folder(tmp_path, split="val", classes=classes_found, image_size=64)
    assert len(train) == 6 and val.targets == [1, 0]
    assert val[1][0].shape == (3, 64, 64)  # resized from 48


def test_unknown_dataset_and_missing_tiny_imagenet_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown data set 'mnist'.*cifar10"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(FileNotFoundError, match="Tiny ImageNet not found"):
        load_dataset("tiny-imagenet", tmp_path)


def test_cifar_absent_without_download_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="image folder"):
        load_dataset("cifar10", tmp_path / "empty", download=False)


@pytest.mark.parametrize("name,params", [("res20s", 269_722), ("res56s", 853_018), ("vgg16_bn", 14_728_266)])
def test_cifar_models_have_the_paper_sizes(name: str, params: int) -> None:
    model = create_model(name, num_classes=10)
    assert sum(p.numel() for p in model.parameters()) == params
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_option_a_shortcuts_have_no_weights() -> None:
    model = create_model("res20s", num_classes=10)
    convs = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 19 and not any("shortcut" in n for n in convs)


@pytest.mark.parametrize("name", ["res18", "timm:resnet18", "torchvision:mobilenet_v3_small"])
def test_imagenet_style_and_prefixed_models_take_cifar_classes(name: str) -> None:
    assert create_model(name, num_classes=100)(torch.randn(2, 3, 32, 32)).shape == (2, 100)


def test_unknown_models_list_the_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown model 'res21'.*res20s"):
        create_model("res21", 10)
    with pytest.raises(ValueError, match="timm has no model"):
        create_model("timm:not_a_model", 10)
    with pytest.raises(ValueError, match="torchvision has no model"):
        create_model("torchvision:not_a_model", 10)
    with pytest.raises(ValueError, match="num_classes"):
        create_model("res20s", 0)
    assert "timm:<name>" in list_models()
