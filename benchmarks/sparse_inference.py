"""Sparse CPU inference and ticket file sizes: what a found ticket is worth after the search.

Run ``python -m benchmarks.sparse_inference`` (about 4 minutes on 2 shared cores). For each
model (random init, no downloads; pruning is by magnitude, so trained weights are not
needed to measure speed and size) and each sparsity, it prunes every prunable tensor
(``tickets.prunable_parameters``: classifier and stem dense) with
``tickets.global_magnitude_prune(..., amount=s)`` and compares, in one process:

* **dense**: the masked model with the masks baked in (``tickets.sparse.bake``), eval mode;
* **sparse**: ``tickets.sparsify(model, example_input=x)`` built for each regime (batch 1
  for latency, batch ``--batch`` for throughput), ``mode="measure"``;

timed interleaved (dense, sparse, dense, ...) under ``torch.inference_mode``, medians of
``--repeats`` calls after one warm-up. Sizes are of ``torch.save(state_dict)`` for the dense
and the sparse model, and of the ticket file (``Ticket.from_model(model, snapshot).save``).

A second table (``--size-models``) compares the dense state dict with the ticket file, old
(torch.save, torch-tickets 0.1) and new (safetensors, bit-packed masks, surviving weights).
``--onnx`` adds ONNX Runtime (``pip install onnxruntime onnx``) running the dense model of
each linear-heavy model at 90% sparsity, against the torch paths.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import tickets
from tickets.models import create_model
from tickets.sparse import bake, kernel_report, sparsify
from tickets.ticket.file import FORMAT
from tickets.ticket.ticket import Ticket

MODELS: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "mixer_s16_224": (lambda: _timm("mixer_s16_224"), (3, 224, 224)),
    "vit_small_patch16_224": (lambda: _timm("vit_small_patch16_224"), (3, 224, 224)),
    "res20s": (lambda: create_model("res20s", num_classes=10), (3, 32, 32)),
    "res50": (lambda: create_model("res50", num_classes=1000), (3, 224, 224)),
}


def _timm(name: str) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False)


def _pruned(name: str, sparsity: float, seed: int = 0) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A model of ``name`` (random init), its initial snapshot, pruned to ``sparsity``."""
    torch.manual_seed(seed)
    model = MODELS[name][0]()
    init = tickets.snapshot(model)
    tickets.global_magnitude_prune(tickets.prunable_parameters(model), amount=sparsity)
    return model, init


def _interleaved(calls: dict[str, Callable[[], Any]], repeats: int, warm_up: bool = True,
                 min_seconds: float = 1.0) -> dict[str, float]:
    """Median seconds per call of each callable, timed in turn (after one warm-up call each).

    At least ``repeats`` rounds, more (up to 200) until each callable ran ``min_seconds``:
    fast models get enough samples for the median to settle on a shared machine.
    """
    times: dict[str, list[float]] = {k: [] for k in calls}
    with torch.inference_mode():
        for call in calls.values() if warm_up else ():
            call()
        rounds = 0
        while rounds < repeats or (rounds < 200 and min(sum(v) for v in times.values()) < min_seconds):
            rounds += 1
            for key, call in calls.items():
                start = time.perf_counter()
                call()
                times[key].append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in times.items()}


def _state_bytes(model: nn.Module) -> int:
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.2f}"


def _ort_session(model: nn.Module, shape: tuple[int, ...], threads: int, folder: str) -> Any:
    import onnxruntime as ort

    path = os.path.join(folder, "model.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.randn(1, *shape),), path, dynamo=False, input_names=["x"],
                          output_names=["y"], dynamic_axes={"x": {0: "batch"}})
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def speed_table(models: list[str], sparsities: list[float], batch: int, repeats: int,
                batch_repeats: int, onnx: bool, threads: int) -> tuple[str, str]:
    rows, onnx_rows = [], []
    for name in models:
        shape = MODELS[name][1]
        one, many = torch.randn(1, *shape), torch.randn(batch, *shape)
        for s in sparsities:
            model, init = _pruned(name, s)
            dense = bake(model)
            started = time.perf_counter()
            fast = sparsify(model, example_input=one, mode="measure")
            # the batch-1 build checks the outputs; at the big batch that would cost two more forwards
            wide = sparsify(model, example_input=many, mode="measure", repeats=3, check=False)
            build = time.perf_counter() - started
            lat = _interleaved({"dense": lambda: dense(one), "sparse": lambda: fast(one)}, repeats)
            # no warm-up at the big batch: building `wide` ran both kernels of every layer at it
            thr = _interleaved({"dense": lambda: dense(many), "sparse": lambda: wide(many)}, batch_repeats, False)
            with tempfile.TemporaryDirectory() as tmp:
                ticket_bytes = Ticket.from_model(model, init).save(Path(tmp) / "t.ticket").stat().st_size
            linear = [c for c in kernel_report(fast).layers if c.layer == "Linear"]
            rows.append(
                f"| {name} | {s:.0%} | {1e3 * lat['dense']:.1f} | {1e3 * lat['sparse']:.1f} | "
                f"{lat['dense'] / lat['sparse']:.2f}x | {batch / thr['dense']:.1f} | {batch / thr['sparse']:.1f} | "
                f"{thr['dense'] / thr['sparse']:.2f}x | {len(kernel_report(fast).csr_layers)}/{len(linear)} | "
                f"{len(kernel_report(wide).csr_layers)}/{len(linear)} | {_mib(_state_bytes(dense))} | "
                f"{_mib(_state_bytes(fast))} | {_mib(ticket_bytes)} | {build:.0f} |"
            )
            print(rows[-1], flush=True)
            if onnx and abs(s - 0.9) < 1e-9 and any(c.layer == "Linear" for c in kernel_report(fast).layers) and name != "res20s":
                with tempfile.TemporaryDirectory() as tmp:
                    session = _ort_session(dense, shape, threads, tmp)
                    a, b = one.numpy(), many.numpy()
                    with torch.inference_mode():
                        err = float((torch.from_numpy(session.run(None, {"x": a})[0]) - dense(one)).abs().max())
                    lat_o = _interleaved({"dense": lambda: dense(one), "sparse": lambda: fast(one),
                                          "ort": lambda: session.run(None, {"x": a})}, repeats)
                    thr_o = _interleaved({"dense": lambda: dense(many), "sparse": lambda: wide(many),
                                          "ort": lambda: session.run(None, {"x": b})}, batch_repeats, False)
                onnx_rows.append(
                    f"| {name} | {s:.0%} | {1e3 * lat_o['dense']:.1f} | {1e3 * lat_o['sparse']:.1f} | "
                    f"{1e3 * lat_o['ort']:.1f} | {batch / thr_o['dense']:.1f} | {batch / thr_o['sparse']:.1f} | "
                    f"{batch / thr_o['ort']:.1f} | {err:.1e} |"
                )
                print(onnx_rows[-1], flush=True)
            del model, dense, fast, wide
    head = (
        f"| model | sparsity | dense ms (batch 1) | sparse ms (batch 1) | latency speed-up | "
        f"dense img/s (batch {batch}) | sparse img/s (batch {batch}) | throughput speed-up | "
        f"CSR layers (batch 1) | CSR layers (batch {batch}) | dense MiB | sparse MiB | ticket MiB | build s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    onnx_head = (
        f"| model | sparsity | torch dense ms (batch 1) | torch sparse ms (batch 1) | ORT ms (batch 1) | "
        f"torch dense img/s (batch {batch}) | torch sparse img/s (batch {batch}) | ORT img/s (batch {batch}) | "
        f"ORT max abs diff |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    return head + "\n" + "\n".join(rows), (onnx_head + "\n" + "\n".join(onnx_rows)) if onnx_rows else ""


def size_table(models: list[str], sparsities: list[float]) -> str:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in models:
            for s in sparsities:
                model, init = _pruned(name, s)
                ticket = Ticket.from_model(model, init)
                dense_bytes = _state_bytes(bake(model))
                new = ticket.save(Path(tmp) / "new.ticket").stat().st_size
                masks_only = Ticket(ticket.masks).save(Path(tmp) / "masks.ticket").stat().st_size
                buffer = io.BytesIO()  # what Ticket.save wrote in torch-tickets 0.1
                torch.save({"format": FORMAT, "version": 1, "masks": ticket.masks, "rewind_state": ticket.rewind_state,
                            "history": "[]", "meta": "{}"}, buffer)
                old = buffer.tell()
                loaded = Ticket.load(Path(tmp) / "new.ticket")
                exact = all(torch.equal(loaded.masks[k], m) for k, m in ticket.masks.items()) and all(
                    torch.equal(loaded.rewind_state[k], v) for k, v in ticket.rewind_state.items()  # type: ignore[index]
                )
                rows.append(
                    f"| {name} | {s:.0%} | {_mib(dense_bytes)} | {_mib(old)} | {_mib(new)} | "
                    f"{dense_bytes / new:.1f}x | {_mib(masks_only)} | {'yes' if exact else 'NO'} |"
                )
                print(rows[-1], flush=True)
                del model, init, ticket, loaded
    head = (
        "| model | sparsity | dense state dict MiB | ticket 0.1 (torch.save) MiB | ticket file MiB | "
        "dense / ticket | masks-only ticket MiB | round trip exact |\n|---|---:|---:|---:|---:|---:|---:|---|"
    )
    return head + "\n" + "\n".join(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["mixer_s16_224", "res20s"], choices=sorted(MODELS))
    parser.add_argument("--sparsities", nargs="+", type=float, default=[0.8, 0.9, 0.95])
    parser.add_argument("--size-models", nargs="*", default=["res20s", "res50"], choices=sorted(MODELS))
    parser.add_argument("--batch", type=int, default=64, help="batch size of the throughput regime")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (and ORT's intra-op threads)")
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per model at batch 1")
    parser.add_argument("--batch-repeats", type=int, default=3, help="timed calls per model at --batch")
    parser.add_argument("--onnx", action="store_true", help="also time ONNX Runtime on the dense model at 90%%")
    args = parser.parse_args(argv)
    for s in args.sparsities:
        if not 0.0 < s < 1.0:
            parser.error(f"--sparsities must be fractions in (0, 1); got {s}")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    started = time.perf_counter()
    print(f"Sparse CPU inference, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs visible; random init, global magnitude pruning (classifier and stem dense).\n")
    speed, onnx = speed_table(args.models, args.sparsities, args.batch, args.repeats, args.batch_repeats,
                              args.onnx, args.threads)
    print("\n" + speed + "\n")
    if onnx:
        print(onnx + "\n")
    if args.size_models:
        print(size_table(args.size_models, args.sparsities) + "\n")
    print(f"total {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
