"""The built-in demo: a PrAC ticket and a vanilla IMP ticket on handwritten digits, offline.

``python -m tickets`` loads scikit-learn's bundled digits (1,797 real 8x8 images, shipped
inside the package: no download), trains a small CNN, finds a ticket with PrAC-guided IMP
and one with vanilla (full-data) IMP from the same initialization and seed, prints the
per-round table (sparsity, PrAC set size, optimizer steps, accuracy, savings), measures the
last PrAC ticket on the full data, and saves both tickets. Round 0 (the dense network on all
the data) is the same computation for both methods, so it is trained once: the full-data
search starts from the PrAC search's round 0 (``start_from``). About a minute on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tickets.prac.sampler import PrACSampler
from tickets.pruning.parameters import prunable_parameters
from tickets.search.accounting import iteration_savings
from tickets.search.driver import prune
from tickets.ticket.ticket import Ticket, retrain
from torch.utils.data import Dataset

__all__ = ["DigitsCNN", "load_digits_splits", "run_demo", "main"]


class _Digits(Dataset):
    """Digit images as ``(1x8x8 float tensor, label)``; ``augment`` shifts by up to 1 pixel."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool = False) -> None:
        self.images, self.targets, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i]
        if self.augment:
            dx, dy = torch.randint(-1, 2, (2,)).tolist()
            image = torch.roll(image, shifts=(dy, dx), dims=(1, 2))
        return image, int(self.targets[i])


def load_digits_splits(seed: int = 0) -> dict[str, Dataset]:
    """scikit-learn's digits, split 1,200 train / 297 validation / 300 test (seeded shuffle).

    Returns ``train`` (with 1-pixel shift augmentation), ``train_eval`` (the same images,
    no augmentation), ``val`` and ``test``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    images = (images - 0.3) / 0.4
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    train, val, test = order[:1200], order[1200:1497], order[1497:]
    return {
        "train": _Digits(images[train], labels[train], augment=True),
        "train_eval": _Digits(images[train], labels[train]),
        "val": _Digits(images[val], labels[val]),
        "test": _Digits(images[test], labels[test]),
    }


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 digits (~25k weights): three 3x3 convolutions and a classifier."""

    def __init__(self, num_classes: int = 10, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def get_classifier(self) -> nn.Module:
        return self.classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def _pct(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def _table(prac: Any, full: Any, n: int, measured: dict[int, Any] | None = None) -> str:
    """The per-round comparison of the two searches (round 0 is the dense network: the same
    computation for both when the full-data search started from the PrAC search's round 0)."""
    savings = iteration_savings(prac, full)
    shared = bool(full.meta.get("start_from") or prac.meta.get("start_from"))
    measured = measured or {}
    header = ["round", "sparsity", "PrAC set", "epochs", "steps PrAC", "steps full", "acc PrAC round",
              "acc PrAC ticket", "acc full IMP", "saved (cum.)", "saved to a trained model"]
    rows = []
    for p, f, s in zip(prac.history, full.history, savings.rows):
        rows.append([
            str(p["round"]), _pct(p["sparsity"]), f"{p['set_size']:,} ({_pct(p['set_fraction'], 0)})",
            str(p["epochs"]), f"{p['steps']:,}", f"{f['steps']:,}", _pct(p["test_acc"]),
            _pct(p["test_acc"] if p["round"] == 0 else getattr(measured.get(p["round"]), "test_acc", None)),
            _pct(f["test_acc"]),
            _pct(s["saved"]), _pct(s["saved_trained"]),
        ])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    line = lambda r: "  ".join(c.rjust(w) for c, w in zip(r, widths))  # noqa: E731
    out = [line(header), "-" * (sum(widths) + 2 * (len(widths) - 1)), *map(line, rows)]
    extra = sum(m.steps for m in measured.values())
    first = savings.rows[0]["steps_full"] if savings.rows else 0
    if shared:
        note = (f"each total includes round 0's {first:,} steps, which ran once: the full-data search started from "
                f"the PrAC search's round 0, the same dense training on all data")
    else:
        note = "round 0 trained by each search and counted in both"
    out.append(
        f"total optimizer steps: PrAC IMP {savings.total_prac:,} vs full-data IMP {savings.total_full:,} "
        f"-> {_pct(savings.saved)} saved ({note}; training samples: {n:,})"
    )
    last = savings.rows[-1] if savings.rows else None
    if last is not None and last["round"] > 0:
        out.append(
            f"steps to a trained {_pct(prac.history[-1]['sparsity'])}-sparse model: PrAC IMP "
            f"{savings.total_prac_trained:,} (the search, then its ticket trained once on all the data: "
            f"{last['steps_trained_prac'] - last['cum_prac']:,} steps) vs full-data IMP {savings.total_full_trained:,} "
            f"(its last round is that model) -> {_pct(savings.saved_trained)} saved"
        )
    if measured:
        out.append(f"measuring the PrAC tickets (retraining on all {n:,} samples) took {extra:,} more steps, excluded "
                   f"above (the trained-model count includes one such training: of the round's own ticket)")
    return "\n".join(out)


def run_demo(
    *,
    rounds: int = 5,
    amount: float = 0.3,
    epochs: int = 15,
    out: str | Path = "tickets-demo",
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    threads: int | None = 1,
    measure: bool = True,
    quiet: bool = False,
    min_step_fraction: float = 0.1,
    precision: str | None = None,
) -> dict[str, Any]:
    """Find a PrAC ticket and a vanilla IMP ticket of :class:`DigitsCNN` on the digits.

    Args:
        rounds: IMP rounds, round 0 (dense) included.
        amount: fraction of the surviving convolution weights pruned per round.
        epochs: epochs of a full round (PrAC rounds run ``int(epochs * |PrAC| / N)``).
        out: folder where the two tickets are saved.
        seed: initialization, data split and training seed.
        checkpoint_dir: make the searches resumable there (None: no checkpoints).
        threads: torch CPU threads (default 1: these layers are too small to gain from more,
            and a busy machine slows multi-threaded torch down badly; None: leave as is).
        measure: retrain every PrAC ticket on the full data from its rewind point to measure
            it (the paper's comparison; these steps are excluded from the savings).
        quiet: no progress bars.
        min_step_fraction: the small-PrAC-set floor of :func:`tickets.prune` (0 = the paper's
            schedule even for tiny sets).
        precision: ``"auto"`` (None), ``"bf16"`` or ``"fp32"``, as in :func:`tickets.prune`.

    Returns:
        ``{"prac": Ticket, "imp": Ticket, "measured": {round: TrainResult}, "paths": {...},
        "table": str, "search_time_s": float}``.
    """

    if threads:
        torch.set_num_threads(threads)
    data = load_digits_splits(seed)
    torch.manual_seed(seed)
    dense = DigitsCNN()
    settings: dict[str, Any] = dict(
        rounds=rounds, amount=amount, epochs=epochs, batch_size=64, lr=0.05,
        lr_schedule=dict(milestones=[epochs // 2, 3 * epochs // 4], gamma=0.1), rewind_to="1ep",
        train_eval_data=data["train_eval"], eval_data=data["val"], test_data=data["test"], seed=seed, quiet=quiet,
        precision=precision,
    )
    found = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="tickets-demo-") as scratch:
        root = Path(checkpoint_dir) if checkpoint_dir is not None else Path(scratch)
        for name in ("prac", "imp"):  # PrAC first: it computes round 0 (with the statistics PrAC needs)
            model = copy.deepcopy(dense)
            params = prunable_parameters(model, keep_dense=("classifier",), kinds=("conv",))  # the PrAC paper's convention
            # full-data IMP: every sample every round, in the PrAC sampler's order for the seed, so that
            # round 0 is one computation and the full-data search starts from the PrAC search's round 0
            sampler = (PrACSampler(data["train"], seed=seed) if name == "prac"
                       else PrACSampler.replay(data["train"], [torch.arange(len(data["train"]))], seed=seed))
            if not quiet:
                print(f"\n== {'PrAC-guided IMP' if name == 'prac' else 'vanilla IMP (full data), from the same round 0'} ==",
                      file=sys.stderr)  # progress: on stderr with the per-epoch lines; the result goes to stdout
            extra = {"min_step_fraction": min_step_fraction} if name == "prac" else {"start_from": root / "prac"}
            found[name] = prune(model, sampler, parameters=params, checkpoint_dir=root / name, **settings, **extra)
        search_time = time.perf_counter() - started
        measured: dict[int, Any] = {}
        if measure:
            if not quiet:
                print("\n== measuring each PrAC ticket on the full data (excluded from the savings) ==", file=sys.stderr)
            for k in range(1, rounds):
                ticket_k = Ticket.load(root / "prac" / f"round_{k}.ticket")
                measured[k] = retrain(ticket_k, copy.deepcopy(dense), data["train"], epochs=epochs, batch_size=64,
                                      lr=0.05, lr_schedule=settings["lr_schedule"], eval_data=data["val"],
                                      test_data=data["test"], seed=seed, precision=precision)
    out = Path(out)
    paths = {name: str(ticket.save(out / f"digits-{name}.ticket")) for name, ticket in found.items()}
    table = _table(found["prac"], found["imp"], len(data["train"]), measured)
    return {"prac": found["prac"], "imp": found["imp"], "measured": measured, "paths": paths, "table": table,
            "search_time_s": search_time}


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m tickets``: run :func:`run_demo` and print the per-round table."""
    parser = argparse.ArgumentParser(
        prog="python -m tickets",
        description="Offline demo: find a PrAC ticket and a vanilla IMP ticket of a small CNN on "
        "scikit-learn's bundled handwritten digits, and print what each cost.",
    )
    parser.add_argument("--rounds", type=int, default=5, help="IMP rounds, dense round 0 included (default 5)")
    parser.add_argument("--amount", type=float, default=0.3, help="fraction of surviving weights pruned per round (0.3)")
    parser.add_argument("--epochs", type=int, default=15, help="epochs of a full round (default 15)")
    parser.add_argument("--out", default="tickets-demo", help="folder for the saved tickets (default ./tickets-demo)")
    parser.add_argument("--checkpoint-dir", default=None, help="make the searches resumable in this folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--no-measure", action="store_true", help="skip retraining the PrAC tickets on the full data")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or per-round lines")
    parser.add_argument("--min-step-fraction", type=float, default=0.1,
                        help="small-PrAC-set floor: a PrAC round trains at least this fraction of a full round's steps (0.1; 0 = off)")
    parser.add_argument("--precision", default=None, choices=["auto", "bf16", "fp32"], help="default auto")
    args = parser.parse_args(argv)
    result = run_demo(rounds=args.rounds, amount=args.amount, epochs=args.epochs, out=args.out, seed=args.seed,
                      checkpoint_dir=args.checkpoint_dir, threads=args.threads, measure=not args.no_measure,
                      quiet=args.quiet, min_step_fraction=args.min_step_fraction, precision=args.precision)
    prac = result["prac"]
    print("\nPer round: test accuracy at the best-validation epoch. 'PrAC round' = trained on the PrAC set")
    print("only (short schedule); 'PrAC ticket' = that round's mask and rewind weights retrained on the full")
    print("data, the paper's measure; 'full IMP' = the vanilla IMP round at the same sparsity. Round 0 is the")
    print("dense network, trained once for both searches. 'saved (cum.)' counts the steps spent finding the")
    print("tickets (the paper's measure); 'saved to a trained model' adds what a PrAC ticket still costs to use:")
    print("one training on the full data from its rewind point (full-data IMP's round already is that model).")
    print(result["table"])
    print(f"\nFinal PrAC ticket: {_pct(prac.sparsity)} of the convolution weights pruned.")
    print(f"Search time: {result['search_time_s']:.0f} s for both searches.")
    shared = 1 if result["imp"].meta.get("start_from") else 0  # its round 0 is the PrAC search's: count it once
    history = result["imp"].history[shared:] + prac.history
    samples, seconds = sum(h["samples"] for h in history), sum(h["wall_time_s"] for h in history)
    print(f"Engine on this machine: {history[0]['precision']} precision, channels_last "
          f"{'on' if history[0]['channels_last'] else 'off'}, {samples / seconds:,.0f} training samples/s over "
          f"both searches (evaluation included), {torch.get_num_threads()} thread(s).")
    print(f"Saved the PrAC ticket to {result['paths']['prac']} and the vanilla IMP ticket to {result['paths']['imp']}")
    print("Load one with tickets.Ticket.load(path).apply(tickets.demo.DigitsCNN()).")
    return 0
