"""``python -m benchmarks.prac_overhead``: the cost of recording PrAC statistics.

Times training epochs of the same model on the same data with and without per-sample
statistics (:class:`tickets.stats.SampleStats`, recorded inside the training step), side by
side in one run. Epochs alternate between the two modes so that machine load hits both
alike; the report gives the median epoch time of each and the overhead
``median(with) / median(without) - 1`` (target: at most 2%).

The default workload is a CIFAR-sized ResNet-20 on random 32x32 images held in memory
(no disk, no download), so the epoch time is the training step itself and the overhead is
not hidden behind data loading. ``--model digits`` uses the demo's small CNN on the digits.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence

import torch
from torch.utils.data import TensorDataset

from tickets.prac.sampler import PrACSampler
from tickets.prac.stats import SampleStats
from tickets.training.schedule import Schedule
from tickets.training.trainer import Trainer

__all__ = ["measure", "main"]


def _workload(name: str, samples: int) -> tuple[torch.nn.Module, TensorDataset]:
    g = torch.Generator().manual_seed(0)
    if name == "digits":
        from tickets.demo import DigitsCNN, load_digits_splits

        torch.manual_seed(0)
        return DigitsCNN(), load_digits_splits(0)["train"]  # type: ignore[return-value]
    from tickets.models import create_model

    torch.manual_seed(0)
    model = create_model("res20s", num_classes=10)
    x = torch.randn(samples, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (samples,), generator=g)
    return model, TensorDataset(x, y)


def measure(
    model_name: str = "res20s",
    *,
    samples: int = 2048,
    batch_size: int = 128,
    epochs: int = 4,
    device: str = "cpu",
    threads: int | None = 1,
) -> dict[str, float]:
    """Median epoch time with and without statistics, alternating epochs.

    Args:
        model_name: ``"res20s"`` (random CIFAR-sized images) or ``"digits"``.
        samples: images per epoch (res20s).
        batch_size: images per step.
        epochs: timed epochs per mode (after one warm-up epoch each).
        device: ``"cpu"`` or ``"cuda"``.
        threads: torch CPU threads (None: leave as is).

    Returns:
        ``{"with_s", "without_s", "overhead", "steps_per_epoch", "record_us_per_step"}``.
    """
    if threads:
        torch.set_num_threads(threads)
    model, data = _workload(model_name, samples)
    schedule = Schedule(epochs=10**6, batch_size=batch_size, lr=0.01)
    n = len(data)
    trainers = {}
    for mode in ("without", "with"):
        stats = SampleStats(n, device) if mode == "with" else None
        trainers[mode] = Trainer(model, data, schedule, sampler=PrACSampler(data, seed=0), stats=stats,
                                 device=device, quiet=True)
    times: dict[str, list[float]] = {"with": [], "without": []}
    for epoch in range(epochs + 1):
        for mode in (("with", "without") if epoch % 2 else ("without", "with")):
            trainer = trainers[mode]
            trainer.stop_step = trainer.step + trainer.steps_per_epoch
            if device == "cuda":
                torch.cuda.synchronize()
            started = time.perf_counter()
            trainer.run()
            if device == "cuda":
                torch.cuda.synchronize()
            if epoch > 0:  # the first epoch of each mode warms up
                times[mode].append(time.perf_counter() - started)
    with_s, without_s = statistics.median(times["with"]), statistics.median(times["without"])
    # The recording alone, measured directly: the per-step statistics update on a batch.
    stats = SampleStats(n, device)
    idx = torch.randint(0, n, (batch_size,), device=device)
    correct = torch.rand(batch_size, device=device) > 0.5
    reps = 2000
    started = time.perf_counter()
    for _ in range(reps):
        stats.record(idx, correct)
    if device == "cuda":
        torch.cuda.synchronize()
    record_us = (time.perf_counter() - started) / reps * 1e6
    return {
        "with_s": with_s,
        "without_s": without_s,
        "overhead": with_s / without_s - 1.0,
        "steps_per_epoch": float(trainers["with"].steps_per_epoch),
        "record_us_per_step": record_us,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prac_overhead", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="res20s", choices=["res20s", "digits"])
    parser.add_argument("--samples", type=int, default=2048, help="images per epoch (res20s)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=4, help="timed epochs per mode")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    r = measure(args.model, samples=args.samples, batch_size=args.batch_size, epochs=args.epochs,
                device=args.device, threads=args.threads)
    steps = int(r["steps_per_epoch"])
    print(f"{args.model} on {args.device}, {steps} steps of {args.batch_size} per epoch, median of {args.epochs} epochs each:")
    print(f"  {'without statistics':<20} {r['without_s']:8.3f} s/epoch")
    print(f"  {'with statistics':<20} {r['with_s']:8.3f} s/epoch")
    print(f"  overhead {100 * r['overhead']:+.2f}% (target <= 2%); the recording itself: "
          f"{r['record_us_per_step']:.1f} us per step = {100 * r['record_us_per_step'] * 1e-6 * steps / r['without_s']:.3f}% of an epoch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
