"""One process of the distributed tests (tests/test_distributed.py): launched by torchrun
(2 processes, gloo) or plainly (1 process). Writes what it saw to <out>/rank<r>.pt."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import tickets
import tickets.ticket.file
from tickets.search.options import RunInterrupted


class Counting(Dataset):
    """A data set that counts the items this process reads."""

    def __init__(self, inner: TensorDataset) -> None:
        self.inner, self.reads = inner, 0
        self.targets = inner.tensors[1]

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, i: int):
        self.reads += 1
        return self.inner[i]


def blobs(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 8, generator=g) * 1.5
    y = torch.arange(n) % 3
    return TensorDataset(centers[y] + 1.2 * torch.randn(n, 8, generator=g), y)


def own_loop(model: nn.Module, sampler: tickets.PrACSampler, val: TensorDataset, checkpoint_dir: str) -> dict:
    """The hand-written loop of tests/test_own_loop.py, through DistributedDataParallel."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_own_loop import own_loop as drive

    search = tickets.TicketSearch(model, sampler, rounds=3, epochs=4, batch_size=16, amount=0.3, rewind_to="1ep",
                                  precision="fp32", checkpoint_dir=checkpoint_dir or None, quiet=True)
    net = torch.nn.parallel.DistributedDataParallel(model) if tickets.distributed.is_active() else model
    drive(search, model, val, net=net)
    ticket = search.ticket
    return {"masks": ticket.masks, "history": ticket.history, "indices": sampler.indices,
            "sizes": [h["size"] for h in sampler.history]}


def main(out: str, mode: str, checkpoint_dir: str) -> None:
    torch.set_num_threads(1)
    writes: list[str] = []
    original = tickets.ticket.file._atomic_write

    def recording(path, write, **kwargs):  # type: ignore[no-untyped-def]
        writes.append(Path(path).name)
        return original(path, write, **kwargs)

    tickets.ticket.file._atomic_write = recording
    train, val = Counting(blobs(100, 0)), blobs(40, 1)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))
    selection = mode.split(":", 1)[1] if mode.startswith("rule:") else None  # "rule:budget": that selection rule
    sampler = tickets.PrACSampler(train, seed=0, selection=selection)

    def interrupt(k: int, entry: dict) -> None:
        if mode == "kill" and k == 1:  # a hard kill of every process after round 1's first epoch
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "interrupt" and k == 1:
            raise RunInterrupted("stopped on purpose")

    if mode == "own":  # the same search in a hand-written DDP loop
        result = own_loop(model, sampler, val, checkpoint_dir)
    else:
        try:
            ticket = tickets.prune(model, sampler, rounds=3, epochs=4, batch_size=16, amount=0.3, rewind_to="1ep",
                                   precision="fp32", eval_data=val, checkpoint_dir=checkpoint_dir or None,
                                   on_epoch=interrupt, quiet=True)
            result = {"masks": ticket.masks, "history": ticket.history, "indices": sampler.indices,
                      "sizes": [h["size"] for h in sampler.history]}
        except RunInterrupted:
            result = {"interrupted": True}
    rank, world = tickets.distributed.world()
    result.update(reads=train.reads, writes=writes, rank=rank, world=world)
    Path(out).mkdir(parents=True, exist_ok=True)
    torch.save(result, Path(out) / f"rank{rank}.pt")
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:4])
