"""Disk use of a ``tickets.prune`` run folder: its size and the bytes written per epoch.

Run ``python -m benchmarks.run_folder`` (options ``--cases``, ``--rounds``, ``--epochs``,
``--images``, ``--breakdown``, ``--checkpoint-every``, ``--no-round-tickets``; the last two
need a torch-tickets with those options). For each case a PrAC search (``tickets.prune`` with a
``PrACSampler``) runs on class-dependent random 32x32 images it makes itself (no downloads)
with a ``checkpoint_dir`` in a temporary folder, and the script reports:

* ``fp32 model``: the model's parameters and buffers at 4 bytes each (the unit of the rest);
* ``state.pt peak``: the largest ``state.pt`` seen after an epoch (mid-round: with the
  trainer's state), and its ratio to the fp32 model;
* ``state.pt``, ``round tickets`` (all ``round_<k>.ticket``), ``folder``: sizes at the end;
* ``written``: bytes the process handed to ``write()`` during the search (``wchar`` of
  ``/proc/self/io``: every checkpoint, ticket and log line; Linux only), and per epoch
  trained (epochs counted by the ``on_epoch`` callback);
* ``fsyncs``: calls of ``os.fsync`` during the search;
* with ``--breakdown``: the bytes of each part of the final and of the peak ``state.pt`` (``torch.save`` of
  each top-level entry on its own; parts sharing tensors are counted in each).

Cases: ``tiny`` (a two-layer convolutional net, 64 images, the size of a test), ``res20s``
(the library's CIFAR ResNet-20, 300 images), ``resnet18``
(timm's ``resnet18`` with 5 classes on 300 images, the practitioner's trial of issue 17).
It works on any version of the library with ``tickets.prune``, so the numbers before and
after a change come from the same script.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import TensorDataset

import tickets

MiB = 1 << 20


def _images(n: int, classes: int, seed: int) -> TensorDataset:
    """``n`` 3x32x32 images whose mean depends on the class (learnable, not trivial)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    x = torch.randn(n, 3, 32, 32, generator=g) + 0.5 * (y.float() / classes).view(-1, 1, 1, 1)
    return TensorDataset(x, y)


def _tiny(classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, classes),
    )


def _resnet18(classes: int) -> nn.Module:
    import timm

    return timm.create_model("resnet18", num_classes=classes, pretrained=False)


def _res20s(classes: int) -> nn.Module:
    from tickets.models import create_model

    return create_model("res20s", classes)


CASES: dict[str, dict[str, Any]] = {
    "tiny": {"make": _tiny, "images": 64, "batch_size": 16},
    "res20s": {"make": _res20s, "images": 300, "batch_size": 32},
    "resnet18": {"make": _resnet18, "images": 300, "batch_size": 32},
}


def _written() -> int | None:
    try:
        with open("/proc/self/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _size(obj: Any) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def _breakdown(path: Path) -> dict[str, int]:
    payload = torch.load(path, map_location="cpu", weights_only=True)
    parts: dict[str, int] = {}
    for key, value in payload.items():
        if isinstance(value, dict) and key == "trainer" and value:
            for sub, v in value.items():
                parts[f"trainer.{sub}"] = _size(v)
        else:
            parts[key] = _size(value)
    return {k: v for k, v in sorted(parts.items(), key=lambda kv: -kv[1]) if v > 2048}


def run_case(name: str, rounds: int, epochs: int, images: int | None, breakdown: bool,
             **options: Any) -> dict[str, Any]:
    """One search of case ``name`` in a temporary folder (``options``: more keywords of
    ``tickets.prune``, e.g. ``checkpoint_every=1``); returns the measured numbers."""
    case = CASES[name]
    classes = 5
    n = images or case["images"]
    torch.manual_seed(0)
    model = case["make"](classes)
    fp32 = sum(t.numel() * 4 for t in [*model.parameters(), *model.buffers()] if t.is_floating_point())
    train, val = _images(n, classes, 0), _images(max(20, n // 3), classes, 1)
    epochs_run = 0
    fsyncs = 0
    peak_parts: dict[str, int] | None = None
    peak = 0  # the largest state.pt seen after an epoch (mid-round, with the trainer's state)
    real_fsync = os.fsync

    def counting_fsync(fd: Any) -> None:
        nonlocal fsyncs
        fsyncs += 1
        real_fsync(fd)

    def count_epoch(k: int, entry: dict[str, Any]) -> None:
        nonlocal epochs_run, peak, peak_parts
        epochs_run += 1
        state = folder / "state.pt"
        size = state.stat().st_size if state.is_file() else 0
        if size > peak:
            peak = size
            peak_parts = _breakdown(state) if breakdown else None

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "run"
        before = _written()
        started = time.perf_counter()
        os.fsync = counting_fsync  # type: ignore[assignment]
        try:
            tickets.prune(model, tickets.PrACSampler(train, seed=0), rounds=rounds, epochs=epochs,
                          batch_size=case["batch_size"], lr=0.05, eval_data=val, checkpoint_dir=folder,
                          quiet=True, precision="fp32", on_epoch=count_epoch, **options)
        finally:
            os.fsync = real_fsync  # type: ignore[assignment]
        wall = time.perf_counter() - started
        after = _written()
        files = {p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()}
        out = {
            "case": name, "images": n, "rounds": rounds, "epochs": epochs, "epochs_run": epochs_run,
            "fp32_model": fp32, "state_pt": files.get("state.pt", 0), "state_pt_peak": max(peak, files.get("state.pt", 0)),
            "round_tickets": sum(v for k, v in files.items() if k.startswith("round_") and k.endswith(".ticket")),
            "folder": sum(files.values()), "files": files,
            "written": None if before is None or after is None else after - before,
            "fsyncs": fsyncs, "wall_s": wall,
        }
        if breakdown and (folder / "state.pt").is_file():
            out["breakdown"] = _breakdown(folder / "state.pt")
            out["breakdown_peak"] = peak_parts
    return out


def _mib(v: int | None) -> str:
    return "n/a" if v is None else f"{v / MiB:.2f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", default="tiny,resnet18", help=f"comma-separated, of {sorted(CASES)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--images", type=int, default=None, help="training images (default: the case's)")
    parser.add_argument("--breakdown", action="store_true", help="bytes of each part of the final state.pt")
    parser.add_argument("--checkpoint-every", default=None,
                        help="Runtime.checkpoint_every (an int = epochs, or '90s', 'round'); default: the library's")
    parser.add_argument("--no-round-tickets", action="store_true", help="keep_round_tickets=False")
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in names if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; valid: {sorted(CASES)}")
    header = (f"{'case':<9} {'fp32 MiB':>8} {'peak':>8} {'x fp32':>6} {'state.pt':>9} {'tickets':>8} {'folder':>8} "
              f"{'epochs':>6} {'written':>8} {'/epoch':>7} {'fsyncs':>6} {'wall s':>6}")
    options: dict[str, Any] = {}
    if args.checkpoint_every is not None:
        every = args.checkpoint_every
        options["checkpoint_every"] = int(every) if every.isdigit() else every
    if args.no_round_tickets:
        options["keep_round_tickets"] = False
    rows = []
    for name in names:
        r = run_case(name, args.rounds, args.epochs, args.images, args.breakdown, **options)
        per = None if r["written"] is None else r["written"] // max(1, r["epochs_run"])
        rows.append(f"{r['case']:<9} {_mib(r['fp32_model']):>8} "
                    f"{_mib(r['state_pt_peak']):>8} {r['state_pt_peak'] / r['fp32_model']:>6.2f} {_mib(r['state_pt']):>9} "
                    f"{_mib(r['round_tickets']):>8} {_mib(r['folder']):>8} "
                    f"{r['epochs_run']:>6} {_mib(r['written']):>8} {_mib(per):>7} {r['fsyncs']:>6} {r['wall_s']:>6.1f}")
        if args.breakdown:
            print(f"{name}: files (MiB): " + ", ".join(f"{k} {v / MiB:.2f}" for k, v in sorted(r["files"].items())))
        for which, key in (("final", "breakdown"), ("peak", "breakdown_peak")):
            if r.get(key):
                print(f"{name}: {which} state.pt parts (MiB): " + ", ".join(f"{k} {v / MiB:.2f}" for k, v in r[key].items()))
    print(header)
    print("\n".join(rows))
    print("(sizes and bytes written in MiB; written = wchar of /proc/self/io during the search)")


if __name__ == "__main__":
    main()
