"""Global magnitude pruning speed and memory: tickets versus torch.nn.utils.prune.

Run ``python -m benchmarks.prune_speed`` (options ``--models``, ``--rounds``, ``--amount``).
For each model (random init, no downloads) both sides prune the same tensors (every conv
and linear weight) by global magnitude, ``--rounds`` rounds of ``--amount`` each:

* torch: ``prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=a)``
* tickets: ``tickets.global_magnitude_prune(pairs, amount=a)``

Per round it reports the CPU time of the process (``time.process_time``: all threads; it
does not count time spent waiting for a core, so it is stable on a shared machine), the wall
time, the bytes the pruning state holds afterwards (mask
buffers plus the masks kept alive inside torch's ``PruningContainer`` hooks, each storage
counted once), the process's resident memory (RSS, from ``/proc/self/statm``) and the
transient peak above it during the round (``VmHWM`` from ``/proc/self/status``, reset
before each round through ``/proc/self/clear_refs``). Linux only.
"""

from __future__ import annotations

import argparse
import copy
import gc
import os
import time
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import prune

import tickets

MiB = 1 << 20
MODELS: dict[str, Callable[[], nn.Module]] = {}


def _model(name: str) -> Callable[[Callable[[], nn.Module]], Callable[[], nn.Module]]:
    def register(make: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        MODELS[name] = make
        return make

    return register


@_model("resnet50")
def _resnet50() -> nn.Module:
    import torchvision

    return torchvision.models.resnet50(weights=None)


@_model("vit_base_patch16_224")
def _vit_base() -> nn.Module:
    import timm

    return timm.create_model("vit_base_patch16_224", pretrained=False)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def held_bytes(model: nn.Module) -> int:
    """Bytes of every mask the pruning state keeps alive, each storage counted once."""
    storages: dict[int, int] = {}

    def add(t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()

    for module in model.modules():
        for key, buffer in module._buffers.items():
            if buffer is not None and key.endswith("_mask"):
                add(buffer)
        for hook in module._forward_pre_hooks.values():
            methods = getattr(hook, "_pruning_methods", (hook,))
            for method in methods:
                mask = getattr(method, "mask", None)
                if isinstance(mask, torch.Tensor):
                    add(mask)
    return sum(storages.values())


def _pairs(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return tickets.prunable_parameters(model, keep_dense=())


def torch_round(pairs: list[tuple[nn.Module, str]], amount: float) -> None:
    prune.global_unstructured(pairs, pruning_method=prune.L1Unstructured, amount=amount)


def tickets_round(pairs: list[tuple[nn.Module, str]], amount: float) -> None:
    tickets.global_magnitude_prune(pairs, amount=amount)


def measure(model: nn.Module, prune_round: Callable[..., None], rounds: int, amount: float) -> list[dict[str, float]]:
    pairs = _pairs(model)
    rows = []
    for r in range(1, rounds + 1):
        gc.collect()
        before = rss_bytes()
        peak_ok = _reset_peak_rss()
        start, cpu_start = time.perf_counter(), time.process_time()
        with torch.no_grad():
            prune_round(pairs, amount)
        cpu = time.process_time() - cpu_start
        seconds = time.perf_counter() - start
        peak = _peak_rss_bytes() - before if peak_ok else float("nan")
        gc.collect()
        rows.append({
            "round": r,
            "cpu": cpu,
            "seconds": seconds,
            "held_mib": held_bytes(model) / MiB,
            "rss_mib": rss_bytes() / MiB,
            "peak_mib": peak / MiB,
        })
    return rows


def run(models: list[str], rounds: int, amount: float) -> str:
    lines = [
        f"Global magnitude pruning, {rounds} rounds of {amount:.0%} of the surviving weights, "
        f"CPU, {torch.get_num_threads()} threads, torch {torch.__version__}.",
        "",
        "| model | round | torch CPU s | tickets CPU s | speed-up | torch wall s | tickets wall s "
        "| torch held MiB | tickets held MiB | torch peak +MiB | tickets peak +MiB "
        "| torch RSS MiB | tickets RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in models:
        torch.manual_seed(0)
        base = MODELS[name]()
        base.eval()
        theirs = copy.deepcopy(base)
        results = {"torch": measure(theirs, torch_round, rounds, amount)}
        del theirs
        gc.collect()
        ours = copy.deepcopy(base)
        results["tickets"] = measure(ours, tickets_round, rounds, amount)
        del ours, base
        gc.collect()
        for t, o in zip(results["torch"], results["tickets"]):
            lines.append(
                f"| {name} | {t['round']} | {t['cpu']:.2f} | {o['cpu']:.2f} | {t['cpu'] / o['cpu']:.1f}x | "
                f"{t['seconds']:.2f} | {o['seconds']:.2f} | {t['held_mib']:.1f} | {o['held_mib']:.1f} | "
                f"{t['peak_mib']:.0f} | {o['peak_mib']:.0f} | {t['rss_mib']:.0f} | {o['rss_mib']:.0f} |"
            )
    lines += [
        "",
        "held: bytes of the masks the pruning state keeps alive after the round; peak: the",
        "resident-memory high-water mark during the round above the resident memory before it;",
        "RSS: the process's resident memory after the round (torch ran first, in the same process).",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.prune_speed", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--amount", type=float, default=0.2)
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1; got {args.rounds}")
    print(run(args.models, args.rounds, args.amount))


if __name__ == "__main__":
    main()
