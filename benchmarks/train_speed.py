"""Training throughput of the engine's choices, side by side in one run.

``python -m benchmarks.train_speed`` trains ResNet-20s (CIFAR-sized inputs) and one timm model,
dense and pruned at 80%, under every precision / memory format / compile choice, and prints a
markdown table of images per second against a plain fp32 PyTorch loop (the ten lines a user
writes: a ``DataLoader`` with per-sample augmentation, SGD, cross-entropy, fp32):

    | model | pruned | loop | precision | channels_last | compile | img/s | x plain |

Every configuration trains the same model from the same initialization on the same data
(in-memory uint8 images, random crop + flip, normalization) for ``--steps`` timed optimizer
steps after ``--warmup`` untimed ones, one configuration after the other in one process, so the
ratios compare like with like on a noisy machine. ``tickets defaults`` is
``tickets.train(model, data)`` with no speed options: the precision and memory format it
picks for this machine (:func:`tickets.training.resolve_precision`,
:func:`tickets.training.resolve_channels_last`) and the batched in-memory data path.

Options: ``--models res20s timm:resnet18``, ``--steps 30``, ``--warmup 5``, ``--batch-size 128``,
``--threads N``, ``--compile-models res20s`` (the models also timed with ``compile=True``;
compiling takes a minute or more per model on 2 cores),
``--data-dir DIR`` (real CIFAR-10 image folder instead of synthetic images), ``--out FILE``
(also write the table and a JSON of every number).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from tickets import global_magnitude_prune, prunable_parameters
from tickets.data.transforms import Augment, Normalize, _Compose
from tickets.data.images import ImageDataset
from tickets.models import create_model
from tickets.training.schedule import Schedule
from tickets.training.trainer import Trainer
from tickets.training.precision import resolve_channels_last, resolve_precision

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _data(n: int, data_dir: str | None, seed: int = 0) -> ImageDataset:
    transform = _Compose(Augment(32, 4), Normalize(MEAN, STD))
    if data_dir:
        from tickets.data.datasets import load_dataset

        train = load_dataset("cifar10", data_dir, val_size=0, train_size=n, seed=seed).train
        return train
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return ImageDataset(images, [i % 10 for i in range(n)], transform=transform)


def _model(arch: str, sparsity: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=10)
    if sparsity > 0:
        global_magnitude_prune(prunable_parameters(model), sparsity)
    return model


def plain_loop(model: nn.Module, data: ImageDataset, batch_size: int, steps: int, warmup: int) -> float:
    """Images per second of the plain fp32 loop a user writes (per-sample DataLoader)."""
    loader = DataLoader(data, batch_size=batch_size, shuffle=True, drop_last=True)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    model.train()
    done, started = 0, 0.0
    while done < warmup + steps:
        for x, y in loader:
            if done == warmup:
                started = time.perf_counter()
            loss = nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            done += 1
            if done == warmup + steps:
                break
    return steps * batch_size / (time.perf_counter() - started)


def engine(model: nn.Module, data: ImageDataset, batch_size: int, steps: int, warmup: int, **options: Any) -> tuple[float, str, bool]:
    """Images per second of :class:`tickets.training.Trainer` with ``options`` (timed with
    ``on_step``, after ``warmup`` steps), and the precision and memory format it used."""
    marks: dict[int, float] = {}

    def on_step(step: int, _: nn.Module) -> None:
        if step in (warmup, warmup + steps):
            marks[step] = time.perf_counter()

    per_epoch = len(data) // batch_size
    epochs = -(-(warmup + steps) // per_epoch)
    trainer = Trainer(model, data, Schedule(epochs=epochs, batch_size=batch_size, lr=0.01, weight_decay=5e-4),
                      stop_step=warmup + steps, on_step=on_step, quiet=True, **options)
    trainer.run()
    return steps * batch_size / (marks[warmup + steps] - marks[warmup]), trainer.precision, trainer.channels_last


def run(models: Sequence[str], *, steps: int, warmup: int, batch_size: int, compile_models: Sequence[str],
        data_dir: str | None) -> list[dict[str, Any]]:
    data = _data(batch_size * (steps + warmup + 2), data_dir)
    cpu = torch.device("cpu")
    rows: list[dict[str, Any]] = []
    for arch in models:
        for sparsity in (0.0, 0.8):
            base = plain_loop(_model(arch, sparsity), data, batch_size, steps, warmup)
            rows.append({"model": arch, "sparsity": sparsity, "loop": "plain fp32 loop", "precision": "fp32",
                         "channels_last": False, "compile": False, "img_s": base, "speedup": 1.0})
            print(f"{arch} {sparsity:.0%} plain: {base:.0f} img/s", flush=True)
            configs: list[tuple[str, dict[str, Any]]] = [("tickets defaults", {})]
            for precision in ("fp32", "bf16"):
                for cl in (False, True):
                    configs.append(("tickets", {"precision": precision, "channels_last": cl}))
            if arch in compile_models:
                configs.append(("tickets defaults + compile", {"compile": True}))
            for loop, options in configs:
                try:
                    speed, precision, cl = engine(_model(arch, sparsity), data, batch_size, steps, warmup, **options)
                except Exception as error:  # a choice this machine cannot run: say so in the table
                    print(f"{arch} {loop} {options}: failed ({type(error).__name__}: {error})", flush=True)
                    continue
                rows.append({"model": arch, "sparsity": sparsity, "loop": loop, "precision": precision,
                             "channels_last": cl, "compile": bool(options.get("compile")), "img_s": speed,
                             "speedup": speed / base})
                print(f"{arch} {sparsity:.0%} {loop} {precision} cl={cl} compile={bool(options.get('compile'))}: "
                      f"{speed:.0f} img/s ({speed / base:.2f}x)", flush=True)
    auto = resolve_precision(cpu, "auto")
    print(f"defaults on this machine: precision {auto}; channels_last rule: "
          + ", ".join(f"{a} {resolve_channels_last(_model(a, 0.0))}" for a in models), flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | pruned | loop | precision | channels_last | compile | img/s | x plain fp32 loop |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['sparsity']:.0%} | {r['loop']} | {r['precision']} | "
                     f"{'yes' if r['channels_last'] else 'no'} | {'yes' if r['compile'] else 'no'} | "
                     f"{r['img_s']:,.0f} | {r['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.train_speed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["res20s", "timm:resnet18"])
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per configuration")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--compile-models", nargs="*", default=["res20s"],
                        help="models also timed with compile=True (compiling takes a minute or more each; default res20s)")
    parser.add_argument("--data-dir", default=None, help="CIFAR-10 image folder (default: synthetic images)")
    parser.add_argument("--out", default=None, help="write the table (.md) and numbers (.json) here")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    started = time.time()
    rows = run(args.models, steps=args.steps, warmup=args.warmup, batch_size=args.batch_size,
               compile_models=args.compile_models, data_dir=args.data_dir)
    table = markdown(rows)
    print(f"\nthreads {torch.get_num_threads()}, batch {args.batch_size}, {args.steps} timed steps, "
          f"torch {torch.__version__}, {time.time() - started:.0f} s\n\n{table}")
    if args.out:
        Path(args.out).with_suffix(".md").write_text(table)
        Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
