"""A ticket search as rounds that any training loop can drive.

:class:`TicketSearch` owns everything a search keeps between rounds: the masks, the rewind
point, the PrAC sets and their statistics, the history and the checkpoints. It hands a
training loop one :class:`Round` at a time (which samples, how many steps, the learning-rate
factor at each step) and takes back what happened (per batch: sample indices, logits and
targets; per epoch: an optional validation number). Between rounds it prunes, rewinds,
picks the next PrAC set and checkpoints.

``tickets.prune`` is this object driven by the library's own engine
(:class:`tickets.training.Trainer`); your own loop drives it the same way::

    search = tickets.TicketSearch(model, PrACSampler(train_set), rounds=5, epochs=30)
    loader = search.loader(num_workers=4)               # (input, target, index) batches
    for rnd in search:                                  # begin_round() ... end_round()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = rnd.lr_scheduler(optimizer)         # the round's (scaled) schedule
        for epoch in rnd:
            for x, y, idx in rnd.batches(loader):
                loss = F.cross_entropy(logits := model(x), y)
                optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()
                rnd.report(idx, logits, y)              # statistics, accounting, masks
    ticket = search.ticket

See ``docs/own-loop.md`` for the protocol and what it guarantees.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
import sys
import time
import warnings
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from tickets import distributed as _dist, methods
from tickets.batching import EpochBatchSampler, check_loader_kwargs, steps_per_epoch as batch_steps
from tickets.data import random_transform
from tickets.rewind import enforce_masks, rewind as rewind_weights, snapshot
from tickets.sampler import IndexedDataset, PrACSampler, dataset_of, targets_of
from tickets.selection import prunable_parameters
from tickets.stats import SampleStats, SelectionRule, disagreement, predict, select
from tickets.ticket import Ticket, atomic_save, pack_mask, remove_stale_temporaries, unpack_mask
from tickets.training import (
    Schedule, _load_state, _state_copy, make_schedule, parse_step, resolve_channels_last, resolve_device,
    resolve_precision,
)

__all__ = [
    "TicketSearch", "Round", "Pruning", "PrACOptions", "Runtime", "EarlyBird", "RunInterrupted", "load_prac_sets",
    "describe_optimizer",
]

log = logging.getLogger("tickets")

STATE_FORMAT = "torch-tickets/imp-run"
STATE_VERSION = 2  # 2: tensors stored compactly (see _Encoder); 1 still loads
METRICS_FILE = "metrics.jsonl"
# the files a search writes atomically into checkpoint_dir (their stale temporaries are removed on start)
_RUN_FILES = frozenset({"state.pt", "prac_sets.pt", "ticket.ticket", "round_0.pt"})
_ROUND_TICKET = re.compile(r"^round_\d+\.ticket$")


class RunInterrupted(RuntimeError):
    """Raised by callbacks to stop a run on purpose (a rerun with the same checkpoint_dir resumes)."""


# ---------------------------------------------------------------------- early-bird
class EarlyBird:
    """Early-bird stop of a round: the mask that pruning would give has stopped moving.

    After each epoch, compute the mask that pruning ``amount`` more of the surviving weights
    (global magnitude) would give, and its Hamming distance to the previous epoch's mask
    divided by the number of surviving weights. Keep the last ``window`` distances; stop when
    their maximum falls below ``eps``. The round's mask is then taken from that epoch's weights.

    Args:
        eps: the distance threshold (0.08 in the PrAC paper).
        window: how many consecutive distances must all be below ``eps`` (5 in the paper).
        amount: the fraction pruned for the comparison; None = ``tickets.prune``'s ``amount``.
    """

    def __init__(self, eps: float = 0.08, window: int = 5, amount: float | None = None) -> None:
        if not 0.0 < eps < 1.0:
            raise ValueError(f"eps must be in (0, 1); got {eps!r}")
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be an int >= 1; got {window!r}")
        if amount is not None and not 0.0 < amount < 1.0:
            raise ValueError(f"amount must be in (0, 1) or None; got {amount!r}")
        self.eps, self.window, self.amount = float(eps), window, amount
        self.parameters: list[tuple[nn.Module, str]] = []
        self._previous: torch.Tensor | None = None
        self.distances: list[float] = []

    def bind(self, parameters: list[tuple[nn.Module, str]], amount: float) -> EarlyBird:
        """A fresh copy for one round over ``parameters`` (``amount`` unless set)."""
        bound = EarlyBird(self.eps, self.window, self.amount if self.amount is not None else amount)
        bound.parameters = parameters
        return bound

    @torch.no_grad()
    def _next_mask(self) -> torch.Tensor:
        scores = []
        for module, name in self.parameters:
            orig = methods._original(module, name).detach()
            keep = methods._current_mask(module, name) if methods.is_pruned_tensor(module, name) else torch.ones_like(orig, dtype=torch.bool)
            scores.append(orig.abs()[keep.bool()].flatten().float().cpu())
        flat = torch.cat(scores)
        drop = int(round(float(self.amount or 0.2) * flat.numel()))
        order = torch.sort(flat, stable=True).indices
        mask = torch.ones(flat.numel(), dtype=torch.bool)
        mask[order[:drop]] = False
        return mask

    def __call__(self, model: nn.Module, epoch: int) -> bool:
        mask = self._next_mask()
        if self._previous is not None:
            self.distances.append(float((mask != self._previous).sum()) / mask.numel())
            self.distances = self.distances[-self.window:]
        self._previous = mask
        return len(self.distances) == self.window and max(self.distances) < self.eps

    def state_dict(self) -> dict[str, Any]:
        return {"previous": self._previous, "distances": list(self.distances)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._previous = state["previous"]
        self.distances = list(state["distances"])

    def __repr__(self) -> str:
        return f"EarlyBird(eps={self.eps}, window={self.window}, amount={self.amount})"


# ---------------------------------------------------------------------- checks
def _is_label(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, torch.Tensor) and value.dim() == 0 and not value.dtype.is_floating_point


def _warn_augmented(train_data: Any) -> None:
    """Warn (once per call site, as ``warnings`` does) when a PrAC search will run its
    disagreement pass on augmented images because ``train_eval_data`` was not given."""
    found = random_transform(train_data)
    if found is None:
        return
    warnings.warn(
        f"train_data augments ({found} in its transform) and no train_eval_data was given: the PrAC disagreement "
        f"pass between rounds will predict on augmented images, so the dense/pruned disagreement mixes in the "
        f"augmentation's noise. Pass train_eval_data= (the same samples, same order, without random transforms; "
        f"tickets.data.load_dataset gives it as splits.train_eval)",
        UserWarning, stacklevel=3,
    )


def _check_labelled(dataset: Any, argument: str) -> None:
    if dataset is None or isinstance(dataset, DataLoader):
        return
    if not isinstance(dataset, Dataset):
        return  # an iterable of batches: checked when used
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"{argument} must be a map-style Dataset with a length; got {type(dataset).__name__}") from None
    if size == 0:
        raise ValueError(f"{argument} is empty")
    item = dataset[0]
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise ValueError(
            f"{argument} ({type(dataset).__name__}) has no labels: its items are {type(item).__name__}, "
            f"not (input, target) pairs; ticket finding needs a labelled classification data set"
        )
    if not _is_label(item[1]):
        raise ValueError(
            f"{argument} ({type(dataset).__name__}) item 0 has target {item[1]!r}: expected an integer "
            f"class label (int or 0-d integer tensor)"
        )


@torch.no_grad()
def _check_model_output(model: nn.Module, dataset: Dataset, device: torch.device) -> int:
    """Run one tiny batch in eval mode; return the number of classes."""
    items = [dataset[i] for i in range(min(2, len(dataset)))]  # type: ignore[arg-type]
    x = torch.stack([torch.as_tensor(it[0]) for it in items]).to(device)
    was = model.training
    model.eval()
    try:
        out = model(x)
    except Exception as e:
        raise ValueError(f"the model failed on a batch of the training data (inputs of shape {tuple(x.shape)}): {e}") from e
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0]:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(
            f"the model's output for a batch of {x.shape[0]} samples is {shape}; expected logits of shape "
            f"[{x.shape[0]}, classes] (a classification model)"
        )
    classes = int(out.shape[1])
    targets = targets_of(dataset)
    labels = targets if targets is not None else torch.tensor([int(it[1]) for it in items])
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= classes:
        raise ValueError(
            f"the training data has label {high if high >= classes else low} but the model outputs {classes} "
            f"classes (valid labels 0..{classes - 1}): wrong num_classes for this data set?"
        )
    return classes


def _refuse_pruned(model: nn.Module) -> None:
    """A search starts from a dense model: refuse one that carries pruning masks (a model
    object that a finished ``prune`` left pruned, e.g. when a notebook cell runs again)."""
    found = methods.masks(model)
    if not found:
        return
    total = sum(m.numel() for m in found.values())
    zero = total - sum(int(m.sum()) for m in found.values())
    raise ValueError(
        f"the model is already pruned: {len(found)} tensor(s) carry masks ({', '.join(list(found)[:3])}"
        f"{', ...' if len(found) > 3 else ''}), {zero / total:.1%} of their weights pruned. A search starts from a "
        f"dense, untrained model: pass a fresh model (a new instance, or a copy.deepcopy taken before pruning; to "
        f"resume a run, a fresh model with the same checkpoint_dir). To train a ticket you found, apply it to a "
        f"fresh model (ticket.apply(model)) and train that (tickets.retrain(ticket, model, train_data))"
    )


def _rewind_point(rewind_to: int | str, spe_full: int, total_full: int) -> int:
    if isinstance(rewind_to, str) and rewind_to.strip().lower() in ("init", "initialization"):
        return 0
    step = parse_step(rewind_to, spe_full, "rewind_to")
    if step >= total_full:
        raise ValueError(
            f"rewind_to={rewind_to!r} is step {step}, at or after the end of round 0 ({total_full} steps): "
            f"rewind to an early point, e.g. '3ep' or 500"
        )
    return step


def _time_ratio(sched: Schedule, n: int, set_size: int, min_step_fraction: float,
                world_size: int = 1) -> tuple[float, bool]:
    """The schedule ratio of a PrAC round on ``set_size`` of ``n`` samples, and whether the
    small-set floor raised it.

    The paper's reduced schedule runs ``int(E * r)`` epochs of ``r * N`` samples (about
    ``r**2`` of a full round's steps). The floor raises the epochs (never above ``E``) so
    that the round takes at least ``min_step_fraction`` of a full round's steps (steps as
    :meth:`Schedule.steps_per_epoch` counts them on ``world_size`` processes).
    """
    ratio = set_size / n
    plain = max(1, int(sched.epochs * ratio + 1e-9))
    needed = math.ceil(min_step_fraction * sched.total_steps(n, world_size) / sched.steps_per_epoch(set_size, world_size) - 1e-9)
    epochs = min(sched.epochs, max(plain, needed))
    if epochs <= plain:
        return ratio, False
    return epochs / sched.epochs, True


def _qualified(model: nn.Module, parameters: list[tuple[nn.Module, str]]) -> list[str]:
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for module, name in parameters:
        if id(module) not in names:
            raise ValueError(f"parameters holds a {type(module).__name__} that is not a module of the model")
        prefix = names[id(module)]
        out.append(f"{prefix}.{name}" if prefix else name)
    return out


def _current_masks(parameters: list[tuple[nn.Module, str]], names: list[str]) -> dict[str, torch.Tensor]:
    found = {}
    for (module, name), q in zip(parameters, names):
        if methods.is_pruned_tensor(module, name):
            found[q] = methods._current_mask(module, name).detach().bool().cpu().clone()
        else:
            found[q] = torch.ones_like(methods._original(module, name), dtype=torch.bool, device="cpu")
    return found


def _sparsity(found: Mapping[str, torch.Tensor]) -> float:
    total = sum(m.numel() for m in found.values())
    return 1.0 - sum(int(m.sum()) for m in found.values()) / total


def load_prac_sets(checkpoint_dir: str | Path) -> list[torch.Tensor]:
    """The PrAC set of every round of a :func:`prune` run saved in ``checkpoint_dir``.

    ``sets[k]`` is the set round ``k`` trained on (``sets[0]`` = all samples). Pass them to
    :meth:`tickets.PrACSampler.replay` to reuse them for another architecture.
    """
    path = Path(checkpoint_dir) / "prac_sets.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no PrAC sets in {str(checkpoint_dir)!r} (expected {path.name} written by tickets.prune)")
    sets = torch.load(path, map_location="cpu", weights_only=True)
    return [sets[k] for k in sorted(sets)]


# ---------------------------------------------------------------------- the run
@dataclass
class _Run:
    """Mutable state of a search, checkpointed between epochs and rounds."""

    round: int = 0
    phase: Literal["start", "train", "done"] = "start"
    model: dict[str, torch.Tensor] | None = None
    masks: dict[str, torch.Tensor] | None = None
    trainer: dict[str, Any] | None = None
    rewind_state: dict[str, torch.Tensor] | None = None
    round_start: dict[str, torch.Tensor] | None = None
    dense_predictions: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    sampler: dict[str, Any] | None = None
    sampler_generator: torch.Tensor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    sets: dict[int, torch.Tensor] = field(default_factory=dict)
    extra_wall: float = 0.0
    # the finished last round's per-sample statistics (PrAC), kept so that a later run with more
    # rounds can pick the next set as an uninterrupted run would have (see TicketSearch._advance)
    stats: dict[str, torch.Tensor] | None = None
    # what round 0 started from (initial weights' digest, data order): checked by start_from
    origin: dict[str, Any] | None = None
    # the length of checkpoint_dir/metrics.jsonl when this state was saved (a resume cuts it back)
    metrics_bytes: int | None = None


# ---------------------------------------------------------------------- the state file
# state.pt (version 2) is the run's payload with every tensor stored compactly, losslessly:
# - bool tensors (masks) packed 8 entries per byte;
# - a floating tensor with at least 1/16 zeros (pruned weights, their momentum) as its nonzero
#   values, a packed bitmap of where they are and a packed bitmap of the zeros that are -0.0;
# - tensors with equal bits (the round's start in the run and as round_start, the current and
#   the best-validation weights, ...) stored once (torch.save writes a shared storage once).
# Version 1 files (plain tensors) still load.
_ENCODED = "__tickets_encoded__"
_BITWISE = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}
_COMPACT_MIN_NUMEL = 256


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bits (so +0.0 and -0.0 differ, and equal NaNs match)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    view = _BITWISE.get(a.dtype)
    return bool(torch.equal(a.view(view), b.view(view))) if view is not None else bool(torch.equal(a, b))


class _Encoder:
    """Encodes a payload for state.pt: compact forms, equal tensors stored once."""

    def __init__(self) -> None:
        self.seen: dict[tuple[Any, ...], list[tuple[torch.Tensor, Any]]] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return self.tensor(value)
        if isinstance(value, dict):
            out: dict[Any, Any] = OrderedDict() if isinstance(value, OrderedDict) else {}
            out.update((k, self(v)) for k, v in value.items())
            if hasattr(value, "_metadata"):
                out._metadata = value._metadata  # type: ignore[attr-defined]
            return out
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self(v) for v in value)
        return value

    def tensor(self, t: torch.Tensor) -> Any:
        t = t.detach()
        if t.device.type != "cpu" or t.numel() < _COMPACT_MIN_NUMEL or t.is_sparse or t.layout != torch.strided:
            return t
        key = (t.dtype, tuple(t.shape))
        for other, encoded in self.seen.setdefault(key, []):
            if _bits_equal(t, other):
                return encoded
        encoded = self.compact(t, [other for other, stored in self.seen[key] if stored is other])
        self.seen[key].append((t, encoded))
        return encoded

    @staticmethod
    def compact(t: torch.Tensor, dense: Sequence[torch.Tensor] = ()) -> Any:
        """``t`` in its smallest lossless form; ``dense``: tensors of its shape stored as they
        are, of which ``t`` may be a masked copy (a rewound round's start: the rewind point
        with the pruned entries zeroed), then stored as that tensor and where it is zero."""
        shape = list(t.shape)
        if t.dtype == torch.bool:
            return {_ENCODED: "bits", "shape": shape, "bits": pack_mask(t)}
        if not t.dtype.is_floating_point:
            return t
        flat = t.reshape(-1)
        nonzero = flat != 0
        kept = int(nonzero.sum())
        if kept * t.element_size() + flat.numel() // 4 >= flat.numel() * t.element_size():
            return t
        negative_zero = ~nonzero & torch.signbit(flat)
        record = {_ENCODED: "nonzero", "shape": shape, "where": pack_mask(nonzero),
                  "negative_zero": pack_mask(negative_zero) if bool(negative_zero.any()) else None}
        values = flat[nonzero]
        bits = _BITWISE.get(t.dtype)
        for source in dense:
            picked = source.reshape(-1)[nonzero]
            if bits is not None and torch.equal(picked.view(bits), values.view(bits)):
                return {**record, _ENCODED: "masked", "source": source}
        return {**record, "values": values.clone()}


def _decode(value: Any, shared: set[int] | None = None) -> Any:
    """The payload of :class:`_Encoder` back (every tensor its own storage)."""
    shared = set() if shared is None else shared
    if isinstance(value, torch.Tensor):
        pointer = value.untyped_storage().data_ptr()
        if pointer in shared and value.numel():
            return value.clone()  # stored once for several entries: each gets its own copy
        shared.add(pointer)
        return value
    if isinstance(value, dict):
        kind = value.get(_ENCODED)
        if kind == "bits":
            return unpack_mask(value["bits"], value["shape"])
        if kind in ("nonzero", "masked"):
            where = unpack_mask(value["where"], value["shape"]).reshape(-1)
            values = value["values"] if kind == "nonzero" else value["source"].reshape(-1)[where]
            flat = torch.zeros(where.numel(), dtype=values.dtype)
            flat[where] = values
            if value["negative_zero"] is not None:
                flat[unpack_mask(value["negative_zero"], value["shape"]).reshape(-1)] = -0.0
            return flat.reshape(value["shape"])
        if kind is not None:
            raise ValueError(f"unknown tensor encoding {kind!r} in the checkpoint (written by a newer torch-tickets?)")
        out: dict[Any, Any] = OrderedDict() if isinstance(value, OrderedDict) else {}
        out.update((k, _decode(v, shared)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            out._metadata = value._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(value, list):
        return [_decode(v, shared) for v in value]
    if isinstance(value, tuple):
        return tuple(_decode(v, shared) for v in value)
    return value


def _save_run(run: _Run, fingerprint: str, directory: Path, *, fsync: bool = True) -> None:
    """Write the run to ``directory/state.pt`` (atomically, tensors stored compactly)."""
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, "fingerprint": fingerprint,
               **{k: getattr(run, k) for k in run.__dataclass_fields__}}
    payload["history"] = json.dumps(run.history)
    encoder = _Encoder()
    encoder(run.rewind_state)  # first: the round starts and rewound weights are masked copies of it
    atomic_save(encoder(payload), directory / "state.pt", fsync=fsync)


def _load_run(directory: Path, fingerprint: str) -> _Run | None:
    path = directory / "state.pt"
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    except Exception as e:
        raise ValueError(f"{str(path)!r} is not a readable checkpoint of tickets.prune: {e}") from None
    if not isinstance(payload, dict) or payload.get("format") != STATE_FORMAT:
        raise ValueError(f"{str(path)!r} is not a checkpoint of tickets.prune (no {STATE_FORMAT!r} format tag)")
    if payload.get("version") not in (1, STATE_VERSION):
        raise ValueError(
            f"{str(path)!r} is a checkpoint of version {payload.get('version')!r}; this torch-tickets reads versions "
            f"1 and {STATE_VERSION}: upgrade torch-tickets to resume it, or use another checkpoint_dir"
        )
    payload = _decode(payload)
    if payload["fingerprint"] != fingerprint:
        diff = _config_diff(json.loads(payload["fingerprint"]), json.loads(fingerprint), ignore=_GROWABLE_KEYS)
        if diff:
            raise ValueError(
                f"checkpoint_dir {str(directory)!r} holds a run with other settings (differing: "
                f"{[key for key, _, _ in diff]}: {_describe_diff(diff)}); rerun with the same arguments to resume "
                f"(only rounds may change), or use another checkpoint_dir"
            )
    payload["history"] = json.loads(payload["history"])
    fields = _Run.__dataclass_fields__
    return _Run(**{k: payload[k] for k in fields if k in payload})  # fields added later keep their defaults


def _check_rounds(run: _Run, rounds: int, directory: Path | None) -> None:
    """``rounds`` may grow on a saved search, never fall below the rounds it has begun."""
    if run.phase == "done":
        least, what = len(run.history), f"finished {len(run.history)} round(s)"
    elif run.phase == "train" or run.history:
        least, what = run.round + 1, f"begun round {run.round} (rounds 0..{run.round})"
    else:
        return
    if rounds < least:
        raise ValueError(
            f"rounds={rounds} is fewer than the search in checkpoint_dir {str(directory)!r} has already {what}: "
            f"rounds may grow on a saved search, not shrink below that (pass rounds >= {least}); its round "
            f"tickets round_<k>.ticket hold the earlier sparsities"
        )


def _apply_masks(parameters: list[tuple[nn.Module, str]], names: list[str], found: Mapping[str, torch.Tensor]) -> None:
    for (module, name), q in zip(parameters, names):
        mask = found[q]
        if methods.is_pruned_tensor(module, name):
            if not torch.equal(methods._current_mask(module, name).bool().cpu(), mask):
                raise ValueError(f"{q!r} of the model is already pruned with another mask: pass a fresh model to resume")
        else:
            methods.FixedMask.apply(module, name, mask)


# ---------------------------------------------------------------------- the run's identity
# "rounds" may grow on a finished or running search; "optimizer" was added to the fingerprint
# after the first release: a checkpoint without it resumes (its optimizer is not known)
_GROWABLE_KEYS = frozenset({"rounds"})
_ADDED_KEYS = frozenset({"optimizer"})
# settings that only concern rounds >= 1: a search may start from another's round 0 despite them
_AFTER_ROUND_0_KEYS = frozenset({
    "rounds", "amount", "rewind", "adaptive", "selection", "min_step_fraction", "scale_schedule", "early_bird",
})
ROUND0_FORMAT = "torch-tickets/round-0"
ROUND0_FILE = "round_0.pt"


def _jsonable(value: Any) -> Any:
    """A JSON-able form of an optimizer hyperparameter (tensors as numbers, tuples as lists,
    callables by name, anything else by its repr)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
    return repr(value)


def describe_optimizer(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """What an optimizer trains with, JSON-able: ``{"class": "torch.optim.adamw.AdamW",
    "param_groups": [{"lr": ..., "betas": [...], "eps": ..., "weight_decay": ..., ...}]}``.

    Every key of every param group except ``params``; a group's ``lr`` is its base learning
    rate (``initial_lr`` once an LR scheduler has taken it over). Used for the run's
    fingerprint, ``ticket.meta["optimizer"]`` and each round's history entry.
    """
    cls = type(optimizer)
    groups = []
    for group in optimizer.param_groups:
        described = {key: _jsonable(value) for key, value in sorted(group.items()) if key not in ("params", "initial_lr")}
        if "initial_lr" in group:
            described["lr"] = _jsonable(group["initial_lr"])
        groups.append(described)
    return {"class": f"{cls.__module__}.{cls.__qualname__}", "param_groups": groups}


def _optimizer_diff(saved: Any, now: Any) -> list[tuple[str, Any, Any]]:
    """Differences of two :func:`describe_optimizer` records, as ``(key, saved, now)``. A key
    present in only one group (another torch version's defaults) is not compared."""
    if not isinstance(saved, Mapping) or not isinstance(now, Mapping):
        return [] if saved == now else [("optimizer", saved, now)]
    if saved.get("class") != now.get("class"):
        return [("optimizer.class", saved.get("class"), now.get("class"))]
    a, b = list(saved.get("param_groups") or []), list(now.get("param_groups") or [])
    if len(a) != len(b):
        return [("optimizer.param_groups", f"{len(a)} groups", f"{len(b)} groups")]
    out = []
    for i, (x, y) in enumerate(zip(a, b)):
        for key in sorted(set(x) & set(y)):
            if x[key] != y[key]:
                out.append((f"optimizer.param_groups[{i}].{key}", x[key], y[key]))
    return out


def _config_diff(saved: Mapping[str, Any], now: Mapping[str, Any], ignore: Iterable[str] = ()) -> list[tuple[str, Any, Any]]:
    """The settings that differ between two run configurations (JSON forms), as
    ``(key, saved value, value now)``, leaving out ``ignore`` and keys an older checkpoint lacks
    because they were added later (:data:`_ADDED_KEYS`)."""
    skip = set(ignore)
    out: list[tuple[str, Any, Any]] = []
    for key in sorted(set(saved) | set(now)):
        if key in skip or (key in _ADDED_KEYS and key not in saved):
            continue
        if key == "optimizer":
            out.extend(_optimizer_diff(saved.get(key), now.get(key)))
        elif saved.get(key) != now.get(key):
            out.append((key, saved.get(key), now.get(key)))
    return out


def _describe_diff(diff: Sequence[tuple[str, Any, Any]], before: str = "saved") -> str:
    def short(value: Any) -> str:
        text = json.dumps(value, sort_keys=True, default=str)
        return text if len(text) <= 80 else text[:77] + "..."

    return "; ".join(f"{key}: {before} {short(a)}, now {short(b)}" for key, a, b in diff)


def _digest(state: Mapping[str, torch.Tensor]) -> str:
    """A SHA-256 of a state dict's keys, dtypes, shapes and values (initial weights' identity)."""
    import hashlib

    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(state[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _first_set(sampler: Any, n: int) -> torch.Tensor:
    """The indices round 0 trains on with ``sampler`` (before it runs)."""
    if isinstance(sampler, PrACSampler):
        plan = sampler._plan
        return (plan[0] if plan is not None else sampler.indices).clone()
    return torch.arange(n)


def _sampler_identity(sampler: Any) -> dict[str, Any]:
    """What fixes round 0's data order: the sampler's type, its seed and shuffling (a
    :class:`PrACSampler`), and the state of its ``generator`` (``RandomSampler``) before round 0."""
    identity: dict[str, Any] = {"type": f"{type(sampler).__module__}.{type(sampler).__qualname__}"}
    if isinstance(sampler, PrACSampler):
        identity.update(seed=sampler.seed, shuffle=sampler.shuffle)
    for attribute in ("replacement", "_num_samples"):
        if isinstance(getattr(sampler, attribute, None), (bool, int)):
            identity[attribute.lstrip("_")] = getattr(sampler, attribute)
    generator = getattr(sampler, "generator", None)
    if isinstance(generator, torch.Generator):
        identity["generator"] = _digest({"state": generator.get_state()})
    return identity


def _load_round_0(source: Path) -> dict[str, Any]:
    """The finished round 0 recorded in another search's checkpoint_dir (``round_0.pt``)."""
    if not source.is_dir():
        raise FileNotFoundError(f"start_from={str(source)!r} is not a folder: pass the checkpoint_dir of a search whose round 0 has finished")
    path = source / ROUND0_FILE
    if not path.is_file():
        raise ValueError(
            f"start_from={str(source)!r} holds no finished round 0 (no {ROUND0_FILE}): its search has not finished "
            f"round 0 yet, or was run by an older torch-tickets that did not record it; finish its round 0 first "
            f"(rerun it) or compute round 0 in this search (leave out start_from)"
        )
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{str(path)!r} is not a readable round-0 record of torch-tickets: {e}") from None
    if not isinstance(record, dict) or record.get("format") != ROUND0_FORMAT:
        raise ValueError(f"{str(path)!r} is not a round-0 record of torch-tickets")
    return record


# ---------------------------------------------------------------------- options
_REWIND_KINDS = ("weights", "lr")


@dataclass(frozen=True)
class Pruning:
    """What to prune after each round, and what to rewind to.

    Args:
        amount: fraction of the surviving weights pruned after each round (0.2 = 20%), a
            float in (0, 1); not a count (unlike the int ``amount`` of one pruning step,
            :func:`tickets.global_magnitude_prune`). ``rounds=R`` ends at sparsity
            ``1 - (1 - amount) ** (R - 1)``.
        rewind_to: the rewind point in round 0: ``0``/``"init"`` (the original LTH), an
            optimizer step (``500``, ``"500it"``) or epochs (``"3ep"``, late rewinding).
        rewind: ``"weights"`` resets the surviving weights (and normalization statistics) to
            the rewind point and the schedule to that step; ``"lr"`` (learning-rate rewinding)
            keeps the trained weights and only restarts the schedule at ``rewind_to``.
        parameters: ``(module, name)`` pairs to prune; None = :func:`tickets.prunable_parameters`
            (conv and linear layers; the classifier and the stem stay dense).
        early_bird: True or an :class:`EarlyBird` to stop rounds >= 1 when the mask stops
            moving (round 0 always runs to the end).
    """

    amount: float = 0.2
    rewind_to: int | str = 0
    rewind: Literal["weights", "lr"] = "weights"
    parameters: Sequence[tuple[nn.Module, str]] | None = field(default=None, compare=False, repr=False)
    early_bird: bool | EarlyBird = False

    def __post_init__(self) -> None:
        amount = self.amount
        if isinstance(amount, int) and not isinstance(amount, bool):
            raise ValueError(
                f"amount is the fraction of the surviving weights pruned after each round, a float in (0, 1), "
                f"e.g. 0.2; got the int {amount!r}: a count is not accepted here, since each round prunes a share of "
                f"the weights that survive (a count of weights is for one pruning step, e.g. "
                f"tickets.global_magnitude_prune(params, amount={amount!r}))"
            )
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 < float(amount) < 1.0:
            raise ValueError(f"amount must be a fraction of the surviving weights in (0, 1), e.g. 0.2; got {amount!r}")
        if self.rewind not in _REWIND_KINDS:
            raise ValueError(f"rewind must be 'weights' (rewind weights and schedule) or 'lr' (schedule only); got {self.rewind!r}")
        if isinstance(self.rewind_to, bool) or not isinstance(self.rewind_to, (int, str)):
            raise TypeError(f"rewind_to must be a step (int), '500it', '3ep' or 'init'; got {self.rewind_to!r}")
        if not isinstance(self.early_bird, (bool, EarlyBird)):
            raise TypeError(f"early_bird must be True/False or a tickets.EarlyBird; got {self.early_bird!r}")
        if self.parameters is not None:
            pairs = tuple(self.parameters)
            for pair in pairs:
                if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], nn.Module) and isinstance(pair[1], str)):
                    raise TypeError(f"parameters must hold (module, name) pairs; got {pair!r}")
            object.__setattr__(self, "parameters", pairs)


@dataclass(frozen=True)
class PrACOptions:
    """How PrAC rounds pick their sets and scale their schedule (ignored for vanilla IMP).

    Args:
        selection: how the next set is chosen (:class:`tickets.stats.SelectionRule`); None =
            the paper's rule (hard to memorize ∪ dense/pruned disagreement).
        scale_schedule: scale a round's schedule by ``r = |PrAC| / N`` (the paper); False
            trains every round for the full number of epochs.
        min_step_fraction: the small-set safeguard: a PrAC round trains at least this
            fraction of a full round's optimizer steps (0 disables it).
    """

    selection: SelectionRule | None = None
    scale_schedule: bool = True
    min_step_fraction: float = 0.1

    def __post_init__(self) -> None:
        if self.selection is not None and not isinstance(self.selection, SelectionRule):
            raise TypeError(f"selection must be a tickets.SelectionRule or None; got {type(self.selection).__name__}")
        value = self.min_step_fraction
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"min_step_fraction must be a fraction of a full round's steps in [0, 1], e.g. 0.1; got {value!r}")


@dataclass(frozen=True)
class Runtime:
    """Where and how the engine runs (none of it changes which ticket is found, except
    through floating-point rounding).

    Args:
        device: where to train; None = the model's device.
        precision: ``"auto"`` (bf16 autocast where the CPU or GPU has native bf16, fp16 on
            older GPUs, fp32 otherwise), ``"bf16"``, ``"fp16"`` or ``"fp32"``.
        amp: the older switch (True = mixed precision, False = fp32); ``precision`` wins.
        channels_last: memory format; None = the rule of :func:`tickets.resolve_channels_last`.
        compile: ``torch.compile`` the training forward.
        num_workers, loader_kwargs: DataLoader options (workers, ``persistent_workers``...).
        quiet: no progress bars and no per-round summary lines.
        checkpoint_every: how often the engine saves the run within a round (with a
            ``checkpoint_dir``; the end of every round is always saved): ``"5min"`` (the
            default: at the end of an epoch once 5 minutes have passed since the last save;
            also ``"90s"``, ``"2h"``), an int ``N`` (every ``N`` epochs; ``1`` = every epoch)
            or ``"round"`` (round ends only). A resume repeats the epochs since the last save.
        keep_round_tickets: write ``round_<k>.ticket`` (the ticket of every round, the
            sparsity sweep of IMP) into ``checkpoint_dir``; False keeps only the final
            ``ticket.ticket``.
    """

    device: torch.device | str | None = None
    precision: str | None = None
    amp: bool | None = None
    channels_last: bool | None = None
    compile: bool = False
    num_workers: int = 0
    loader_kwargs: Mapping[str, Any] | None = field(default=None, compare=False)
    quiet: bool = False
    checkpoint_every: int | str = "5min"
    keep_round_tickets: bool = True

    def __post_init__(self) -> None:
        parse_checkpoint_every(self.checkpoint_every)
        if not isinstance(self.keep_round_tickets, bool):
            raise TypeError(f"keep_round_tickets must be True or False; got {self.keep_round_tickets!r}")
        if isinstance(self.num_workers, bool) or not isinstance(self.num_workers, int) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0; got {self.num_workers!r}")
        if self.loader_kwargs is not None and not isinstance(self.loader_kwargs, Mapping):
            raise TypeError(f"loader_kwargs must be a mapping of DataLoader arguments; got {type(self.loader_kwargs).__name__}")
        check_loader_kwargs(self.loader_kwargs)  # drop_last and the engine's own keys are refused, with the reason
        if self.device is not None:
            resolve_device(self.device)  # "gpu" and other non-devices: a clear error before anything runs


_TIME_UNITS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0}


def parse_checkpoint_every(value: int | str) -> tuple[str, float]:
    """``Runtime.checkpoint_every`` as ``("epochs", N)``, ``("seconds", S)`` or ``("round", 0)``.

    Raises:
        ValueError / TypeError: not an int >= 1, ``"round"`` or a duration such as ``"90s"``,
            ``"5min"``, ``"2h"``.
    """
    valid = "an int N >= 1 (every N epochs), a duration such as '90s', '5min' or '2h', or 'round' (round ends only)"
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"checkpoint_every must be {valid}; got {value!r}")
    if isinstance(value, int):
        if value < 1:
            raise ValueError(f"checkpoint_every must be {valid}; got {value!r}")
        return "epochs", float(value)
    text = value.strip().lower()
    if text == "round":
        return "round", 0.0
    for unit in sorted(_TIME_UNITS, key=len, reverse=True):
        number = text[: -len(unit)].strip() if text.endswith(unit) else None
        if number:
            try:
                seconds = float(number)
            except ValueError:
                break
            if not math.isfinite(seconds) or seconds < 0:
                break
            return "seconds", seconds * _TIME_UNITS[unit]
    raise ValueError(f"checkpoint_every must be {valid}; got {value!r}")


_GROUPS: dict[str, type] = {"pruning": Pruning, "prac": PrACOptions, "runtime": Runtime}
_FIELDS = {name: {f.name for f in dataclasses.fields(cls)} for name, cls in _GROUPS.items()}
_SCHEDULE_KEYWORDS = {f.name for f in dataclasses.fields(Schedule)} | {"lr_schedule", "warmup"}


def resolve_options(
    schedule: Schedule | Mapping[str, Any] | None = None,
    pruning: Pruning | None = None,
    prac: PrACOptions | None = None,
    runtime: Runtime | None = None,
    **options: Any,
) -> tuple[Schedule, Pruning, PrACOptions, Runtime]:
    """Merge the option groups with loose keywords (the 0.1 form: ``amount=0.2, epochs=30``).

    Each keyword goes to the group that owns the field and overrides it; ``None`` means "not
    given". An unknown keyword is a ``TypeError`` listing the valid ones.
    """
    given = {"pruning": pruning, "prac": prac, "runtime": runtime}
    for name, value in given.items():
        if value is not None and not isinstance(value, _GROUPS[name]):
            raise TypeError(f"{name} must be a tickets.{_GROUPS[name].__name__}; got {type(value).__name__}")
    changes: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
    schedule_kwargs: dict[str, Any] = {}
    unknown = []
    for key, value in options.items():
        owner = next((name for name, fields in _FIELDS.items() if key in fields), None)
        if owner is not None:
            if value is not None:
                changes[owner][key] = value
        elif key in _SCHEDULE_KEYWORDS:
            schedule_kwargs[key] = value
        else:
            unknown.append(key)
    if unknown:
        valid = sorted(_SCHEDULE_KEYWORDS | set().union(*_FIELDS.values()))
        raise TypeError(f"unknown argument(s) {sorted(unknown)}; valid option keywords: {valid}")
    groups = []
    for name, cls in _GROUPS.items():
        base = given[name] or cls()
        groups.append(dataclasses.replace(base, **changes[name]) if changes[name] else base)
    sched = make_schedule(schedule, **schedule_kwargs)
    return (sched, *groups)  # type: ignore[return-value]


# ---------------------------------------------------------------------- the search
class _RoundSampler(EpochBatchSampler):
    """The batches of the search's sampler (this process's share under torch.distributed), cut
    by the batching rule of :mod:`tickets.batching` and to the open round's current epoch (see
    :meth:`TicketSearch.loader`): a ``batch_sampler``."""

    def __init__(self, search: TicketSearch) -> None:
        self.search = search
        source: Sampler[int] = search.sampler
        if search.world_size > 1:  # this rank's share of every epoch
            source = _dist.ShardSampler(search.sampler, search.rank, search.world_size)
        super().__init__(source, search._rank_batch, self._left)

    def _left(self) -> int | None:
        rnd = self.search._open
        if rnd is None:
            return None
        left = min(rnd.steps_per_epoch - rnd.step % rnd.steps_per_epoch, rnd.total_steps - rnd.step)
        return max(0, left) if not rnd.stopped else 0

    def set_epoch(self, epoch: int) -> None:
        """Ignored: the round sets its sampler's epoch (frameworks call this with their own count)."""


class Round:
    """One round of a :class:`TicketSearch`: what to train, for how long, and the reports.

    Made by :meth:`TicketSearch.begin_round`; closed by :meth:`TicketSearch.end_round`.

    Attributes:
        index: the round (0 = the dense training on the full data).
        schedule: the round's :class:`Schedule` (a PrAC round's is scaled by its set size).
        sampler: the search's sampler; it yields the current set's indices.
        indices: the current set (sorted indices into the training set).
        set_size, fraction: ``len(indices)`` and ``set_size / len(train_set)``.
        steps_per_epoch, total_steps: of the round's schedule over the current set.
        start_step: where the round starts in its schedule (after a rewind, not 0).
        step: the schedule position now (``start_step`` + the steps reported).
        steps, samples: optimizer steps and samples reported in this round.
        stats: the round's :class:`tickets.SampleStats` (None unless the sampler is an
            adaptive :class:`PrACSampler`).
        stopped: the early-bird stop ended the round.
        log: one dict per :meth:`end_epoch`.
    """

    def __init__(self, search: TicketSearch, index: int, schedule: Schedule, start_step: int,
                 set_size: int, floored: bool, stats: SampleStats | None) -> None:
        self.search = search
        self.index = index
        self.schedule = schedule
        self.set_size = set_size
        self.fraction = set_size / search.num_samples
        self.floored = floored
        self.steps_per_epoch = schedule.steps_per_epoch(set_size, search.world_size)
        self.total_steps = schedule.total_steps(set_size, search.world_size)
        self.start_step = start_step
        self.step = start_step
        self.steps = 0
        self.samples = 0
        self.stats = stats
        bird = search.pruning.early_bird
        self.early_bird: EarlyBird | None = None
        if bird and index > 0:
            self.early_bird = (bird if isinstance(bird, EarlyBird) else EarlyBird()).bind(search.parameters, float(search.pruning.amount))
        self.stopped = False
        self.log: list[dict[str, Any]] = []
        self.closed = False
        self._member: torch.Tensor | None = None
        if search.is_prac:
            self._member = torch.zeros(search.num_samples, dtype=torch.bool)
            self._member[search.sampler.indices] = True  # type: ignore[union-attr]
        self._best: tuple[float, float | None, int, dict[str, torch.Tensor]] | None = None
        self._epoch_steps = 0
        self._optimizer: weakref.ReferenceType[torch.optim.Optimizer] | None = None
        self._optimizer_record: dict[str, Any] | None = None  # describe_optimizer() of the attached optimizer
        self._started = time.perf_counter()
        self._sync_epoch()

    def _sync_epoch(self) -> None:
        """Keep the sampler at the epoch of the next step, so that a data iterator created at
        any moment (frameworks create theirs before their epoch hooks) has the right order."""
        if hasattr(self.sampler, "set_epoch") and self.step < self.total_steps:
            self.sampler.set_epoch(self.epoch)  # type: ignore[union-attr]

    # ------------------------------------------------------------------ what to train
    @property
    def sampler(self) -> Sampler[int]:
        return self.search.sampler

    @property
    def indices(self) -> torch.Tensor:
        if self._member is not None:
            return self._member.nonzero().flatten()
        return torch.arange(self.search.num_samples)

    @property
    def epochs(self) -> int:
        """Epochs of the round's schedule (counting from 0, not from :attr:`start_step`)."""
        return self.schedule.epochs

    @property
    def batch_size(self) -> int:
        return self.schedule.batch_size

    @property
    def epoch(self) -> int:
        """The epoch (0-based) that the next step belongs to."""
        return self.step // self.steps_per_epoch

    @property
    def done(self) -> bool:
        """True when the round's schedule is finished or the early-bird stop ended it."""
        return self.stopped or self.step >= self.total_steps

    def lr_factor(self, step: int | None = None) -> float:
        """The schedule's learning-rate multiplier at ``step`` (default: the next step).

        Multiply your optimizer's base learning rates by it before each step, or use
        :meth:`lr_scheduler`.
        """
        return self.schedule.lr_factor(self.step if step is None else int(step), self.steps_per_epoch)

    def lr_scheduler(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
        """A ``LambdaLR`` over ``optimizer`` following the round's schedule from :attr:`start_step`.

        Call ``scheduler.step()`` once after every ``optimizer.step()``. The optimizer is
        :meth:`attach`-ed (checked to be fresh and to train the pruned tensors).
        """
        self.attach(optimizer)
        start, spe, schedule = self.start_step, self.steps_per_epoch, self.schedule
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: schedule.lr_factor(start + i, spe))

    def attach(self, optimizer: torch.optim.Optimizer) -> None:
        """Check that ``optimizer`` is fit for this round: a fresh optimizer (IMP restarts the
        schedule and, with weight rewinding, the weights: momentum or Adam moments from an
        earlier round would be wrong) that trains every tensor being pruned.

        Raises:
            TypeError: not a ``torch.optim.Optimizer``.
            ValueError: the optimizer of an earlier round, one that already has state, one
                that does not train a pruned tensor of the model, or one of another class or
                hyperparameters (:func:`describe_optimizer`; ``lr`` is the base learning rate)
                than the earlier rounds of the search recorded in their history (resumes
                included): the own-loop counterpart of the run's fingerprint, which cannot see
                an optimizer built after ``begin_round()``.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer; got {type(optimizer).__name__}")
        search = self.search
        if optimizer in search._used_optimizers:
            raise ValueError(
                f"round {self.index} got the optimizer of an earlier round: create a fresh optimizer (and "
                f"scheduler) after begin_round() in every round; its momentum/moment state belongs to weights "
                f"that were pruned and rewound"
            )
        if len(optimizer.state) > 0:
            raise ValueError(
                f"the optimizer already holds state (momentum or moments) for {len(optimizer.state)} tensors: "
                f"create a fresh optimizer after begin_round() (or clear optimizer.state) for round {self.index}"
            )
        trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
        for (module, name), q in zip(search.parameters, search.names):
            tensor = methods._original(module, name)
            if id(tensor) not in trained:
                raise ValueError(
                    f"the optimizer does not train {q!r}, a tensor being pruned: build it over "
                    f"model.parameters() of the model given to the search"
                )
        described = describe_optimizer(optimizer)
        earlier = next((h["optimizer"] for h in reversed(search._run.history) if h.get("optimizer")), None)
        diff = _optimizer_diff(earlier, described) if earlier is not None else []
        if diff:
            raise ValueError(
                f"round {self.index} got another optimizer than the earlier rounds of this search "
                f"({_describe_diff(diff, before='earlier')}): a search trains every round with one recipe; build the "
                f"same optimizer each round, or start a new search (another checkpoint_dir) for another recipe"
            )
        search._used_optimizers.add(optimizer)
        self._optimizer = weakref.ref(optimizer)
        self._optimizer_record = described

    # ------------------------------------------------------------------ loops
    def __iter__(self) -> Iterator[int]:
        """The round's epochs (0-based, from the epoch of :attr:`start_step`) until it is
        :attr:`done`; sets the sampler's epoch (its data order) and closes each epoch with
        :meth:`end_epoch` if the loop did not."""
        while not self.done:
            epoch = self.epoch
            if hasattr(self.sampler, "set_epoch"):
                self.sampler.set_epoch(epoch)  # type: ignore[union-attr]
            before, logged = self.step, len(self.log)
            yield epoch
            if self.step == before:
                raise RuntimeError(
                    f"round {self.index}, epoch {epoch + 1}: no step was reported; call rnd.report(indices, "
                    f"logits, targets) after every optimizer step"
                )
            if len(self.log) == logged:
                self.end_epoch()

    def batches(self, loader: Iterable[Any]) -> Iterator[Any]:
        """The batches of ``loader`` that belong to the current epoch: all of them, except
        that the first epoch after a rewind starts mid-epoch and the last may be cut at the
        round's end.

        A loader of your own over ``search.sampler`` with ``batch_size`` works too: its last
        batch of one sample, if any, is beyond the epoch's steps (the schedule counts that
        sample in the batch before) and is not yielded.

        Raises:
            RuntimeError: the loader ran out before the epoch's steps (``drop_last=True``, or
                another sampler or batch size than the search's); the epoch would be cut in
                two parts. Use :meth:`TicketSearch.loader`.
        """
        left = min(self.steps_per_epoch - self.step % self.steps_per_epoch, self.total_steps - self.step)
        if left <= 0 or self.stopped:
            return
        given = 0
        for batch in loader:
            yield batch
            given += 1
            if given >= left:
                return
        raise RuntimeError(
            f"round {self.index}, epoch {self.epoch + 1}: the loader gave {given} batches, but the epoch has {left} "
            f"more steps ({self.steps_per_epoch} per epoch over {self.set_size:,} samples in batches of "
            f"{self.batch_size}, a last single sample joining the batch before it): build the loader with "
            f"search.loader() (no drop_last, the search's sampler and batch size)"
        )

    # ------------------------------------------------------------------ reports
    @torch.no_grad()
    def report(self, indices: torch.Tensor | Sequence[int], logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Report one optimizer step: the batch's sample ``indices`` (positions in the
        training set), its train-mode ``logits`` ``[batch, classes]`` and ``targets`` (class
        labels, or a ``[batch, classes]`` soft/one-hot target whose argmax is the label).

        Call it after ``optimizer.step()``. It records the per-sample statistics of a PrAC
        round, counts the step and samples, zeroes the pruned entries of the weights again
        (:func:`tickets.enforce_masks`), and keeps the rewind point in round 0.

        Raises:
            RuntimeError: the round is closed or its schedule is already finished.
            ValueError / TypeError: indices outside the training set or outside the current
                PrAC set, logits or targets of the wrong shape.
        """
        if self.closed:
            raise RuntimeError(f"round {self.index} is closed: report to the round returned by the last begin_round()")
        if self.step >= self.total_steps:
            raise RuntimeError(
                f"round {self.index} has {self.total_steps} steps and all were reported: iterate the loader "
                f"with rnd.batches(loader) and the epochs with `for epoch in rnd` to stop on time"
            )
        if self.stopped:
            raise RuntimeError(f"round {self.index} was stopped by the early-bird test: end it with end_round()")
        search = self.search
        if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
            shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(f"logits must be a [batch, classes] tensor; got {shape}")
        batch, classes = logits.shape
        if classes != search.classes:
            raise ValueError(f"logits have {classes} classes; the model gave {search.classes} when the search checked it")
        idx = torch.as_tensor(indices)
        if idx.dim() != 1 or idx.dtype.is_floating_point or idx.dtype == torch.bool:
            raise TypeError(f"indices must be a 1-d integer tensor of sample positions; got {idx.dtype} of shape {tuple(idx.shape)}")
        if idx.numel() != batch:
            raise ValueError(f"{idx.numel()} indices for {batch} logits: report the indices of the batch the logits came from")
        target = torch.as_tensor(targets)
        if target.dim() == 2 and target.shape == logits.shape:
            target = target.argmax(1)
        if target.dim() != 1 or target.numel() != batch or target.dtype.is_floating_point:
            raise ValueError(
                f"targets must be {batch} class labels (or a [{batch}, {classes}] soft target); got "
                f"{target.dtype} of shape {tuple(target.shape)}"
            )
        cpu = idx.detach().long().cpu()
        n = search.num_samples
        if batch and (int(cpu.min()) < 0 or int(cpu.max()) >= n):
            bad = int(cpu.min()) if int(cpu.min()) < 0 else int(cpu.max())
            raise ValueError(
                f"index {bad} is outside the training set (0..{n - 1}): report positions in the search's "
                f"train_data (batches of search.loader() or IndexedDataset(train_set) carry them)"
            )
        if self._member is not None:
            outside = ~self._member[cpu]
            if bool(outside.any()):
                raise ValueError(
                    f"round {self.index} trains on its PrAC set of {self.set_size:,} samples, but sample "
                    f"{int(cpu[outside][0])} is not in it ({int(outside.sum())} of the batch): draw the batches "
                    f"with the search's sampler (search.loader() or DataLoader(..., sampler=search.sampler))"
                )
        if self.stats is not None:
            correct = logits.detach().argmax(1).eq(target.to(logits.device))
            self.stats.record(cpu.to(self.stats.device), correct.to(self.stats.device))
        enforce_masks(search.model)
        self.steps += 1
        self.samples += batch
        self._epoch_steps += 1
        self.step += 1
        search._stepped(self)

    def end_epoch(self, val_acc: float | None = None, val_loss: float | None = None, **metrics: Any) -> bool:
        """Close an epoch; returns True when the round should stop (the early-bird test).

        Args:
            val_acc: the epoch's validation accuracy, a number in [0, 1] (optional), e.g.
                ``tickets.evaluate(model, val_set).accuracy`` (``evaluate`` returns an
                :class:`tickets.training.EvalResult`, not a number): the round then keeps
                its best-validation weights, as the engine does, and :meth:`restore_best` or
                :meth:`TicketSearch.end_round` loads them.
            val_loss: the matching loss (recorded).
            metrics: other JSON-able numbers, recorded in :attr:`log`.
        """
        if self.closed:
            raise RuntimeError(f"round {self.index} is closed")
        if self._epoch_steps == 0:
            raise RuntimeError(f"round {self.index}: end_epoch() without a reported step since the last one")
        if hasattr(self.stats, "flush"):
            self.stats.flush()  # type: ignore[union-attr]  # the epoch's statistics of every rank
        _dist.broadcast_buffers(self.search.model)  # every rank evaluates with rank 0's buffers
        entry: dict[str, Any] = {"epoch": (self.step - 1) // self.steps_per_epoch + 1, "step": self.step, **metrics}
        if val_acc is not None:
            val = float(val_acc)
            if not 0.0 <= val <= 1.0:
                raise ValueError(f"val_acc must be an accuracy in [0, 1]; got {val_acc!r}")
            entry["val_acc"] = val
            if val_loss is not None:
                entry["val_loss"] = float(val_loss)
            if self._best is None or val > self._best[0]:
                self._best = (val, entry.get("val_loss"), entry["epoch"], _state_copy(self.search.model))
        full_epoch = self.step % self.steps_per_epoch == 0
        if self.early_bird is not None and full_epoch and self.early_bird(self.search.model, entry["epoch"]):
            self.stopped = True
            entry["early_stop"] = True
        self.log.append(entry)
        self.search._metrics({"kind": "epoch", "round": self.index, **entry, "epochs": self.epochs,
                              "steps_trained": self.steps, "total_steps": self.total_steps})
        self._epoch_steps = 0
        self._sync_epoch()
        return self.stopped

    def restore_best(self) -> int | None:
        """Load the best-validation weights reported to :meth:`end_epoch` (nothing after an
        early-bird stop, which keeps the weights of its epoch); returns the kept epoch."""
        if self._best is None or self.stopped:
            return None
        _load_state(self.search.model, self._best[3])
        return self._best[2]

    def __repr__(self) -> str:
        return (f"Round({self.index}: {self.set_size:,} samples ({self.fraction:.1%}), {self.epochs} epochs, "
                f"step {self.step}/{self.total_steps}, from {self.start_step})")


class TicketSearch:
    """The state of a lottery-ticket search by IMP (on PrAC sets or on the full data),
    driven one round at a time by any training loop.

    Arguments are those of :func:`tickets.prune` that concern the search (the engine's
    ``eval_data``, ``test_data``, ``loss_fn`` and callbacks are the loop's business): the
    model, a sampler, ``rounds``, and the option groups ``schedule`` (:class:`Schedule`),
    ``pruning`` (:class:`Pruning`), ``prac`` (:class:`PrACOptions`), ``runtime``
    (:class:`Runtime`), or their fields as keywords (``amount=0.2, epochs=30, rewind_to="1ep"``).

    Args:
        model: the dense, untrained model; pruned and rewound in place between rounds, it
            ends as the last round's trained, pruned model (not the ticket: apply
            :attr:`ticket` to a fresh model for its rewound weights).
        sampler: a :class:`PrACSampler` (PrAC IMP), any sampler with a ``data_source``
            (vanilla IMP, e.g. ``RandomSampler(train_set)``), or a ``Dataset``; a ``Dataset``,
            or None with ``train_data``, means ``PrACSampler(train_data, seed=seed)``.
        rounds: trainings in all, round 0 included (>= 1). The one setting that may change
            when a checkpoint_dir is resumed: a larger value extends a finished or running
            search (a finished one continues with the pruning its last round skipped), a
            value below the rounds already begun is refused.
        train_data: the training set; default the sampler's ``data_source``.
        train_eval_data: the training split without augmentation, for the disagreement pass.
        checkpoint_dir: where the search is saved after every round (and ``round_<k>.ticket``,
            ``prac_sets.pt``, ``round_0.pt``, the final ``ticket.ticket``); a new search with
            the same arguments (and a fresh model) resumes at the round it was in (a round
            cut short starts again).
        seed: the sampler's seed when ``sampler`` is a data set, and part of the run's identity.
        meta: extra JSON-able facts for the tickets' ``meta``.
        start_from: the checkpoint_dir of another search whose round 0 has finished: this
            search takes that round 0 (history entry, trained weights, rewind point,
            per-sample statistics, sampler state) instead of computing it, and goes on from
            round 1. The two must agree on everything round 0 depends on (model and initial
            weights, data, seed, sampler and data order, schedule and optimizer, rewind
            point, precision); ``rounds``, ``amount``, ``rewind`` and the PrAC options may
            differ. A PrAC search needs round-0 statistics: start it from a PrAC search's
            round 0. Ignored when this search's own checkpoint_dir already holds a finished
            round.

    Raises:
        ValueError / TypeError, before anything runs: as :func:`tickets.prune`; a model that
        is already pruned; a ``start_from`` folder without a finished round 0 or of a search
        with other settings.
    """

    def __init__(
        self,
        model: nn.Module,
        sampler: Sampler[int] | Dataset | None = None,
        *,
        rounds: int,
        schedule: Schedule | Mapping[str, Any] | None = None,
        pruning: Pruning | None = None,
        prac: PrACOptions | None = None,
        runtime: Runtime | None = None,
        train_data: Dataset | None = None,
        train_eval_data: Dataset | DataLoader | None = None,
        checkpoint_dir: str | Path | None = None,
        seed: int = 0,
        meta: Mapping[str, Any] | None = None,
        start_from: str | Path | None = None,
        _engine: bool = False,
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
        _refuse_pruned(model)
        if start_from is not None and not isinstance(start_from, (str, Path)):
            raise TypeError(f"start_from must be the checkpoint_dir (str or Path) of another search; got {type(start_from).__name__}")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds must be an int >= 1 (round 0 is the dense training); got {rounds!r}")
        if isinstance(sampler, DataLoader):
            raise TypeError(
                f"the second argument is a DataLoader (over a {type(sampler.dataset).__name__}): pass a sampler or the "
                f"data set instead, e.g. PrACSampler(train_set) for PrAC IMP, RandomSampler(train_set) for IMP on "
                f"the full data, or train_set itself (= PrACSampler(train_set)); the search builds its loaders "
                f"(batch_size= sets the batch, num_workers= and loader_kwargs= the DataLoader options; own loops "
                f"use search.loader())"
            )
        sched, pruning, prac, runtime = resolve_options(schedule, pruning, prac, runtime, **options)
        _dist.init_from_env(runtime.device)  # under torchrun without a process group: make one
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {seed!r}")
        if isinstance(sampler, Dataset):
            sampler = PrACSampler(sampler, seed=seed)
        if sampler is None:
            if train_data is None:
                raise ValueError("pass a sampler over the training set (PrACSampler(train_set) or RandomSampler(train_set))")
            sampler = PrACSampler(train_data, seed=seed)
        if train_data is not None and not isinstance(train_data, Dataset):
            raise TypeError(f"train_data must be a map-style Dataset (the loader is built for you); got {type(train_data).__name__}")
        if not isinstance(sampler, Sampler) and not hasattr(sampler, "__iter__"):
            raise TypeError(f"sampler must be a torch Sampler; got {type(sampler).__name__}")
        source = dataset_of(sampler)
        if train_data is None:
            if source is None:
                raise ValueError(f"{type(sampler).__name__} does not say which data set it samples: pass train_data=")
            train_data = source
        elif source is not None and source is not train_data:
            raise ValueError(
                f"the sampler draws from a {type(source).__name__} of {len(source):,} samples, not from train_data "  # type: ignore[arg-type]
                f"({type(train_data).__name__} of {len(train_data):,}): build the sampler over the training set"  # type: ignore[arg-type]
            )
        _check_labelled(train_data, "train_data")
        _check_labelled(train_eval_data, "train_eval_data")
        n = len(train_data)  # type: ignore[arg-type]
        if isinstance(train_eval_data, Dataset) and len(train_eval_data) != n:  # type: ignore[arg-type]
            raise ValueError(f"train_eval_data has {len(train_eval_data):,} samples; train_data has {n:,}: they must be the same split")  # type: ignore[arg-type]
        is_prac = isinstance(sampler, PrACSampler)
        if is_prac and sampler.num_samples != n:  # type: ignore[union-attr]
            raise ValueError(f"the PrACSampler covers {sampler.num_samples:,} samples but train_data has {n:,}")  # type: ignore[union-attr]
        self.rank, self.world_size = _dist.world()
        if self.world_size > 1:
            if sched.batch_size % self.world_size:
                raise ValueError(
                    f"batch_size {sched.batch_size} is the global batch of all {self.world_size} processes: it must be "
                    f"a multiple of the world size"
                )
            if not runtime.quiet and self.rank != 0:
                runtime = dataclasses.replace(runtime, quiet=True)  # progress and summaries from rank 0 only
        self.model, self.sampler, self.train_data, self.train_eval_data = model, sampler, train_data, train_eval_data
        self.rounds, self.seed = rounds, int(seed)
        self.schedule, self.pruning, self.prac, self.runtime = sched, pruning, prac, runtime
        self.is_prac = is_prac
        self.adaptive = is_prac and sampler.adaptive  # type: ignore[union-attr]
        self.num_samples = n
        if self.adaptive and rounds > 1 and train_eval_data is None:
            _warn_augmented(train_data)
        dev = resolve_device(runtime.device) if runtime.device is not None else next(iter(model.parameters()), torch.empty(0)).device
        model.to(dev)
        self.device = dev
        self.precision = resolve_precision(dev, runtime.precision, runtime.amp)
        self.channels_last = resolve_channels_last(model, runtime.channels_last)
        self.classes = _check_model_output(model, train_data, dev)
        spe_full = sched.steps_per_epoch(n)
        self.rewind_step = _rewind_point(pruning.rewind_to, spe_full, sched.total_steps(n))
        self.rewind_epochs = self.rewind_step / spe_full
        pairs = list(pruning.parameters) if pruning.parameters is not None else prunable_parameters(model)
        if not pairs:
            raise ValueError("parameters is empty: nothing to prune")
        self.parameters = pairs
        self.names = _qualified(model, pairs)
        self.rule = prac.selection or SelectionRule()
        bird = pruning.early_bird
        bird_repr = repr(bird if isinstance(bird, EarlyBird) else EarlyBird()) if bird else None
        config = {
            "rounds": rounds, "amount": float(pruning.amount), "schedule": sched.to_dict(), "rewind_to": self.rewind_step,
            "rewind": pruning.rewind, "num_samples": n, "sampler": type(sampler).__name__, "adaptive": self.adaptive,
            "seed": self.seed, "selection": self.rule.to_dict() if self.adaptive else None,
            "scale_schedule": prac.scale_schedule, "early_bird": bird_repr, "parameters": self.names,
            "classes": self.classes, "precision": self.precision,
            "min_step_fraction": float(prac.min_step_fraction) if self.adaptive else None,
        }
        # what the engine's optimizer factory builds (class and every param-group hyperparameter):
        # an own loop builds its optimizer after begin_round(), so Round.attach checks it instead
        self.optimizer_record: dict[str, Any] | None = None
        if _engine:
            built = sched.make_optimizer([p for p in model.parameters() if p.requires_grad])
            self.optimizer_record = json.loads(json.dumps(describe_optimizer(built)))
            del built
            config["optimizer"] = self.optimizer_record
        else:
            config["loop"] = "own"
        if self.world_size > 1:  # a distributed run resumes with the same number of processes
            config["world_size"] = self.world_size
        self.config = config
        self._fingerprint = json.dumps(config, sort_keys=True)
        self.directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self._writer = self.rank == 0  # only rank 0 writes; every rank reads
        if self.directory is not None and self._writer:
            self.directory.mkdir(parents=True, exist_ok=True)
        resumed = self.directory is not None and (self.directory / "state.pt").is_file()
        self._run = (_load_run(self.directory, self._fingerprint) if self.directory is not None else None) or _Run()
        _check_rounds(self._run, rounds, self.directory)
        trained_schedule = sched.to_dict()
        if not _engine or sched.optimizer is not None:  # the SGD fields never ran: say what did
            for key in ("lr", "momentum", "weight_decay", "nesterov"):
                trained_schedule.pop(key, None)
        self.meta = {
            "method": "prac-imp" if is_prac else "imp", "rewind": pruning.rewind, "rewind_step": self.rewind_step,
            "rewind_epochs": self.rewind_epochs, "amount": float(pruning.amount), "rounds": rounds, "num_samples": n,
            "classes": self.classes, "schedule": trained_schedule, "seed": self.seed,
            "optimizer": self.optimizer_record,  # None for own loops: each round's history entry has it
            "selection": self.rule.to_dict() if self.adaptive else None, **dict(meta or {}),
        }
        self._engine = _engine
        self._open: Round | None = None
        self._used_optimizers: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()
        # ---- restore a saved search
        run = self._run
        adopt = start_from is not None and not run.history
        origin = (run.origin or self._origin()) if adopt else None  # before the restore moves anything
        if run.masks is not None:
            _apply_masks(pairs, self.names, run.masks)
        if run.model is not None:
            rewind_weights(model, run.model) if methods.pruned_parameters(model) else model.load_state_dict(run.model)
        if run.sampler is not None and is_prac:
            sampler.load_state_dict(run.sampler)  # type: ignore[union-attr]
        generator = getattr(sampler, "generator", None)
        if isinstance(generator, torch.Generator) and run.sampler_generator is not None:
            generator.set_state(run.sampler_generator)
        if self.world_size > 1:  # every rank has read the checkpoint before rank 0 writes the next one
            torch.distributed.barrier()
        if adopt:
            self._adopt_round_0(Path(start_from), origin)  # type: ignore[arg-type]
        elif run.origin and run.origin.get("start_from"):
            self.meta["start_from"] = run.origin["start_from"]  # a resumed search that started from another's round 0
        if run.phase == "done" and len(run.history) < self.rounds:
            self._advance()  # more rounds than the finished run had: go on where it stopped
        if run.phase == "done" and self._writer:
            _finish(run, self.meta, self.directory)
        self._open_folder(resumed)  # stale temporary files, metrics.jsonl, the "resuming" line

    # ------------------------------------------------------------------ facts
    @property
    def round(self) -> int:
        """The round that :meth:`begin_round` starts next (or that is open)."""
        return self._run.round

    @property
    def done(self) -> bool:
        """All rounds are trained; :attr:`ticket` is the result."""
        return self._run.phase == "done"

    @property
    def current(self) -> Round | None:
        """The open round, or None."""
        return self._open

    @property
    def history(self) -> list[dict[str, Any]]:
        """One dict per finished round (as ``ticket.history``)."""
        return [dict(h) for h in self._run.history]

    @property
    def ticket(self) -> Ticket:
        """The ticket of the last finished round (the search's result once :attr:`done`)."""
        if not self._run.history:
            raise RuntimeError("no round has finished yet: the search has no ticket")
        return _ticket(self._run.masks, self._run, self.meta)  # type: ignore[arg-type]

    def loader(self, **kwargs: Any) -> DataLoader:
        """A ``DataLoader`` of ``(input, target, index)`` batches over the training set that
        follows the search: the current set, in the sampler's order for the epoch, cut to the
        open round's epoch (the first epoch after a rewind starts mid-epoch, and the round
        may end mid-epoch), with the schedule's batch size. Build it once; every
        ``iter(loader)`` follows the round at that moment. Batches follow the library's rule
        (:mod:`tickets.batching`): a last single sample joins the batch before it, so no
        train-mode batch holds one sample and ``len(loader)`` is the epoch's step count of
        the round's schedule.

        Args:
            kwargs: other ``DataLoader`` arguments (``num_workers``, ``pin_memory``,
                ``persistent_workers``...; with persistent workers the data order is still
                right: the sampler runs in the main process).

        Raises:
            TypeError: ``sampler``, ``batch_sampler``, ``batch_size`` or ``shuffle`` (set by the
                search). ValueError: ``drop_last`` (not supported: see
                :func:`tickets.batching.check_loader_kwargs`).
        """
        kwargs = check_loader_kwargs(kwargs, "search.loader()")
        return DataLoader(IndexedDataset(self.train_data), batch_sampler=_RoundSampler(self), **kwargs)  # type: ignore[arg-type]

    @property
    def _rank_batch(self) -> int:
        """This process's share of the global batch."""
        return self.schedule.batch_size // self.world_size

    # ------------------------------------------------------------------ rounds
    def begin_round(self) -> Round:
        """Start the next round: returns the :class:`Round` to train.

        Raises:
            RuntimeError: the search is done, or a round is still open.
        """
        if self.done:
            raise RuntimeError(f"the search is finished ({self.rounds} rounds): search.ticket holds the result")
        if self._open is not None:
            raise RuntimeError(f"round {self._open.index} is still open: call end_round() before begin_round()")
        run, n, k = self._run, self.num_samples, self._run.round
        if run.phase == "start":
            if self.is_prac:
                self.sampler.begin_round(k)  # type: ignore[union-attr]
            if k == 0:
                run.origin = self._origin()  # what round 0 starts from, for searches that start from it
            run.round_start = snapshot(self.model)
            if k == 0 and self.rewind_step == 0:
                run.rewind_state = run.round_start
            run.masks = _current_masks(self.parameters, self.names) if k > 0 else None
            run.model = _state(self.model)
            run.phase = "train"
            if self.directory is not None:
                run.sets[k] = self.sampler.indices if self.is_prac else torch.arange(n)  # type: ignore[union-attr]
                if self._writer:
                    atomic_save(dict(run.sets), self.directory / "prac_sets.pt", fsync=False)
            if k == 0:
                self._checkpoint()
            # rounds >= 1: the folder already holds this round's start (saved by the previous round's
            # end, or by an extension on resume), and a resume from it redoes exactly this: no rewrite
        # (a round cut short starts again from its start: __init__ loaded the round's starting weights)
        set_size = len(self.sampler)  # type: ignore[arg-type]
        w = self.world_size
        # the batching rule refuses an epoch of one sample (per process), naming the set
        batch_steps(set_size, self.schedule.batch_size, w, what=f"round {k}'s {'PrAC set' if self.is_prac else 'training set'}")
        ratio = set_size / n
        scaled = self.prac.scale_schedule and self.is_prac and ratio < 1.0
        time_ratio, floored = _time_ratio(self.schedule, n, set_size, float(self.prac.min_step_fraction), w) if scaled else (1.0, False)
        round_sched = self.schedule.scaled(time_ratio) if scaled else self.schedule
        spe = round_sched.steps_per_epoch(set_size, w)
        start = 0 if k == 0 else min(int(round(self.rewind_epochs * time_ratio * spe)), round_sched.total_steps(set_size, w) - 1)
        stats_type = _dist.DistributedStats if self.world_size > 1 else SampleStats
        stats = stats_type(n, self._device()) if self.adaptive else None
        self._open = Round(self, k, round_sched, start, set_size, floored, stats)
        return self._open

    def end_round(self, *, val_acc: float | None = None, val_loss: float | None = None,
                  test_acc: float | None = None, test_loss: float | None = None, **metrics: Any) -> dict[str, Any]:
        """Close the open round of your own loop: keep its best-validation weights (if
        ``val_acc`` went to :meth:`Round.end_epoch`), record it, pick the next PrAC set, save
        the round's ticket, prune and rewind for the next round, checkpoint.

        Args:
            val_acc, val_loss: the validation numbers of the weights kept (leave out when
                :meth:`Round.end_epoch` got them: the best epoch's are used).
            test_acc, test_loss: test numbers of the kept weights (measure them after
                :meth:`Round.restore_best`).
            metrics: other JSON-able numbers, stored in the history entry under ``metrics``.

        Returns:
            The round's history entry.

        Raises:
            RuntimeError: no round is open, or it ended before any step.
            ValueError: ``val_acc`` given here and to :meth:`Round.end_epoch`.
        """
        rnd = self._open
        if rnd is None:
            raise RuntimeError("no round is open: call begin_round() first")
        if rnd.steps == 0:
            raise RuntimeError(
                f"round {rnd.index} ended before any step: train it and call rnd.report(indices, logits, targets) "
                f"after every optimizer step before end_round()"
            )
        if val_acc is not None and rnd._best is not None:
            raise ValueError("val_acc was reported to end_epoch(): the best epoch's is used; do not pass it to end_round()")
        kept = rnd.restore_best()
        best = rnd._best if kept is not None else None
        last = rnd.log[-1] if rnd.log else {}
        samples = int(_dist.all_reduce_sum(torch.tensor([float(rnd.samples)], dtype=torch.float64), self._device())[0])
        measured = {
            "steps": rnd.steps, "samples": samples, "start_step": rnd.start_step, "end_step": rnd.step,
            "epochs_trained": round(rnd.steps / rnd.steps_per_epoch, 4),
            "val_acc": best[0] if best else (float(val_acc) if val_acc is not None else last.get("val_acc")),
            "val_loss": best[1] if best else (float(val_loss) if val_loss is not None else last.get("val_loss")),
            "test_acc": float(test_acc) if test_acc is not None else None,
            "test_loss": float(test_loss) if test_loss is not None else None,
            "best_epoch": kept if kept is not None else (last.get("epoch")),
            "train_acc": last.get("train_acc"),
            "early_stopped": rnd.stopped,
            "precision": None, "channels_last": None,
            "wall_time_s": time.perf_counter() - rnd._started,
        }
        if metrics:
            measured["metrics"] = json.loads(json.dumps(metrics, default=float))
        return self._close(rnd, measured)

    def __iter__(self) -> Iterator[Round]:
        """``for rnd in search``: :meth:`begin_round` each round and :meth:`end_round` after
        the loop body (unless the body closed it)."""
        while not self.done:
            rnd = self.begin_round()
            yield rnd
            if self._open is rnd:
                self.end_round()

    def state_dict(self) -> dict[str, Any]:
        """The search's state (what ``checkpoint_dir`` holds), for frameworks that save their own."""
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "fingerprint": self._fingerprint,
                **{k: getattr(self._run, k) for k in self._run.__dataclass_fields__}}

    # ------------------------------------------------------------------ internals
    def _device(self) -> torch.device:
        """The engine's device, or for own loops wherever the model is now."""
        if self._engine:
            return self.device
        return next(iter(self.model.parameters()), torch.empty(0, device=self.device)).device

    def _stepped(self, rnd: Round) -> None:
        if rnd.index == 0 and rnd.step == self.rewind_step:
            self._run.rewind_state = snapshot(self.model)

    def _set_mask(self) -> torch.Tensor:
        member = torch.zeros(self.num_samples, dtype=torch.bool)
        member[self.sampler.indices if self.is_prac else torch.arange(self.num_samples)] = True  # type: ignore[union-attr]
        return member

    def _predict(self, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions on the whole training split; under torch.distributed each rank predicts a
        slice and the slices are gathered, so every rank has them all."""
        kwargs = dict(batch_size=max(256, self.schedule.batch_size), num_workers=self.runtime.num_workers,
                      device=self._device(), precision=self.precision, channels_last=self.channels_last)
        if self.world_size > 1 and isinstance(data, Dataset):
            part, _ = _dist.shard_of(data)
            if len(part):  # type: ignore[arg-type]
                preds, targets = predict(self.model, part, **kwargs)  # type: ignore[arg-type]
            else:
                preds = targets = torch.empty(0, dtype=torch.long)
            total = len(data)  # type: ignore[arg-type]
            return _dist.gather_predictions(preds, total), _dist.gather_predictions(targets, total)
        return predict(self.model, data, **kwargs)  # type: ignore[arg-type]

    def _checkpoint(self, trainer: dict[str, Any] | None = None, *, fsync: bool = True) -> None:
        """Save the run to ``checkpoint_dir/state.pt`` (rank 0; nothing without a folder).

        ``trainer`` is the engine's state at an epoch's end (None at round boundaries). The file
        is flushed to the disk (``fsync``) unless ``fsync=False``: an unflushed rename can leave
        an empty file after a power loss, so the state a resume reads is always flushed (the
        ``checkpoint_every`` default keeps that to round ends and one save per 5 minutes)."""
        run = self._run
        run.trainer = trainer
        self._since_checkpoint = (time.monotonic(), 0)
        if self.directory is None or not self._writer:
            return
        run.sampler = self.sampler.state_dict() if self.is_prac else None  # type: ignore[union-attr]
        generator = getattr(self.sampler, "generator", None)
        run.sampler_generator = generator.get_state() if isinstance(generator, torch.Generator) else None
        metrics = self.directory / METRICS_FILE
        run.metrics_bytes = metrics.stat().st_size if metrics.is_file() else 0
        _save_run(run, self._fingerprint, self.directory, fsync=fsync)
        if trainer is not None and trainer.get("log"):
            self._saved_at = f"round {run.round}, epoch {trainer['log'][-1]['epoch']}"
        else:
            self._saved_at = f"the start of round {run.round}" if run.phase != "done" else "the end of the search"

    def _checkpoint_due(self) -> bool:
        """Whether an epoch's end should save the run (``Runtime.checkpoint_every``); counts the epoch."""
        since, epochs = getattr(self, "_since_checkpoint", (time.monotonic(), 0))
        epochs += 1
        self._since_checkpoint = (since, epochs)
        if self.directory is None:
            return False
        kind, every = parse_checkpoint_every(self.runtime.checkpoint_every)
        if kind == "epochs":
            return epochs >= every
        if kind == "seconds":
            return time.monotonic() - since >= every
        return False

    def _engine_epoch(self, index: int, entry: Mapping[str, Any], trainer: Any, *, force: bool = False) -> bool:
        """The engine's end of an epoch of round ``index``: its ``metrics.jsonl`` line, then a
        checkpoint when one is due (``force``: now, e.g. before a callback stops the run).
        Returns whether the run was saved."""
        if not force:
            self._metrics({"kind": "epoch", "round": index, **entry, "epochs": trainer.schedule.epochs,
                           "steps_trained": trainer.steps_taken, "total_steps": trainer.total_steps})
        due = self._checkpoint_due()
        if (force or due) and self.directory is not None and self._writer:  # (no collective: rank 0 alone)
            self._checkpoint({**trainer.state_dict(), "round_epochs": trainer.schedule.epochs})
            return True
        return False

    def _interrupted_message(self) -> str:
        """The line for a Ctrl-C: where the run is safe and how to resume it."""
        if self.directory is None:
            return "interrupted: nothing was saved (no checkpoint_dir); pass checkpoint_dir= to make a run resumable"
        where = getattr(self, "_saved_at", None)
        if where is None:
            return f"interrupted before the first checkpoint in {str(self.directory)!r}: rerunning the same call starts the run"
        return (f"interrupted: the run in {str(self.directory)!r} is safe at its last checkpoint ({where}); "
                f"rerun the same call with checkpoint_dir={str(self.directory)!r} to resume from there")

    def _metrics(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``checkpoint_dir/metrics.jsonl`` (rank 0; no folder: nothing)."""
        if self.directory is None or not self._writer:
            return
        def plain(value: Any) -> Any:  # numbers a loop reports as tensors or numpy scalars; anything else by repr
            try:
                return float(value)
            except (TypeError, ValueError):
                return repr(value)

        line = json.dumps({**record, "time": round(time.time(), 3)}, default=plain)
        with open(self.directory / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def _note(self, text: str) -> None:
        """A progress line: logged at INFO, and printed to stderr unless quiet (rank 0)."""
        log.info(text)
        if not self.runtime.quiet and self.rank == 0:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)

    def _open_folder(self, resumed: bool) -> None:
        """At the start of a search in ``checkpoint_dir``: remove the temporary files of a killed
        write, cut ``metrics.jsonl`` back to the checkpoint (epochs after it run again), and say
        what the folder held."""
        directory, run = self.directory, self._run
        if directory is None or not self._writer:
            return
        stale = remove_stale_temporaries(directory, lambda name: name in _RUN_FILES or _ROUND_TICKET.match(name) is not None)
        if stale:
            self._note(f"note: removed {len(stale)} temporary file(s) left in {str(directory)!r} by an interrupted "
                       f"write ({', '.join(p.name for p in stale)}; only tickets' own '<file>.<8 characters>.tmp' files)")
        metrics = directory / METRICS_FILE
        if metrics.is_file():
            keep = run.metrics_bytes if resumed and run.metrics_bytes is not None else (None if resumed else 0)
            if keep is not None and metrics.stat().st_size > keep:
                with open(metrics, "r+b") as f:
                    f.truncate(keep)
        if not resumed:
            return
        trained = run.trainer is not None and bool(run.trainer.get("log"))
        self._saved_at = (f"round {run.round}, epoch {run.trainer['log'][-1]['epoch']}" if trained  # type: ignore[index]
                          else "the end of the search" if self.done else f"the start of round {run.round}")
        if self.done:
            self._note(f"{directory} is finished ({len(run.history)} rounds); returning its ticket "
                       f"({directory / 'ticket.ticket'}); use another checkpoint_dir to search again")
        elif trained:
            done, epochs = run.trainer["log"][-1]["epoch"], run.trainer.get("round_epochs")
            self._note(f"resuming {directory} at round {run.round}, epoch {done + 1}"
                       f"{f' of {epochs}' if epochs else ''} (epochs up to {done} are in its checkpoint)")
        else:
            self._note(f"resuming {directory} at the start of round {run.round} of {self.rounds}")

    def _origin(self) -> dict[str, Any]:
        """What round 0 starts from: a digest of the model's weights, the sampler's identity
        (type, seed, shuffling, generator state) and a digest of round 0's set."""
        return {
            "init": _digest(snapshot(self.model)),
            "sampler": _sampler_identity(self.sampler),
            "set": _digest({"set": _first_set(self.sampler, self.num_samples)}),
        }

    def _select_next(self, k: int, stats: SampleStats) -> dict[str, Any]:
        """Pick round ``k + 1``'s PrAC set from round ``k``'s statistics and the predictions of
        the model as it is now (round ``k``'s kept weights); returns the selection's info."""
        run = self._run
        data = self.train_eval_data if self.train_eval_data is not None else self.train_data
        preds, targets = self._predict(data)
        if k == 0:
            run.dense_predictions, run.targets = preds, targets
            disagree = None
        else:
            if run.dense_predictions is None:
                raise RuntimeError(f"round {k}: the dense network's predictions of round 0 are missing from the run")
            disagree = disagreement(run.dense_predictions, preds)
        chosen = select(stats.scores(), disagree=disagree, targets=run.targets, rule=self.rule,
                        current=self.sampler.indices)  # type: ignore[union-attr]
        if chosen.info["fallback"]:
            log.warning("round %d: the PrAC selection was empty; keeping the current set of %d samples", k, len(self.sampler))  # type: ignore[arg-type]
        self.sampler.update(chosen.indices, info=chosen.info)  # type: ignore[union-attr]
        return dict(chosen.info)

    def _prune_and_rewind(self, k: int) -> None:
        """After round ``k``: prune ``amount`` of the survivors, rewind, and make round ``k + 1`` next."""
        run = self._run
        methods.global_magnitude_prune(self.parameters, float(self.pruning.amount))
        if self.pruning.rewind == "weights":
            rewind_weights(self.model, run.rewind_state)  # type: ignore[arg-type]
        else:
            enforce_masks(self.model)
        run.round, run.phase = k + 1, "start"

    def _save_round_0(self, entry: Mapping[str, Any], stats: dict[str, torch.Tensor] | None) -> None:
        """Record the finished round 0 in ``round_0.pt`` (the model is at its kept weights), so
        that another search can start from it (``start_from``)."""
        if self.directory is None or not self._writer:
            return
        run = self._run
        generator = getattr(self.sampler, "generator", None)
        first = run.sets.get(0)
        record = {
            "format": ROUND0_FORMAT, "version": 1, "config": self._fingerprint,
            "entry": json.dumps({key: v for key, v in entry.items() if key != "next_set"}),
            "model": _state(self.model), "rewind_state": run.rewind_state, "stats": stats,
            "set": first if first is not None else torch.arange(self.num_samples),
            "origin": json.dumps(run.origin) if run.origin is not None else None,
            "sampler_generator": generator.get_state() if isinstance(generator, torch.Generator) else None,
        }
        atomic_save(record, self.directory / ROUND0_FILE)

    def _adopt_round_0(self, source: Path, origin: dict[str, Any]) -> None:
        """Take the finished round 0 of the search saved in ``source`` as this search's round 0
        (``start_from``): checked against its settings and origin, then installed as a finished
        round 0 that :meth:`_advance` continues."""
        record = _load_round_0(source)
        diff = _config_diff(json.loads(record["config"]), json.loads(self._fingerprint), ignore=_AFTER_ROUND_0_KEYS)
        if diff:
            raise ValueError(
                f"start_from={str(source)!r}: its round 0 was trained with other settings than this search's "
                f"(differing: {[key for key, _, _ in diff]}: {_describe_diff(diff, before='there')}); a search can "
                f"start from another's round 0 only when round 0 is the same computation (only rounds, amount, "
                f"rewind and the PrAC options may differ)"
            )
        theirs = json.loads(record["origin"]) if record.get("origin") else None
        if theirs is None:
            log.warning("start_from=%r records no origin of its round 0: its initial weights and data order are not checked", str(source))
        else:
            what = {"init": "the model's initial weights", "sampler": "the sampler (type, seed, shuffling, generator "
                    "state: the data order)", "set": "round 0's training set"}
            differing = [what[key] for key in what if theirs.get(key) != origin.get(key)]
            if differing:
                raise ValueError(
                    f"start_from={str(source)!r}: its round 0 started from other {', '.join(differing)} than this "
                    f"search's: pass the same initial model (e.g. copy.deepcopy of one model) and a sampler with "
                    f"the same seed (for full-data IMP, PrACSampler.replay(train_set, [range(len(train_set))], seed=...) "
                    f"draws the same order as a PrACSampler)"
                )
        if self.adaptive and record.get("stats") is None:
            raise ValueError(
                f"start_from={str(source)!r}: that search recorded no per-sample statistics in round 0 (full-data "
                f"IMP or a replayed sampler), and a PrAC search needs them to pick its first PrAC set. Run the PrAC "
                f"search first and start the full-data search from its checkpoint_dir: round 0 is the same "
                f"computation in both"
            )
        run, n = self._run, self.num_samples
        entry = {key: v for key, v in json.loads(record["entry"]).items() if not key.startswith("stats_") and key != "next_set"}
        run.stats = None
        if self.adaptive:
            stats = SampleStats(n)
            stats.load_state_dict(record["stats"])
            entry.update({f"stats_{key}": v for key, v in stats.summary().items()})
            run.stats = record["stats"]
        self.model.load_state_dict(record["model"])
        run.history = [entry]
        run.rewind_state = record["rewind_state"]
        run.round_start, run.trainer, run.dense_predictions, run.targets = None, None, None, None
        run.origin = {**origin, "start_from": str(source)}  # kept in the run: meta says so after a resume too
        run.masks = _current_masks(self.parameters, self.names)
        run.model = _state(self.model)
        run.round, run.phase = 0, "done"
        if self.is_prac:
            self.sampler.begin_round(0)  # type: ignore[union-attr]
        generator = getattr(self.sampler, "generator", None)
        if isinstance(generator, torch.Generator) and record.get("sampler_generator") is not None:
            generator.set_state(record["sampler_generator"])  # the data order goes on as after their round 0
        self.meta["start_from"] = str(source)
        if self.directory is not None:
            run.sets = {0: torch.as_tensor(record["set"]).long()}
            if self._writer:
                atomic_save(dict(run.sets), self.directory / "prac_sets.pt")
                if self.runtime.keep_round_tickets:
                    _ticket(run.masks, run, self.meta).save(self.directory / "round_0.ticket")
            self._save_round_0(entry, run.stats)
        self._checkpoint()
        message = f"round 0 taken from {str(source)!r} (finished there, not trained again)"
        self._note(message)  # stderr, with the other progress lines

    def _advance(self) -> None:
        """Continue a finished search with more rounds: what its last round skipped because it
        was the last (pick the next PrAC set, prune, rewind), exactly as a run with that many
        rounds from the start would have done; its round ticket is rewritten (its history entry
        gains ``next_set``) and the stale final ticket removed."""
        run = self._run
        k = run.history[-1]["round"]
        started = time.perf_counter()
        if self.adaptive:
            if run.stats is None:
                raise ValueError(
                    f"the finished search in {str(self.directory)!r} kept no per-sample statistics of its last round "
                    f"(it was saved by an older torch-tickets), so its PrAC set for round {k + 1} cannot be picked: run "
                    f"rounds={self.rounds} in another checkpoint_dir (or start_from={str(self.directory)!r} there)"
                )
            stats = SampleStats(self.num_samples)
            stats.load_state_dict(run.stats)
            run.history[-1]["next_set"] = self._select_next(k, stats)
        if self.directory is not None and self._writer:
            if self.runtime.keep_round_tickets:  # its history entry now has next_set, as in a longer run
                _ticket(_current_masks(self.parameters, self.names), run, self.meta).save(self.directory / f"round_{k}.ticket")
            (self.directory / "ticket.ticket").unlink(missing_ok=True)  # no longer the final ticket
        self._prune_and_rewind(k)
        run.stats = None
        run.masks = _current_masks(self.parameters, self.names)
        run.model = _state(self.model)
        run.extra_wall = time.perf_counter() - started  # counted in the next round's wall time
        self._checkpoint()
        message = f"search extended to {self.rounds} rounds: round {k + 1} is next"
        self._note(message)  # stderr, with the other progress lines

    def _close(self, rnd: Round, measured: Mapping[str, Any]) -> dict[str, Any]:
        """Everything after a round's training, for the engine and own loops alike."""
        after_started = time.perf_counter()
        run, n, k = self._run, self.num_samples, rnd.index
        round_masks = _current_masks(self.parameters, self.names)
        entry: dict[str, Any] = {
            "round": k,
            "sparsity": _sparsity(round_masks),
            "set_size": rnd.set_size,
            "set_fraction": rnd.fraction,
            "epochs": rnd.schedule.epochs,
            **{key: v for key, v in measured.items() if key != "wall_time_s"},
        }
        trained_with = rnd._optimizer_record or self.optimizer_record  # own loop: the attached optimizer
        if trained_with is not None:
            entry["optimizer"] = trained_with
        if rnd.floored:
            entry["step_floor"] = float(self.prac.min_step_fraction)
        if self.adaptive and rnd.stats is not None:
            entry.update({f"stats_{key}": v for key, v in rnd.stats.summary().items()})
            if k + 1 < self.rounds:
                entry["next_set"] = self._select_next(k, rnd.stats)
        prev = run.history[-1] if run.history else {"total_steps": 0, "total_samples": 0, "total_wall_time_s": 0.0}
        entry["wall_time_s"] = round(float(measured["wall_time_s"]) + (time.perf_counter() - after_started) + run.extra_wall, 3)
        entry["total_steps"] = prev["total_steps"] + entry["steps"]
        entry["total_samples"] = prev["total_samples"] + entry["samples"]
        entry["total_wall_time_s"] = round(prev["total_wall_time_s"] + entry["wall_time_s"], 3)
        run.history.append(entry)
        if self.directory is not None and self._writer and self.runtime.keep_round_tickets:
            _ticket(round_masks, run, self.meta).save(self.directory / f"round_{k}.ticket")
        keep_stats = rnd.stats.state_dict() if self.adaptive and rnd.stats is not None else None
        if k == 0:
            self._save_round_0(entry, keep_stats)
        run.extra_wall = 0.0
        if k + 1 < self.rounds:
            pruning_started = time.perf_counter()
            self._prune_and_rewind(k)
            run.stats = None
            run.extra_wall = time.perf_counter() - pruning_started  # counted in the next round's wall time
        else:
            run.phase = "done"
            run.stats = keep_stats  # a later run with more rounds picks the next set from them
        run.masks = _current_masks(self.parameters, self.names)
        run.model = _state(self.model)
        if self.world_size > 1:  # one all-reduce: the ranks agree on everything the next round starts from
            _dist.check_identical({
                "masks": _dist.mask_checksum(run.masks),
                "PrAC set": float(_dist.mask_checksum({"set": self._set_mask()})),
                "schedule position": float(entry["end_step"]),
                "steps": float(entry["steps"]),
                "weights": _dist._weight_checksum(self.model),
            }, self._device(), where=f"after round {k}")
        self._metrics({"kind": "round", **entry})  # before the checkpoint, which records the file's length
        self._checkpoint()
        if run.phase == "done" and self._writer:
            _finish(run, self.meta, self.directory)  # the final ticket exists before callbacks run
        rnd.closed = True
        self._open = None
        opt = rnd._optimizer() if rnd._optimizer is not None else None
        if opt is not None:
            self._used_optimizers.add(opt)
        self._note(_summary(entry, n))
        return entry

    def __repr__(self) -> str:
        state = "done" if self.done else f"round {self.round} of {self.rounds}"
        return f"TicketSearch({type(self.model).__name__}, {type(self.sampler).__name__}, {state})"


def _finish(run: _Run, base_meta: Mapping[str, Any], directory: Path | None) -> Ticket:
    """The final ticket, saved as ``ticket.ticket`` in ``directory`` if not there yet."""
    ticket = _ticket(run.masks, run, base_meta)  # type: ignore[arg-type]
    if directory is not None and not (directory / "ticket.ticket").is_file():
        ticket.save(directory / "ticket.ticket")
    return ticket


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _summary(entry: Mapping[str, Any], n: int) -> str:
    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    return (
        f"round {entry['round']}: sparsity {pct(entry['sparsity'])}, set {entry['set_size']:,}/{n:,} "
        f"({pct(entry['set_fraction'])}), {entry['epochs']} epochs, {entry['steps']:,} steps trained "
        f"(schedule step {entry['start_step']:,} to {entry['end_step']:,}; search total {entry['total_steps']:,}), "
        f"val {pct(entry['val_acc'])}, test {pct(entry['test_acc'])}, "
        f"{entry['wall_time_s']:.1f}s"
    )


def _ticket(found: dict[str, torch.Tensor], run: _Run, base_meta: Mapping[str, Any]) -> Ticket:
    """The ticket of the last finished round: its masks, the weights it started from
    (round 0: the rewind point), the history so far."""
    k = run.history[-1]["round"]
    start = run.rewind_state if k == 0 else run.round_start
    state = None
    if start is not None:
        state = {key: (v * found[key].to(v.dtype) if key in found else v) for key, v in start.items()}
    return Ticket(dict(found), state, list(run.history), {**base_meta, "round": k})


