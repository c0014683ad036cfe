"""Distributed ticket finding on this machine: speed-up of 2 processes over 1, and the bytes
DDP sends per step with and without the library's handling of masks, measured in one run.

``python -m benchmarks.distributed`` runs, one after the other:

* the engine (``tickets.training.Trainer``, as ``tickets.prune`` uses it) on ResNet-20s pruned
  to 80%, CIFAR-sized images, the same global batch and number of steps, in
  (a) 1 process with all ``--threads`` cores, (b) 1 process with 1 thread, and
  (c) ``torchrun --nproc_per_node 2`` with 1 thread per process (gloo);
* inside (c), a count of the bytes DDP moves per optimizer step: the gradient all-reduce
  (through a counting communication hook) and the per-forward buffer broadcast, once as the
  library trains (no per-step buffer broadcast: masks never re-sent, other buffers synced once
  per epoch) and once with DDP's default (every buffer, masks included, broadcast from rank 0
  before every forward).

It prints a markdown table; ``--out FILE`` also writes it (.md) and the numbers (.json).
Options: ``--steps 30 --warmup 5 --batch-size 128 --arch res20s --sparsity 0.8 --threads 2``,
``--data-dir DIR`` (real CIFAR-10 image folder instead of synthetic images).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]


def _worker(args: argparse.Namespace) -> dict[str, Any]:
    """One process of a configuration: timing, and (with 2+ processes) the bytes per step."""
    import torch.distributed as dist
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks

    import tickets.training.trainer as training
    from benchmarks.train_speed import _data, _model
    from tickets.parallel import init_from_env, world
    from tickets.training.schedule import Schedule
    from tickets.training.trainer import Trainer

    torch.set_num_threads(args.threads)
    init_from_env("cpu")
    rank, size = world()
    data = _data(max(4096, args.batch_size * 8), args.data_dir)
    per_epoch = len(data) // args.batch_size
    total = args.warmup + args.steps
    schedule = Schedule(epochs=-(-total // per_epoch), batch_size=args.batch_size, lr=0.01, weight_decay=5e-4)

    def run(count_bytes: bool, default_ddp: bool) -> dict[str, Any]:
        model = _model(args.arch, args.sparsity)
        marks: dict[int, float] = {}
        counted = {"grad": 0, "buffers": 0}

        def on_step(step: int, _: Any) -> None:
            if step in (args.warmup, total):
                marks[step] = time.perf_counter()

        saved = training._NO_BUFFER_SYNC
        if default_ddp:
            training._NO_BUFFER_SYNC = {}
        try:
            trainer = Trainer(model, data, schedule, stop_step=total, on_step=on_step, quiet=True, precision=args.precision)
        finally:
            training._NO_BUFFER_SYNC = saved
        if count_bytes and size > 1:
            def hook(state, bucket):  # type: ignore[no-untyped-def]  # (DDP checks the annotations: none)
                counted["grad"] += bucket.buffer().numel() * bucket.buffer().element_size()
                return default_hooks.allreduce_hook(state, bucket)

            trainer.forward.register_comm_hook(None, hook)  # type: ignore[operator]
            original = dist._broadcast_coalesced

            def broadcast(group: Any, tensors: list[torch.Tensor], *rest: Any) -> Any:
                counted["buffers"] += sum(t.numel() * t.element_size() for t in tensors)
                return original(group, tensors, *rest)

            dist._broadcast_coalesced = broadcast  # the per-forward buffer sync of DDP goes through it
            try:
                trainer.run()
            finally:
                dist._broadcast_coalesced = original
        else:
            trainer.run()
        steps = trainer.steps_taken
        seconds = marks[total] - marks[args.warmup]
        return {"img_per_s": args.steps * args.batch_size / seconds, "precision": trainer.precision,
                "grad_bytes_per_step": counted["grad"] / steps, "buffer_bytes_per_step": counted["buffers"] / steps}

    out: dict[str, Any] = {"rank": rank, "world": size, "timing": run(False, False)}
    if size > 1:
        out["ours"] = run(True, False)
        out["ddp_default"] = run(True, True)
        mask_bytes = sum(b.numel() * b.element_size() for n, b in _model(args.arch, args.sparsity).named_buffers()
                         if n.endswith("_mask"))
        out["mask_bytes"] = mask_bytes
    if size > 1:
        dist.destroy_process_group()
    return out


def _launch(args: argparse.Namespace, processes: int, threads: int) -> dict[str, Any]:
    out = Path(args.tmp) / f"p{processes}-t{threads}.json"
    forward = ["--worker", "--threads", str(threads), "--steps", str(args.steps), "--warmup", str(args.warmup),
               "--batch-size", str(args.batch_size), "--arch", args.arch, "--sparsity", str(args.sparsity),
               "--precision", args.precision, "--result", str(out)] + (["--data-dir", args.data_dir] if args.data_dir else [])
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    if processes == 1:
        command = [sys.executable, "-m", "benchmarks.distributed", *forward]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   "-m", "benchmarks.distributed", *forward]
    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-4000:]}")
    return json.loads(out.read_text())


def markdown(rows: dict[str, Any], args: argparse.Namespace) -> str:
    one, single, two = rows["1 process, all threads"], rows["1 process, 1 thread"], rows["2 processes, 1 thread each"]
    lines = [
        f"{args.arch} pruned to {args.sparsity:.0%}, global batch {args.batch_size}, {args.steps} timed steps "
        f"({args.warmup} warm-up), precision {two['timing']['precision']}",
        "",
        "| configuration | img/s | x 1 process, all threads | x 1 process, 1 thread |",
        "|---|---:|---:|---:|",
    ]
    for name, row in rows.items():
        speed = row["timing"]["img_per_s"]
        lines.append(f"| {name} | {speed:,.0f} | {speed / one['timing']['img_per_s']:.2f}x | "
                     f"{speed / single['timing']['img_per_s']:.2f}x |")
    ours, default = two["ours"], two["ddp_default"]
    lines += [
        "",
        "| DDP traffic per optimizer step (2 processes) | gradients | buffers | total |",
        "|---|---:|---:|---:|",
    ]
    for name, row in (("tickets (no per-step buffer broadcast)", ours), ("DDP default (broadcast_buffers)", default)):
        grad, buf = row["grad_bytes_per_step"], row["buffer_bytes_per_step"]
        lines.append(f"| {name} | {grad / 1024:,.1f} KiB | {buf / 1024:,.1f} KiB | {(grad + buf) / 1024:,.1f} KiB |")
    lines.append(f"\nmasks of the model: {two['mask_bytes'] / 1024:,.1f} KiB (sent every step by DDP's default)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.distributed", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--arch", default="res20s")
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tmp", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        result = _worker(args)
        if result["rank"] == 0:
            Path(args.result).write_text(json.dumps(result))
        return 0
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = tmp
        rows = {
            "1 process, all threads": _launch(args, 1, args.threads),
            "1 process, 1 thread": _launch(args, 1, 1),
            "2 processes, 1 thread each": _launch(args, 2, 1),
        }
    table = markdown(rows, args)
    print(table)
    if args.out:
        Path(args.out).with_suffix(".md").write_text(table + "\n")
        Path(args.out).with_suffix(".json").write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
