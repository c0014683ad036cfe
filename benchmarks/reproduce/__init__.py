"""Reproduce the tables of *Efficient Lottery Ticket Finding: Less Data is More* (ICML 2021).

``python -m benchmarks.reproduce {cifar10,cifar100,tiny-imagenet,folder} [--arch A] [--preset P]
[--data-dir DIR] [--out DIR] [--experiment E]`` runs one experiment of :data:`EXPERIMENTS`
with one preset of :data:`PRESETS` and writes to ``--out``:

- ``table.md``: the per-sparsity table (and a summary);
- ``results.json``: every number, the exact configuration and the command line;
- ``accuracy.png`` (test accuracy vs sparsity) and ``prac_cost.png`` (PrAC set size and
  optimizer steps per round);
- ``checkpoints/``: what a rerun of the same command resumes from.

``--experiment ablation`` (:mod:`benchmarks.reproduce.ablation`) compares full-data IMP, PrAC
IMP, random subsets of the PrAC sets' sizes and the full data for the PrAC rounds' steps
(``--finders`` selects) from one shared round 0, and plots ``accuracy.png`` and ``cost.png``.

``folder`` is an image folder of one's own, ``--data-dir DIR`` with ``DIR/train/<class>/...``
(``val/`` and ``test/`` optional: stratified splits of ``train/`` when absent), read by
:func:`tickets.data.load_folder_dataset` (options ``--image-size``, ``--val-fraction``,
``--test-fraction``, ``--normalize``); the presets are sized for it (:func:`load_folder_splits`).

From Python::

    from benchmarks.reproduce import RunConfig, get_preset, run
    results = run(RunConfig("cifar10", "res20s", get_preset("smoke"), data_dir="...", out="..."))
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks.reproduce.config import FOLDER, PRESETS, FolderOptions, Preset, RunConfig, get_preset
from benchmarks.reproduce.experiments import EXPERIMENTS, Context, register_experiment
import benchmarks.rewinding  # noqa: E402,F401  registers --experiment rewinding (issue 6)
import benchmarks.reproduce.ablation  # noqa: E402,F401  registers --experiment ablation
import benchmarks.reproduce.transfer  # noqa: E402,F401  registers --experiment transfer

if TYPE_CHECKING:
    from tickets.data.datasets import DataSplits

__all__ = ["EXPERIMENTS", "FOLDER", "FolderOptions", "PRESETS", "Preset", "RunConfig", "get_preset", "load_folder_splits", "main",
           "parse_args", "register_experiment", "run"]


def run(config: RunConfig, *, command: str | None = None) -> dict[str, Any]:
    """Run ``config.experiment`` and write its outputs into ``config.out``; returns the results
    dict that ``results.json`` holds."""
    import torch

    from tickets.data.datasets import DATASETS, load_dataset
    from tickets.models import check_model_name

    if config.experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {config.experiment!r}; valid: {sorted(EXPERIMENTS)}")
    if config.dataset not in DATASETS and config.dataset != FOLDER:
        raise ValueError(f"unknown data set {config.dataset!r}; valid: {sorted([*DATASETS, FOLDER])}")
    if config.folder is not None and config.dataset != FOLDER:
        raise ValueError(f"folder options (image size, split fractions, normalization) apply to dataset {FOLDER!r} only, "
                         f"not {config.dataset!r}")
    check_model_name(config.arch)
    if config.experiment == "transfer":
        check_model_name(config.transfer_arch or "")
    if config.experiment == "ablation" and config.preset.early_bird:
        raise ValueError("--experiment ablation compares finders at equal optimizer steps; --early-bird would make the "
                         "PrAC rounds' steps depend on when they stop: run it without --early-bird")
    if config.finders is not None:
        from benchmarks.reproduce.ablation import check_finders

        from benchmarks.reproduce.transfer import check_transfer_finders

        if config.experiment not in ("ablation", "transfer"):
            raise ValueError(f"finders (--finders) apply to --experiment ablation and transfer only, not "
                             f"{config.experiment!r}")
        config.finders = (check_finders if config.experiment == "ablation" else check_transfer_finders)(config.finders)
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    from tickets.parallel import init_from_env, world

    init_from_env(config.device)  # under torchrun: every process runs this, rank 0 writes and logs
    rank, world_size = world()
    writer = rank == 0
    out = Path(config.out)
    if writer:
        out.mkdir(parents=True, exist_ok=True)
    log_file = (out / "log.txt").open("a") if writer else None

    def log(message: str) -> None:
        if not writer:
            return
        stamp = time.strftime("%H:%M:%S")
        print(f"[{stamp}] {message}", file=sys.stderr, flush=True)
        log_file.write(f"[{stamp}] {message}\n")  # type: ignore[union-attr]
        log_file.flush()  # type: ignore[union-attr]

    if world_size > 1:
        log(f"torch.distributed: {world_size} processes; batch size {config.preset.batch_size} is the global batch")

    started = time.time()
    preset = config.preset
    log(f"{config.experiment} on {config.dataset} with {config.arch}, preset {preset.name}: {preset.note}")
    if config.dataset == FOLDER:
        splits, preset = load_folder_splits(config)
        config.preset = preset  # sized for the folder: results.json records what ran
    else:
        splits = load_dataset(
            config.dataset, config.data_dir, val_size=preset.val_size, train_size=preset.train_size, test_size=preset.test_images,
            seed=config.seed, progress=not config.quiet,
        )
    if preset.val_images is not None and splits.val is not None and preset.val_images < len(splits.val):
        from tickets.data.splits import balanced_subset

        splits.val = splits.val.subset(balanced_subset(splits.val.targets, preset.val_images, config.seed + 2))
        splits.notes.append(f"validation reduced to {preset.val_images} class-balanced images (seed {config.seed + 2})")
    log(f"data: {splits.describe()}")
    ctx = Context(config=config, splits=splits, out=out, log=log)
    results = EXPERIMENTS[config.experiment](ctx)
    results = {
        "command": command or "",
        "experiment": config.experiment,
        "config": config.to_dict(),
        "data": splits.describe(),
        "environment": {
            "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
        },
        "wall_time_s_this_invocation": round(time.time() - started, 1),
        **results,
    }
    from benchmarks.reproduce.report import write_json

    results["environment"]["processes"] = world_size
    if writer:
        write_json(results, out / f"results{config.suffix}.json")
        (out / f"table{config.suffix}.md").write_text(results.get("markdown", ""))
        log(f"wrote {out / f'table{config.suffix}.md'}, {out / f'results{config.suffix}.json'} and plots")
        print(results.get("summary", ""), flush=True)
        log_file.close()  # type: ignore[union-attr]
    return results


def load_folder_splits(config: RunConfig) -> tuple[DataSplits, Preset]:
    """The splits of ``config.data_dir`` read as an image folder of one's own, and the preset
    sized for them.

    The folder is read by :func:`tickets.data.load_folder_dataset` with ``config.folder``'s
    options and ``config.seed``. A preset's absolute sizes are upper bounds there:
    ``train_size`` and ``test_images`` reduce the splits (class-balanced, the seeds
    ``load_dataset`` uses) only when they are smaller, and a ``batch_size`` larger than the
    training split becomes the split's size; ``val_size`` (a count for the built-in data sets)
    is not used (``val/`` or the validation fraction decides). A size set on the command line
    (``config.extra["overrides"]``) that does not fit is an error instead. For
    ``--experiment rewinding`` (its own batch sizes), a batch larger than its training images
    is an error. Every adjustment is added to ``splits.notes``.

    Returns ``(splits, preset)``.

    Raises:
        FileNotFoundError, ValueError: as :func:`tickets.data.load_folder_dataset`, and for
            command-line sizes that exceed the data.
    """
    from tickets.data.splits import balanced_subset
    from tickets.data.datasets import load_folder_dataset

    options = config.folder or FolderOptions()
    preset = config.preset
    explicit = set(config.extra.get("overrides", ()))
    splits = load_folder_dataset(
        config.data_dir, image_size=options.image_size, val_fraction=options.val_fraction,
        test_fraction=options.test_fraction, normalize=options.normalize, seed=config.seed, progress=not config.quiet,
    )
    n = len(splits.train)
    if preset.train_size is not None:
        if preset.train_size < n:
            keep = balanced_subset(splits.train.targets, preset.train_size, config.seed)
            splits.train, splits.train_eval = splits.train.subset(keep), splits.train_eval.subset(keep)
            splits.notes.append(f"training split reduced to {preset.train_size} class-balanced images (seed {config.seed})")
        elif "train_size" in explicit and preset.train_size > n:
            raise ValueError(f"--train-size {preset.train_size} is more than the {n} images of the training split of "
                             f"{config.data_dir}; pass at most {n} (or 0 for all of them)")
        else:
            splits.notes.append(f"preset {preset.name}'s training size {preset.train_size} >= the training split: all {n} images used")
    if preset.test_images is not None:
        if preset.test_images < len(splits.test):
            splits.test = splits.test.subset(balanced_subset(splits.test.targets, preset.test_images, config.seed + 1))
            splits.notes.append(f"test set reduced to {preset.test_images} class-balanced images (seed {config.seed + 1})")
        else:
            splits.notes.append(f"preset {preset.name}'s test size {preset.test_images} >= the test split: all {len(splits.test)} images used")
    if preset.val_size is not None:
        splits.notes.append(f"preset {preset.name}'s val_size ({preset.val_size}) is for the built-in data sets; "
                            f"validation here = {len(splits.val) if splits.val is not None else 0} images (val/ or the validation fraction)")
    n = len(splits.train)
    if preset.batch_size > n:
        if "batch_size" in explicit:
            raise ValueError(f"--batch-size {preset.batch_size} is more than the {n} training images of "
                             f"{config.data_dir}; pass at most {n}")
        splits.notes.append(f"batch size {preset.batch_size} of preset {preset.name} > the {n} training images: batch size {n}")
        preset = preset.replace(batch_size=n)
    if config.experiment == "rewinding":
        from benchmarks.rewinding import settings_for

        settings = settings_for(preset)
        images = min(n, settings.train_images or n)
        if settings.batch_size > images:
            raise ValueError(f"the rewinding experiment's {settings.name} settings train on batches of {settings.batch_size}, "
                             f"more than the {images} training images of {config.data_dir}; use a smaller preset "
                             f"(smoke: batch 16) or more images")
    return splits, preset


def parse_args(argv: Sequence[str] | None = None) -> RunConfig:
    """The command line as a :class:`RunConfig`."""
    from tickets.data.datasets import DATASETS

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.reproduce",
        description="Reproduce the PrAC paper's tables: full-data IMP vs PrAC IMP, and PrAC-set transfer.",
    )
    parser.add_argument("dataset", choices=sorted([*DATASETS, FOLDER]),
                        help=f"a built-in data set, or {FOLDER!r}: an image folder of your own in --data-dir")
    parser.add_argument("--arch", default="res20s", help="res20s, res56s, res18, res50, vgg16_bn, timm:<name>, torchvision:<name> (default res20s)")
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS), help="schedule (default quick)")
    parser.add_argument("--experiment", default="imp-vs-prac", choices=sorted(EXPERIMENTS), help="default imp-vs-prac")
    parser.add_argument("--data-dir", default=None,
                        help="image folder (train/<class>, test/<class>) or torchvision download folder (default data; "
                        "required for folder: DIR/train/<class>/<images>, DIR/val/ and DIR/test/ optional)")
    parser.add_argument("--out", default=None, help="output folder (default runs/<dataset>-<arch>-<preset>-<experiment>)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda when available)")
    parser.add_argument("--transfer-from", default="res20s", help="transfer: architecture whose PrAC set is reused (default res20s)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs per round (milestones scale along)")
    parser.add_argument("--rounds", type=int, default=None, help="override the preset's number of rounds (round 0 included)")
    parser.add_argument("--train-size", type=int, default=None, help="override the preset's training-subset size (0 = the whole split)")
    parser.add_argument("--early-bird", action=argparse.BooleanOptionalAction, default=None, help="early-bird stop on PrAC rounds")
    parser.add_argument("--min-step-fraction", type=float, default=None,
                        help="small-set floor: a PrAC round trains at least this fraction of a full round's steps (default 0.1; 0 = off)")
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    parser.add_argument("--lr", type=float, default=None, help="override the preset's initial learning rate")
    folder = parser.add_argument_group("folder", "options of the folder data set only")
    folder.add_argument("--image-size", type=int, default=None,
                        help="resize every image to N x N (default: keep the size, which all images must then share)")
    folder.add_argument("--val-fraction", type=float, default=None,
                        help="without DIR/val/: fraction of every class of train/ held out for validation (default 0.1; 0 = none)")
    folder.add_argument("--test-fraction", type=float, default=None,
                        help="without DIR/test/: fraction of every class of train/ held out for testing (default 0.1)")
    folder.add_argument("--normalize", choices=("train", "imagenet"), default=None,
                        help="normalization statistics: of the training split (default) or ImageNet's")
    parser.add_argument("--finders", default=None,
                        help="ablation: comma-separated finders to run (default full,prac,random,same-steps; the PrAC "
                        "search always runs, the others start from its round 0); transfer: the finders the "
                        "transferred sets are compared with (default full,random; also same-steps)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--measure", action=argparse.BooleanOptionalAction, default=True,
                        help="retrain the PrAC tickets on the full split to measure them (default); --no-measure reports the searches only")
    parser.add_argument("--measure-rounds", default=None, metavar="K,K,...",
                        help="measure only these rounds' tickets, in this order, every finder at a round before the next "
                             "round (default: every round >= 1); cached, so a later run with more rounds adds only those")
    parser.add_argument("--selection", default=None, metavar="RULE,RULE,...",
                        help="ablation: add PrAC IMP with these selection rules (paper, el2n, easiest, forgetting, random, "
                             "budget; see docs/prac.md) to the finders, as finders prac-RULE")
    args = parser.parse_args(argv)

    preset = get_preset(args.preset)
    changes: dict[str, Any] = {}
    if args.epochs is not None:
        scale = args.epochs / preset.epochs
        changes["epochs"] = args.epochs
        changes["milestones"] = tuple(max(1, round(m * scale)) for m in preset.milestones)
        changes["rewind_epoch"] = min(preset.rewind_epoch, args.epochs - 1)
    if args.rounds is not None:
        changes["rounds"] = args.rounds
    if args.train_size is not None:
        changes["train_size"] = args.train_size or None
    if args.early_bird is not None:
        changes["early_bird"] = args.early_bird
    if args.min_step_fraction is not None:
        changes["min_step_fraction"] = args.min_step_fraction
    if args.batch_size is not None:
        changes["batch_size"] = args.batch_size
    if args.lr is not None:
        changes["lr"] = args.lr
    overrides = sorted(changes)
    folder_args = {"--image-size": args.image_size, "--val-fraction": args.val_fraction,
                   "--test-fraction": args.test_fraction, "--normalize": args.normalize}
    if args.dataset == FOLDER:
        if args.data_dir is None:
            raise ValueError(f"{FOLDER} needs --data-dir DIR, the folder holding train/<class>/<images> "
                             f"(val/<class>/... and test/<class>/... optional)")
        folder_options: FolderOptions | None = FolderOptions(
            image_size=args.image_size, val_fraction=args.val_fraction, test_fraction=args.test_fraction,
            normalize=args.normalize or "train",
        )
    else:
        given = [name for name, value in folder_args.items() if value is not None]
        if given:
            raise ValueError(f"{', '.join(given)} apply to the {FOLDER!r} data set only, not {args.dataset!r}")
        folder_options = None
    if changes:
        preset = preset.replace(name=f"{preset.name}*", **changes)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    data_dir = args.data_dir or "data"
    label = args.dataset if args.dataset != FOLDER else f"{FOLDER}-{Path(data_dir).expanduser().resolve().name}"
    out = args.out or f"runs/{label}-{args.arch.replace(':', '-')}-{args.preset}-{args.experiment}"
    return RunConfig(
        dataset=args.dataset, arch=args.arch, preset=preset, experiment=args.experiment, data_dir=data_dir,
        out=out, seed=args.seed, device=args.device, transfer_arch=args.transfer_from, threads=args.threads,
        quiet=args.quiet, measure=args.measure, extra={"overrides": overrides} if overrides else {}, folder=folder_options,
        finders=_finders(args.finders, args.experiment, args.selection), measure_rounds=_rounds(args.measure_rounds),
    )


def _rounds(value: str | None) -> tuple[int, ...] | None:
    """``--measure-rounds 2,4`` as a tuple of ints (range checked by RunConfig), or None."""
    if value is None:
        return None
    try:
        return tuple(int(part) for part in value.split(","))
    except ValueError:
        raise ValueError(f"--measure-rounds takes round numbers separated by commas, like 2,4; got {value!r}") from None


def _finders(value: str | None, experiment: str, selection: str | None = None) -> tuple[str, ...] | None:
    """``--finders a,b,c`` and ``--selection r1,r2`` checked (known names, no repeats; ablation,
    and ``--finders`` for transfer): the finders to run, or None (the experiment's default)."""
    if value is None and selection is None:
        return None
    from benchmarks.reproduce.ablation import DEFAULT_FINDERS, check_finders, selection_finders

    if experiment == "transfer" and selection is None:
        from benchmarks.reproduce.transfer import check_transfer_finders

        return check_transfer_finders(value.split(","))
    if experiment != "ablation":
        flag = "--finders" if value is not None else "--selection"
        raise ValueError(f"{flag} applies to --experiment ablation only, not {experiment!r} (the ablation compares a "
                         f"selection rule with the paper's rule, random subsets and full-data IMP at equal cost)")
    names = value.split(",") if value is not None else list(DEFAULT_FINDERS)
    if selection is not None:
        names += [n for n in selection_finders(selection.split(",")) if n not in names]
    return check_finders(names)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks.reproduce``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        config = parse_args(argv)
        run(config, command="python -m benchmarks.reproduce " + " ".join(shlex.quote(a) for a in argv))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0

