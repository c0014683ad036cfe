"""Presets (training schedules) and the configuration of one reproduction run."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FOLDER", "FolderOptions", "Preset", "PRESETS", "RunConfig", "get_preset"]

#: The ``dataset`` name of an image folder of one's own (``--data-dir DIR`` with ``DIR/train/<class>/...``).
FOLDER = "folder"


@dataclass(frozen=True)
class Preset:
    """One training schedule for ticket finding.

    Args:
        name: preset name.
        epochs: epochs of a full round (round 0, every full-data IMP round, every retraining).
        lr: initial learning rate of SGD (momentum ``momentum``, weight decay ``weight_decay``).
        milestones: epochs at which the learning rate is multiplied by ``gamma`` (``lr_schedule="step"``).
        batch_size: images per optimizer step.
        rounds: rounds of IMP, round 0 (dense training) included; round k trains the network
            at sparsity ``1 - (1 - amount) ** k``.
        amount: fraction of the surviving weights pruned after each round.
        rewind_epoch: the surviving weights are rewound to their values after this many
            epochs of round 0 (may be fractional; 0 = the initialization, the original LTH).
        lr_schedule: ``"step"`` (decay by ``gamma`` at the milestones, the paper) or
            ``"cosine"`` (to 0 at the end of the round).
        warmup_epochs: linear learning-rate warm-up at the start of the schedule.
        nesterov: Nesterov momentum.
        kinds: which weights are pruned (``("conv",)`` = convolutions, as the paper).
        keep_dense: roles kept dense (``("classifier",)``: the classifier, as the paper).
        val_size: images held out of the training set as the validation split (None = the
            data set's: 5,000 for CIFAR, 10,000 for Tiny ImageNet).
        train_size: images of the training split used (class-balanced subset); None = all.
        val_images: images of the validation split used to pick best-validation
            checkpoints; None = all.
        test_images: images of the test set evaluated; None = the whole official test set.
        early_bird: stop PrAC rounds early when the mask stops moving (the reference's
            optional early-bird stop); full-data IMP never stops early.
        early_bird_window: consecutive mask distances below 0.08 that stop a round (5 in the
            paper's 182-epoch rounds; a round must last longer than the window to stop early).
        min_step_fraction: the small-set floor of ``tickets.prune``: a PrAC round trains at
            least this fraction of a full round's optimizer steps (0 = the paper's schedule).
        num_workers: DataLoader worker processes.
        note: what the preset is for, printed in the outputs.
    """

    name: str
    epochs: int
    lr: float
    milestones: tuple[int, ...]
    batch_size: int
    rounds: int
    amount: float
    rewind_epoch: float
    lr_schedule: str = "step"
    warmup_epochs: float = 0.0
    nesterov: bool = False
    momentum: float = 0.9
    weight_decay: float = 1e-4
    gamma: float = 0.1
    kinds: tuple[str, ...] = ("conv",)
    keep_dense: tuple[str, ...] = ("classifier",)
    val_size: int | None = None
    train_size: int | None = None
    val_images: int | None = None
    test_images: int | None = None
    early_bird: bool = False
    early_bird_window: int = 5
    min_step_fraction: float = 0.1
    num_workers: int = 0
    note: str = ""

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1 (round 0 is dense training), got {self.rounds}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if not 0.0 < self.amount < 1.0:
            raise ValueError(f"amount must be a fraction in (0, 1), got {self.amount}")
        if not 0 <= self.rewind_epoch < self.epochs:
            raise ValueError(f"rewind_epoch must be in [0, {self.epochs}), got {self.rewind_epoch}")
        if self.lr_schedule not in ("step", "cosine"):
            raise ValueError(f"lr_schedule must be 'step' or 'cosine', got {self.lr_schedule!r}")
        if any(not 0 < m <= self.epochs for m in self.milestones):
            raise ValueError(f"milestones must lie in (0, {self.epochs}], got {self.milestones}")

    def sparsity(self, round_index: int) -> float:
        """Sparsity (over the pruned tensors) of the network trained in round ``round_index``."""
        return 1.0 - (1.0 - self.amount) ** round_index

    def replace(self, **changes: Any) -> Preset:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


PRESETS: dict[str, Preset] = {
    "paper": Preset(
        name="paper", epochs=182, lr=0.1, milestones=(91, 136), batch_size=128, rounds=16, amount=0.2,
        rewind_epoch=3, note="the reference schedule (Zhang et al. 2021): 16 rounds of 182 epochs; days on one GPU",
    ),
    # One quick round prunes 36% = two paper rounds (0.64 = 0.8^2), so rounds 1-4 land exactly
    # on the paper's 36.00%, 59.04%, 73.79% and 83.22% sparsities. All 45,000 training images and
    # the whole test set; 7-epoch rounds with a one-cycle-like schedule (1 warm-up epoch, cosine
    # to 0): 6 epochs reached 79.6% test accuracy, 7 is the shortest that passes 80% on 2 CPU cores (bf16 autocast,
    # channels_last, batched augmentation). Rewind point: half an epoch (7% of a round).
    "quick": Preset(
        name="quick", epochs=7, lr=0.2, milestones=(), batch_size=256, rounds=5, amount=0.36,
        rewind_epoch=0.5, lr_schedule="cosine", warmup_epochs=1.0, nesterov=True, weight_decay=5e-4,
        val_images=2000, early_bird_window=1,
        note="reduced schedule for 2 CPU cores (ResNet-20s on CIFAR-10 in about an hour): all 45,000 "
        "training images, 7-epoch rounds (1 warm-up epoch, cosine), batch 256, 36% pruned per round, "
        "5 rounds, the full test set",
    ),
    "smoke": Preset(
        name="smoke", epochs=2, lr=0.05, milestones=(1,), batch_size=20, rounds=3, amount=0.36,
        rewind_epoch=1, val_size=50, train_size=120, val_images=20, test_images=20,
        note="end-to-end check in seconds; the numbers mean nothing",
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; a ValueError lists the valid names."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid: {sorted(PRESETS)}")
    return PRESETS[name]


@dataclass(frozen=True)
class FolderOptions:
    """How ``dataset="folder"`` reads ``data_dir`` (the arguments of
    :func:`tickets.data.load_folder_dataset`; checked there, against the folder).

    Args:
        image_size: resize every image to ``image_size`` x ``image_size``; None keeps the
            images' size (they must then all share one square size).
        val_fraction: when ``val/`` is absent, the fraction of every class of ``train/`` held
            out for validation (None = 0.1); an error when ``val/`` exists.
        test_fraction: likewise for ``test/`` (None = 0.1).
        normalize: ``"train"`` (statistics of the training split) or ``"imagenet"``.
    """

    image_size: int | None = None
    val_fraction: float | None = None
    test_fraction: float | None = None
    normalize: str = "train"

    def __post_init__(self) -> None:
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"image_size must be >= 1 (or None to keep the images' size); got {self.image_size}")
        for name in ("val_fraction", "test_fraction"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= value < 1.0:
                raise ValueError(f"{name} must be a fraction in [0, 1); got {value}")
        if self.normalize not in ("train", "imagenet"):
            raise ValueError(f"normalize must be 'train' or 'imagenet'; got {self.normalize!r}")


@dataclass
class RunConfig:
    """Everything that defines a reproduction run (saved in ``results.json``).

    Args:
        dataset: ``cifar10``, ``cifar100``, ``tiny-imagenet``, or ``folder`` (an image folder of
            one's own in ``data_dir``, read by :func:`tickets.data.load_folder_dataset`).
        arch: architecture name for :func:`tickets.models.create_model`.
        preset: the schedule.
        experiment: a key of ``EXPERIMENTS``.
        data_dir: where the data is, or is downloaded to.
        out: output folder (tables, plots, results and checkpoints for resuming).
        seed: seed of the initialization, data order and augmentation (same for both sides).
        device: ``cpu``, ``cuda``, ... (default: cuda when available).
        transfer_arch: for ``transfer``, the architecture whose PrAC set is reused.
        threads: torch CPU threads (None = torch's default).
        quiet: no progress bars.
        measure: retrain the other finder's tickets on the full split to measure them (the
            paper's comparison); False reports the searches only (their rounds' own accuracies
            and costs), with the PrAC ticket column empty.
        folder: for ``dataset="folder"``, how the folder is read (None = the defaults);
            must be None for the built-in data sets.
        finders: for ``experiment="ablation"``, the finders to run and compare (names of
            ``benchmarks.reproduce.ablation.FINDERS``); None = its default four. For
            ``experiment="transfer"``, the finders the transferred sets are compared with
            (``benchmarks.reproduce.transfer.TRANSFER_CHOICES``); None = full and random.
        measure_rounds: which rounds' tickets to measure (each >= 1), in that order (round-major
            across finders, so that a run cut short still compares every finder at the first
            rounds); None = every round >= 1. Measuring is the costliest part of a comparison
            (one full-data training per ticket and finder).
        extra: free-form; ``extra["overrides"]`` lists the preset fields set on the command
            line (``folder`` refuses those that do not fit the data instead of sizing them).
    """

    dataset: str
    arch: str
    preset: Preset
    experiment: str = "imp-vs-prac"
    data_dir: str = "data"
    out: str = "runs/reproduce"
    seed: int = 0
    device: str = "cpu"
    transfer_arch: str | None = None
    threads: int | None = None
    quiet: bool = False
    measure: bool = True
    extra: dict[str, Any] = field(default_factory=dict)
    folder: FolderOptions | None = None
    finders: tuple[str, ...] | None = None
    measure_rounds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.measure_rounds is None:
            return
        rounds = tuple(self.measure_rounds)
        bad = [k for k in rounds if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k < self.preset.rounds]
        if bad or not rounds:
            raise ValueError(f"measure_rounds must name rounds 1..{self.preset.rounds - 1} (round 0 is the dense "
                             f"network, not a ticket); got {list(rounds)}")
        if len(set(rounds)) != len(rounds):
            raise ValueError(f"measure_rounds names a round twice: {list(rounds)}")
        self.measure_rounds = rounds

    def rounds_to_measure(self, n_rounds: int) -> list[int]:
        """The rounds (>= 1) of an ``n_rounds``-round search whose tickets are measured, in order."""
        if not self.measure:
            return []
        if self.measure_rounds is None:
            return list(range(1, n_rounds))
        return [k for k in self.measure_rounds if k < n_rounds]

    @property
    def data_label(self) -> str:
        """The data set's name in titles: ``dataset``, or ``folder <name of data_dir>``."""
        if self.dataset != FOLDER:
            return self.dataset
        from pathlib import Path

        return f"{FOLDER} {Path(self.data_dir).expanduser().resolve().name}"

    @property
    def suffix(self) -> str:
        """Appended to the output files' names: ``"-early-bird"`` for the early-bird variant, so
        that it can share ``--out`` (and the full-data IMP search) with the plain run."""
        return "-early-bird" if self.preset.early_bird and self.experiment == "imp-vs-prac" else ""

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["preset"] = self.preset.to_dict()
        return d
