"""Ticket finding inside a ``torch.distributed`` job (``torchrun``, DDP; gloo or NCCL).

Nothing here is needed on one process: every function is a no-op (or the plain
single-process computation) when no process group with more than one process is active.
Inside one, ``tickets.prune`` and :class:`tickets.TicketSearch`:

* shard each epoch's order of the current set over the ranks (:class:`ShardSampler`, like
  ``DistributedSampler``: padded to a multiple of the world size by repeating its start);
  ``batch_size`` is the *global* batch (each rank takes ``batch_size / world_size``), so a
  run has the same steps, schedule and learning rate as one process with that batch
  (except that a last global batch of 2 to ``world_size`` samples, which would leave each
  process a batch of one, joins the previous batch: :mod:`tickets.data.batching`);
* average gradients with ``DistributedDataParallel`` (``broadcast_buffers=False``: the masks
  are never re-sent; the other buffers, e.g. BatchNorm statistics, are broadcast from rank 0
  at the end of every epoch, which leaves every rank with rank 0's statistics, as DDP's
  default does, without sending anything per step);
* combine the per-sample PrAC statistics of all ranks after every epoch
  (:class:`DistributedStats`) and split the disagreement pass and evaluation, so every rank
  builds the same next set;
* check once per round, with one all-reduce, that masks, PrAC set, schedule position and
  weights agree on every rank (:func:`check_identical`): a mismatch is an error, never a
  silent divergence;
* write checkpoints, tickets and PrAC sets from rank 0 only; every rank resumes from them.

See ``docs/distributed.md``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from typing import Any
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Dataset, Sampler, Subset

__all__ = ['world', 'is_active', 'is_writer', 'init_from_env', 'all_reduce_sum', 'ShardSampler', 'shard_of', 'gather_predictions', 'broadcast_buffers', 'mask_checksum', 'check_identical']


def world() -> tuple[int, int]:
    """``(rank, world_size)`` of the active process group, ``(0, 1)`` without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_active() -> bool:
    """True inside a process group of more than one process."""
    return world()[1] > 1


def is_writer() -> bool:
    """True on the process that writes files (rank 0, or the only process)."""
    return world()[0] == 0


def init_from_env(device: torch.device | str | None = None) -> bool:
    """Initialize the default process group from ``torchrun``'s environment if it asks for one
    (``WORLD_SIZE > 1``) and none exists: NCCL when training on CUDA, gloo otherwise; on CUDA
    the process uses GPU ``LOCAL_RANK``. Returns True when it initialized one.

    Args:
        device: the training device (decides the backend); None = CUDA if available.
    """
    if not dist.is_available() or dist.is_initialized():
        return False
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return False
    cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return True


def _comm_device(reference: torch.device) -> torch.device:
    """Where collective tensors live: the CUDA device for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return reference if reference.type == "cuda" else torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """Sum ``values`` over the ranks (a copy; the input itself without a process group)."""
    if not is_active():
        return values
    buf = values.detach().to(_comm_device(device or values.device), copy=True)
    dist.all_reduce(buf, op=dist.ReduceOp.SUM)
    return buf.to(values.device)


# ---------------------------------------------------------------------- data
class ShardSampler(Sampler[int]):
    """This rank's share of ``base``'s order, like ``DistributedSampler``.

    Every rank iterates ``base`` (which must give the same order on every rank: a
    :class:`tickets.PrACSampler`, or a sampler seeded alike), pads the order to a multiple of
    the world size by repeating its first indices, and keeps every ``world_size``-th index
    from its rank on. Consecutive ``batch_size / world_size`` chunks of the shards form,
    together, the same global batches as ``base`` cut in ``batch_size`` chunks.

    Args:
        base: the sampler of the whole set (a ``PrACSampler``, ``RandomSampler``...).
        rank, world_size: default the active process group's.
    """

    def __init__(self, base: Sampler[int], rank: int | None = None, world_size: int | None = None) -> None:
        r, w = world()
        self.base = base
        self.rank = r if rank is None else int(rank)
        self.world_size = w if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank must be in [0, {self.world_size}); got {self.rank}")

    def __len__(self) -> int:
        return math.ceil(len(self.base) / self.world_size)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[int]:
        order = list(iter(self.base))
        if not order:
            return iter([])
        total = len(self) * self.world_size
        order += (order * math.ceil(total / len(order)))[: total - len(order)]
        return iter(order[self.rank::self.world_size])

    def set_epoch(self, epoch: int) -> None:
        if hasattr(self.base, "set_epoch"):
            self.base.set_epoch(epoch)  # type: ignore[union-attr]

    @property
    def generator(self) -> Any:
        return getattr(self.base, "generator", None)

    @property
    def data_source(self) -> Any:
        return getattr(self.base, "data_source", None)

    def __repr__(self) -> str:
        return f"ShardSampler({self.base!r}, rank {self.rank} of {self.world_size})"


def shard_of(data: Dataset, rank: int | None = None, world_size: int | None = None) -> tuple[Dataset, int]:
    """This rank's contiguous slice of ``data`` (for evaluation and prediction) and its start.

    An in-memory :class:`tickets.data.ImageDataset` keeps its fast batched path.
    """
    r, w = world()
    r = r if rank is None else rank
    w = w if world_size is None else world_size
    n = len(data)  # type: ignore[arg-type]
    per = math.ceil(n / w)
    start, stop = min(n, r * per), min(n, (r + 1) * per)
    indices = list(range(start, stop))
    subset = getattr(data, "subset", None)
    if callable(subset):
        return subset(indices), start
    return Subset(data, indices), start


def gather_predictions(local: torch.Tensor, total: int) -> torch.Tensor:
    """Concatenate every rank's contiguous slice (from :func:`shard_of`) of a per-sample
    tensor, in rank order; ``total`` is the full length."""
    if not is_active():
        return local
    _, w = world()
    per = math.ceil(total / w)
    device = _comm_device(local.device)
    padded = torch.zeros(per, dtype=local.dtype, device=device)
    padded[: local.numel()] = local.to(device)
    parts = [torch.empty_like(padded) for _ in range(w)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:total].to(local.device)


# ---------------------------------------------------------------------- model state
@torch.no_grad()
def broadcast_buffers(model: nn.Module, src: int = 0) -> None:
    """Give every rank rank ``src``'s buffers (BatchNorm statistics...), except masks."""
    if not is_active():
        return
    for name, buf in model.named_buffers():
        if name.endswith("_mask") or buf.numel() == 0:
            continue
        device = _comm_device(buf.device)
        if device == buf.device:
            dist.broadcast(buf, src)
        else:
            tmp = buf.to(device)
            dist.broadcast(tmp, src)
            buf.copy_(tmp)


def mask_checksum(masks: Mapping[str, torch.Tensor]) -> float:
    """A position-sensitive checksum of bool masks (equal masks, equal sums)."""
    total = 0.0
    for i, key in enumerate(sorted(masks)):
        flat = masks[key].flatten().to(torch.float64)
        weights = torch.arange(flat.numel(), dtype=torch.float64) % 9973 + 1 + i
        total += float((flat * weights).sum())
    return total


def _weight_checksum(model: nn.Module) -> float:
    total = 0.0
    for i, p in enumerate(model.parameters()):
        total += float(p.detach().double().abs().sum()) * (1 + (i % 7))
    return total


def check_identical(what: Mapping[str, float], device: torch.device | None = None, *, where: str = "") -> None:
    """Check with one all-reduce that ``what`` (name -> number) is the same on every rank.

    Raises:
        RuntimeError: naming the quantities that differ and their range over the ranks.
    """
    if not is_active():
        return
    names = list(what)
    values = torch.tensor([float(what[k]) for k in names], dtype=torch.float64)
    both = torch.cat([values, -values]).to(_comm_device(device or torch.device("cpu")))
    dist.all_reduce(both, op=dist.ReduceOp.MIN)  # one collective: the minimum and the maximum
    both = both.cpu()
    low, high = both[: len(names)], -both[len(names):]
    bad = [f"{k} ({low[i].item():.6g}..{high[i].item():.6g})" for i, k in enumerate(names)
           if not math.isclose(low[i].item(), high[i].item(), rel_tol=1e-9, abs_tol=1e-9)]
    if bad:
        raise RuntimeError(
            f"the ranks diverged{' ' + where if where else ''}: {', '.join(bad)} differ between processes. "
            f"Every rank must run the same call on the same data with the same model initialization "
            f"(seed it alike) and samplers seeded alike"
        )
