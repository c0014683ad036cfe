"""Iterative magnitude pruning with rewinding, on the full data or on PrAC sets.

:func:`prune` is one loop for both sides of the PrAC paper's comparison:

* with a :class:`tickets.PrACSampler`, each round trains on the current PrAC set with the
  schedule scaled by ``r = |PrAC| / N``, records per-sample forgetting statistics in the
  training step, and picks the next set (hard to memorize ∪ dense/pruned disagreement);
* with a plain sampler over the training set (``RandomSampler(train_set)``) it is vanilla
  IMP on the full data, through the same code.

A round ``k`` trains the network at sparsity ``1 - (1 - amount) ** k``; round 0 trains the
dense network on the full data and provides the rewind point. Between rounds the surviving
weights are pruned by global magnitude (best-validation weights, or the early-bird stop's)
and rewound (weights and schedule, or only the learning-rate schedule).

Every round's accounting is in ``ticket.history``; :func:`iteration_savings` compares two
runs. :func:`retrain` measures a ticket on the full data. With ``checkpoint_dir`` the run
is saved after every epoch and round and rerunning the same call resumes it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from tickets import methods
from tickets.rewind import enforce_masks, rewind as rewind_weights, snapshot
from tickets.sampler import PrACSampler, dataset_of, targets_of
from tickets.selection import prunable_parameters
from tickets.stats import SampleStats, SelectionRule, disagreement, predict, select
from tickets.ticket import Ticket, atomic_save
from tickets.training import (
    LossFn, Schedule, Trainer, TrainResult, interactive, make_schedule, parse_step, resolve_channels_last, resolve_precision, train,
)

__all__ = ["prune", "retrain", "EarlyBird", "iteration_savings", "Savings", "load_prac_sets", "RunInterrupted"]

log = logging.getLogger("tickets")

STATE_FORMAT = "torch-tickets/imp-run"
STATE_VERSION = 1


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


# ---------------------------------------------------------------------- accounting
@dataclass(frozen=True)
class Savings:
    """Training iterations saved by PrAC IMP against full-data IMP (same rounds).

    Attributes:
        rows: per round: ``round``, ``steps_prac``, ``steps_full``, cumulative
            ``cum_prac``/``cum_full`` (rounds 0..k, round 0 included in both) and ``saved``
            = ``1 - cum_prac / cum_full``.
        total_prac, total_full: optimizer steps of the two searches.
        saved: ``1 - total_prac / total_full``.
        retrain_steps: steps spent retraining tickets only to measure them (excluded from
            both totals; reported on its own), or None.
    """

    rows: tuple[dict[str, Any], ...]
    total_prac: int
    total_full: int
    saved: float
    retrain_steps: int | None = None

    def __str__(self) -> str:
        lines = [f"{'round':>5}  {'steps PrAC':>10}  {'steps full':>10}  {'saved (cum.)':>12}"]
        for r in self.rows:
            lines.append(f"{r['round']:>5}  {r['steps_prac']:>10,}  {r['steps_full']:>10,}  {r['saved']:>12.1%}")
        lines.append(f"total: PrAC {self.total_prac:,} vs full {self.total_full:,} steps: {self.saved:.1%} saved")
        if self.retrain_steps is not None:
            lines.append(f"retraining to measure tickets (excluded): {self.retrain_steps:,} steps")
        return "\n".join(lines)


def _history(value: Ticket | Sequence[Mapping[str, Any]], argument: str) -> list[Mapping[str, Any]]:
    history = value.history if isinstance(value, Ticket) else list(value)
    if not history or any("steps" not in h for h in history):
        raise ValueError(f"{argument} must be a Ticket from tickets.prune or its history (one dict with 'steps' per round)")
    return history


def iteration_savings(
    prac: Ticket | Sequence[Mapping[str, Any]],
    full: Ticket | Sequence[Mapping[str, Any]],
    *,
    retrain_steps: int | None = None,
) -> Savings:
    """Savings = ``1 - steps(PrAC IMP) / steps(full-data IMP)`` over the same rounds.

    Round 0 (dense training on the full data) counts in both; retraining used only to
    measure a ticket is excluded from both and echoed as ``retrain_steps``.

    Args:
        prac: the PrAC IMP ticket (or its ``history``).
        full: the full-data IMP ticket (or its ``history``).
        retrain_steps: optional steps of measurement retraining, reported separately.

    Raises:
        ValueError: histories of different lengths (compare the same number of rounds).
    """
    hp, hf = _history(prac, "prac"), _history(full, "full")
    if len(hp) != len(hf):
        raise ValueError(f"the two runs have {len(hp)} and {len(hf)} rounds; compare the same number of rounds")
    rows, cum_p, cum_f = [], 0, 0
    for p, f in zip(hp, hf):
        cum_p += int(p["steps"])
        cum_f += int(f["steps"])
        rows.append({
            "round": int(p.get("round", len(rows))),
            "steps_prac": int(p["steps"]),
            "steps_full": int(f["steps"]),
            "cum_prac": cum_p,
            "cum_full": cum_f,
            "saved": 1.0 - cum_p / cum_f if cum_f else 0.0,
        })
    return Savings(tuple(rows), cum_p, cum_f, 1.0 - cum_p / cum_f if cum_f else 0.0, retrain_steps)


# ---------------------------------------------------------------------- checks
def _is_label(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, torch.Tensor) and value.dim() == 0 and not value.dtype.is_floating_point


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


def _time_ratio(sched: Schedule, n: int, set_size: int, min_step_fraction: float) -> tuple[float, bool]:
    """The schedule ratio of a PrAC round on ``set_size`` of ``n`` samples, and whether the
    small-set floor raised it.

    The paper's reduced schedule runs ``int(E * r)`` epochs of ``r * N`` samples (about
    ``r**2`` of a full round's steps). The floor raises the epochs (never above ``E``) so
    that the round takes at least ``min_step_fraction`` of a full round's steps.
    """
    ratio = set_size / n
    plain = max(1, int(sched.epochs * ratio + 1e-9))
    needed = math.ceil(min_step_fraction * sched.total_steps(n) / sched.steps_per_epoch(set_size) - 1e-9)
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


def _save_run(run: _Run, fingerprint: str, directory: Path) -> None:
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, "fingerprint": fingerprint,
               **{k: getattr(run, k) for k in run.__dataclass_fields__}}
    payload["history"] = json.dumps(run.history)
    atomic_save(payload, directory / "state.pt")


def _load_run(directory: Path, fingerprint: str) -> _Run | None:
    path = directory / "state.pt"
    if not path.is_file():
        return None
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)  # tensors and plain data only
    except Exception as e:
        raise ValueError(f"{str(path)!r} is not a readable checkpoint of tickets.prune: {e}") from None
    if payload.get("format") != STATE_FORMAT or payload.get("version") != STATE_VERSION:
        raise ValueError(f"{str(path)!r} is not a checkpoint of this version of tickets.prune")
    if payload["fingerprint"] != fingerprint:
        saved, now = json.loads(payload["fingerprint"]), json.loads(fingerprint)
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        raise ValueError(
            f"checkpoint_dir {str(directory)!r} holds a run with other settings (differing: {diff}); "
            f"rerun with the same arguments to resume, or use another checkpoint_dir"
        )
    payload["history"] = json.loads(payload["history"])
    return _Run(**{k: payload[k] for k in _Run.__dataclass_fields__})


def _apply_masks(parameters: list[tuple[nn.Module, str]], names: list[str], found: Mapping[str, torch.Tensor]) -> None:
    for (module, name), q in zip(parameters, names):
        mask = found[q]
        if methods.is_pruned_tensor(module, name):
            if not torch.equal(methods._current_mask(module, name).bool().cpu(), mask):
                raise ValueError(f"{q!r} of the model is already pruned with another mask: pass a fresh model to resume")
        else:
            methods.FixedMask.apply(module, name, mask)


def prune(
    model: nn.Module,
    sampler: Sampler[int] | Dataset | None = None,
    *,
    rounds: int,
    amount: float = 0.2,
    epochs: int | None = None,
    schedule: Schedule | Mapping[str, Any] | None = None,
    optimizer: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
    lr_schedule: Mapping[str, Any] | str | Callable[[float], float] | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    rewind_to: int | str = 0,
    rewind: Literal["weights", "lr"] = "weights",
    train_data: Dataset | None = None,
    train_eval_data: Dataset | DataLoader | None = None,
    eval_data: Any = None,
    test_data: Any = None,
    device: torch.device | str | None = None,
    checkpoint_dir: str | Path | None = None,
    parameters: Sequence[tuple[nn.Module, str]] | None = None,
    selection: SelectionRule | None = None,
    scale_schedule: bool = True,
    min_step_fraction: float = 0.1,
    early_bird: bool | EarlyBird = False,
    num_workers: int = 0,
    loader_kwargs: Mapping[str, Any] | None = None,
    amp: bool | None = None,
    channels_last: bool | None = None,
    loss_fn: LossFn | None = None,
    quiet: bool = False,
    precision: str | None = None,
    compile: bool = False,
    seed: int = 0,
    meta: Mapping[str, Any] | None = None,
    on_epoch: Callable[[int, dict[str, Any]], Any] | None = None,
    on_round: Callable[[dict[str, Any]], Any] | None = None,
) -> Ticket:
    """Find a lottery ticket of ``model`` by IMP, on PrAC sets or on the full data.

    Round 0 trains the dense network (on all samples) and keeps the rewind point; every later
    round prunes ``amount`` of the surviving weights by global magnitude, rewinds, and
    trains again. With a :class:`tickets.PrACSampler` each round trains on the current PrAC
    set with the schedule scaled by ``r = |PrAC| / N`` (``int(epochs * r)`` epochs,
    milestones, warm-up and the rewind point times ``r``) and the set is rebuilt after the
    round; with any other sampler over the training set (``RandomSampler(train_set)``) the
    same loop is vanilla IMP on the full data.

    Example::

        ticket = tickets.prune(model, PrACSampler(train_set), rounds=5, epochs=30, lr=0.1,
                               lr_schedule=dict(milestones=[15, 25]), rewind_to="3ep",
                               eval_data=val_set, test_data=test_set, checkpoint_dir="runs/r18")
        ticket.history[-1]["test_acc"], ticket.sparsity

    Args:
        model: the dense, untrained model (any classifier: timm, torchvision, your own); it is
            pruned and trained in place and ends as the last round's trained, pruned model.
        sampler: a :class:`PrACSampler` (PrAC IMP) or any sampler with a ``data_source``
            (vanilla IMP); a ``Dataset`` means ``PrACSampler(dataset, seed=seed)``.
        rounds: trainings in all, round 0 included (>= 1); the last trains at sparsity
            ``1 - (1 - amount) ** (rounds - 1)``.
        amount: fraction of the surviving weights pruned after each round (0.2 = 20%).
        epochs: epochs of a full round (sets ``schedule.epochs``).
        schedule: a :class:`tickets.training.Schedule` or a mapping of its fields; ``epochs``,
            ``optimizer``, ``lr_schedule``, ``batch_size`` and ``lr`` override its fields.
        optimizer: ``params -> Optimizer`` factory (a fresh optimizer every round); default
            SGD from the schedule (lr 0.1, momentum 0.9, weight decay 1e-4).
        lr_schedule: ``dict(milestones=[...], gamma=0.1, warmup_epochs=0)``, ``"cosine"``,
            ``"constant"`` or ``progress -> factor`` (see :func:`tickets.training.make_schedule`).
        batch_size, lr: schedule fields.
        rewind_to: the rewind point in round 0: ``0``/``"init"`` (the original LTH), an
            optimizer step (``500``, ``"500it"``) or epochs (``"3ep"``, late rewinding).
        rewind: ``"weights"`` resets the surviving weights (and normalization statistics) to
            the rewind point and the schedule to that step; ``"lr"`` (learning-rate rewinding)
            keeps the trained weights and only restarts the schedule at ``rewind_to``.
        train_data: the training set; default the sampler's ``data_source``. Given both, they
            must be the same object.
        train_eval_data: the training split *without augmentation*, same order, for the
            dense/pruned disagreement (default ``train_data`` as it is).
        eval_data: validation data: each round keeps its best-validation weights (used for
            pruning, disagreement and the ticket) and reports ``val_acc``.
        test_data: test data, measured once per round with the kept weights (``test_acc``).
        device: where to train; None = the model's device.
        checkpoint_dir: folder for resumable checkpoints (after each epoch and round),
            ``round_<k>.ticket``, ``prac_sets.pt`` and the final ``ticket.ticket``; rerunning
            the same call resumes (a finished run returns its ticket at once).
        parameters: ``(module, name)`` pairs to prune; default
            :func:`tickets.prunable_parameters` (conv and linear, classifier and stem dense).
        selection: how PrAC sets are chosen (:class:`tickets.stats.SelectionRule`).
        scale_schedule: scale the schedule by ``r`` on PrAC sets (the paper); False trains
            every round for the full number of epochs. Only a :class:`PrACSampler` scales:
            another sampler (even over a subset) always gets the full schedule.
        min_step_fraction: the small-set safeguard: a PrAC round trains at least this
            fraction of a full round's optimizer steps (default 0.1). A set of ``r`` of the
            data gets about ``r**2`` of the steps; below ``sqrt(min_step_fraction)`` (32% for
            0.1) the round's epochs are raised so that it still trains enough for its mask to
            mean something (the history marks it ``step_floor``). 0 disables it.
        early_bird: True or an :class:`EarlyBird` to stop rounds >= 1 early when the mask
            stops moving (with any sampler; round 0 always runs to the end).
        num_workers, loader_kwargs: DataLoader options (workers, ``persistent_workers``...).
        precision: ``"auto"`` (default: bf16 autocast where the CPU or GPU has native bf16, fp16
            on older GPUs, fp32 otherwise), ``"bf16"``, ``"fp16"`` or ``"fp32"``; see
            :func:`tickets.training.resolve_precision`. The history records what ran.
        amp: the older switch (True = mixed precision, False = fp32); ``precision`` wins.
        channels_last: memory format; None = the rule of
            :func:`tickets.training.resolve_channels_last` (convolutional models yes).
        compile: ``torch.compile`` the training forward (see :func:`tickets.training.train`).
        loss_fn: ``(logits, targets) -> loss``; default cross-entropy.
        quiet: no progress bars and no per-round summary lines.
        seed: seed of data order and augmentation (model initialization is the caller's).
        meta: extra JSON-able facts stored in the ticket's ``meta``.
        on_epoch: ``fn(round, epoch_entry)`` after each epoch's checkpoint.
        on_round: ``fn(history_entry)`` after each round's checkpoint.

    Returns:
        The :class:`Ticket` of the last round: its masks, the rewind state, ``history`` (one
        dict per round: ``round``, ``sparsity``, ``set_size``, ``set_fraction``, ``epochs``,
        ``steps``, ``samples``, ``val_acc``, ``test_acc``, ``wall_time_s``, cumulative
        ``total_steps``/``total_samples``/``total_wall_time_s``, selection counts) and
        ``meta`` (``rewind_epochs``, the schedule, ...), ready for :func:`retrain`.

    Raises:
        ValueError / TypeError, before any training: ``rounds < 1``, a bad ``amount``, a data
        set without labels, a sampler over another data set, a model whose output does not
        match the labels, a rewind point after round 0, a ``checkpoint_dir`` of another run.
    """
    # ------------------------------------------------------------------ checks
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise ValueError(f"rounds must be an int >= 1 (round 0 is the dense training); got {rounds!r}")
    if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0.0 < float(amount) < 1.0:
        raise ValueError(f"amount must be a fraction of the surviving weights in (0, 1), e.g. 0.2; got {amount!r}")
    if isinstance(min_step_fraction, bool) or not isinstance(min_step_fraction, (int, float)) or not 0.0 <= min_step_fraction <= 1.0:
        raise ValueError(f"min_step_fraction must be a fraction of a full round's steps in [0, 1], e.g. 0.1; got {min_step_fraction!r}")
    if rewind not in ("weights", "lr"):
        raise ValueError(f"rewind must be 'weights' (rewind weights and schedule) or 'lr' (schedule only); got {rewind!r}")
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
    _check_labelled(eval_data, "eval_data")
    _check_labelled(test_data, "test_data")
    _check_labelled(train_eval_data, "train_eval_data")
    n = len(train_data)  # type: ignore[arg-type]
    if isinstance(train_eval_data, Dataset) and len(train_eval_data) != n:  # type: ignore[arg-type]
        raise ValueError(f"train_eval_data has {len(train_eval_data):,} samples; train_data has {n:,}: they must be the same split")  # type: ignore[arg-type]
    is_prac = isinstance(sampler, PrACSampler)
    if is_prac and sampler.num_samples != n:  # type: ignore[union-attr]
        raise ValueError(f"the PrACSampler covers {sampler.num_samples:,} samples but train_data has {n:,}")  # type: ignore[union-attr]
    adaptive = is_prac and sampler.adaptive  # type: ignore[union-attr]
    sched = make_schedule(schedule, epochs=epochs, optimizer=optimizer, lr_schedule=lr_schedule, batch_size=batch_size, lr=lr)
    dev = torch.device(device) if device is not None else next(iter(model.parameters()), torch.empty(0)).device
    model.to(dev)
    prec = resolve_precision(dev, precision, amp)
    memory_cl = resolve_channels_last(model, channels_last)
    classes = _check_model_output(model, train_data, dev)
    spe_full = sched.steps_per_epoch(n)
    rewind_step = _rewind_point(rewind_to, spe_full, sched.total_steps(n))
    rewind_epochs = rewind_step / spe_full
    pairs = list(parameters) if parameters is not None else prunable_parameters(model)
    if not pairs:
        raise ValueError("parameters is empty: nothing to prune")
    names = _qualified(model, pairs)
    rule = selection or SelectionRule()
    bird = None
    if early_bird:
        bird = early_bird if isinstance(early_bird, EarlyBird) else EarlyBird()
    config = {
        "rounds": rounds, "amount": float(amount), "schedule": sched.to_dict(), "rewind_to": rewind_step,
        "rewind": rewind, "num_samples": n, "sampler": type(sampler).__name__, "adaptive": adaptive,
        "seed": int(seed), "selection": rule.to_dict() if adaptive else None, "scale_schedule": scale_schedule,
        "early_bird": repr(bird) if bird else None, "parameters": names, "classes": classes,
        "precision": prec, "min_step_fraction": float(min_step_fraction) if adaptive else None,
    }
    fingerprint = json.dumps(config, sort_keys=True)
    directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
    if directory is not None:
        directory.mkdir(parents=True, exist_ok=True)
    run = (_load_run(directory, fingerprint) if directory is not None else None) or _Run()
    base_meta = {
        "method": "prac-imp" if is_prac else "imp", "rewind": rewind, "rewind_step": rewind_step,
        "rewind_epochs": rewind_epochs, "amount": float(amount), "rounds": rounds, "num_samples": n,
        "classes": classes, "schedule": sched.to_dict(), "seed": int(seed),
        "selection": rule.to_dict() if adaptive else None, **dict(meta or {}),
    }

    # ------------------------------------------------------------------ restore
    if run.masks is not None:
        _apply_masks(pairs, names, run.masks)
    if run.model is not None:
        rewind_weights(model, run.model) if methods.pruned_parameters(model) else model.load_state_dict(run.model)
    if run.sampler is not None and is_prac:
        sampler.load_state_dict(run.sampler)  # type: ignore[union-attr]
    generator = getattr(sampler, "generator", None)
    if isinstance(generator, torch.Generator) and run.sampler_generator is not None:
        generator.set_state(run.sampler_generator)
    if run.phase == "done":
        return _finish(run, base_meta, directory)

    from tqdm.auto import tqdm

    bar = tqdm(total=rounds, initial=run.round, desc="rounds", unit="round", disable=quiet or not interactive(), dynamic_ncols=True)

    def checkpoint() -> None:
        if directory is None:
            return
        run.sampler = sampler.state_dict() if is_prac else None  # type: ignore[union-attr]
        run.sampler_generator = generator.get_state() if isinstance(generator, torch.Generator) else None
        _save_run(run, fingerprint, directory)

    try:
        while run.phase != "done":
            k = run.round
            if run.phase == "start":
                if is_prac:
                    sampler.begin_round(k)  # type: ignore[union-attr]
                run.round_start = snapshot(model)
                if k == 0 and rewind_step == 0:
                    run.rewind_state = run.round_start
                run.masks = _current_masks(pairs, names) if k > 0 else None
                run.model = _state(model)
                run.phase = "train"
                if directory is not None:
                    run.sets[k] = sampler.indices if is_prac else torch.arange(n)  # type: ignore[union-attr]
                    atomic_save(dict(run.sets), directory / "prac_sets.pt")
                checkpoint()
            set_size = len(sampler)  # type: ignore[arg-type]
            ratio = set_size / n
            scaled = scale_schedule and is_prac and ratio < 1.0
            time_ratio, floored = _time_ratio(sched, n, set_size, float(min_step_fraction)) if scaled else (1.0, False)
            round_sched = sched.scaled(time_ratio) if scaled else sched
            spe = round_sched.steps_per_epoch(set_size)
            start = 0 if k == 0 else min(int(round(rewind_epochs * time_ratio * spe)),
                                         round_sched.total_steps(set_size) - 1)
            stats = SampleStats(n, dev) if adaptive else None

            def capture(step: int, m: nn.Module, k: int = k) -> None:
                if k == 0 and step == rewind_step:
                    run.rewind_state = snapshot(m)

            def after_epoch(trainer: Trainer, entry: dict[str, Any], k: int = k) -> None:
                run.trainer = trainer.state_dict()
                checkpoint()
                if on_epoch is not None:
                    on_epoch(k, entry)

            trainer = Trainer(
                model, train_data, round_sched, seed=seed, start_step=start, device=dev, eval_data=eval_data,
                test_data=test_data, sampler=sampler, stats=stats, num_workers=num_workers,
                loader_kwargs=loader_kwargs, precision=prec, channels_last=memory_cl, loss_fn=loss_fn, compile=compile,
                quiet=quiet, desc=f"round {k}", round_index=k, on_step=capture, on_epoch=after_epoch,
                early_stop=bird.bind(pairs, float(amount)) if bird is not None and k > 0 else None,
            )
            if run.trainer is not None:
                trainer.load_state_dict(run.trainer)
            result = trainer.finish() if trainer.finished else trainer.run()
            after_started = time.perf_counter()
            round_masks = _current_masks(pairs, names)
            entry: dict[str, Any] = {
                "round": k,
                "sparsity": _sparsity(round_masks),
                "set_size": set_size,
                "set_fraction": ratio,
                "epochs": round_sched.epochs,
                "epochs_trained": result.epochs_trained,
                "start_step": result.start_step,
                "end_step": result.end_step,
                "steps": result.steps,
                "samples": result.samples,
                "val_acc": result.val_acc,
                "val_loss": result.val_loss,
                "test_acc": result.test_acc,
                "test_loss": result.test_loss,
                "best_epoch": result.best_epoch,
                "train_acc": result.train_acc,
                "early_stopped": result.early_stopped,
                "precision": result.precision,
                "channels_last": result.channels_last,
            }
            if floored:
                entry["step_floor"] = float(min_step_fraction)
            # ---- the next PrAC set (not needed after the last round)
            if adaptive and stats is not None:
                entry.update({f"stats_{key}": v for key, v in stats.summary().items()})
                if k + 1 < rounds:
                    data_for_eval = train_eval_data if train_eval_data is not None else train_data
                    preds, targets = predict(model, data_for_eval, batch_size=trainer.eval_batch_size,
                                             num_workers=num_workers, device=dev, precision=prec, channels_last=memory_cl)
                    if k == 0:
                        run.dense_predictions, run.targets = preds, targets
                        disagree = None
                    else:
                        disagree = disagreement(run.dense_predictions, preds)  # type: ignore[arg-type]
                    chosen = select(stats.scores(), disagree=disagree, targets=run.targets, rule=rule,
                                    current=sampler.indices)  # type: ignore[union-attr]
                    if chosen.info["fallback"]:
                        log.warning("round %d: the PrAC selection was empty; keeping the current set of %d samples", k, set_size)
                    sampler.update(chosen.indices, info=chosen.info)  # type: ignore[union-attr]
                    entry["next_set"] = {key: v for key, v in chosen.info.items()}
            prev = run.history[-1] if run.history else {"total_steps": 0, "total_samples": 0, "total_wall_time_s": 0.0}
            entry["wall_time_s"] = round(result.wall_time_s + (time.perf_counter() - after_started) + run.extra_wall, 3)
            entry["total_steps"] = prev["total_steps"] + entry["steps"]
            entry["total_samples"] = prev["total_samples"] + entry["samples"]
            entry["total_wall_time_s"] = round(prev["total_wall_time_s"] + entry["wall_time_s"], 3)
            run.history.append(entry)
            # ---- the round's ticket
            ticket_k = _ticket(round_masks, run, base_meta)
            if directory is not None:
                ticket_k.save(directory / f"round_{k}.ticket")
            # ---- prune and rewind for the next round
            run.trainer, run.extra_wall = None, 0.0
            if k + 1 < rounds:
                pruning_started = time.perf_counter()
                methods.global_magnitude_prune(pairs, float(amount))
                if rewind == "weights":
                    rewind_weights(model, run.rewind_state)  # type: ignore[arg-type]
                else:
                    enforce_masks(model)
                run.round, run.phase = k + 1, "start"
                run.extra_wall = time.perf_counter() - pruning_started  # counted in the next round's wall time
            else:
                run.phase = "done"
            run.masks = _current_masks(pairs, names)
            run.model = _state(model)
            checkpoint()
            if run.phase == "done":
                _finish(run, base_meta, directory)  # the final ticket exists before on_round runs
            if not quiet:
                tqdm.write(_summary(entry, n))
            log.info(_summary(entry, n))
            bar.update(1)
            if on_round is not None:
                on_round(entry)
    finally:
        bar.close()
    return _ticket(run.masks, run, base_meta)  # type: ignore[arg-type]


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
        f"({pct(entry['set_fraction'])}), {entry['epochs']} epochs, {entry['steps']:,} steps "
        f"(total {entry['total_steps']:,}), val {pct(entry['val_acc'])}, test {pct(entry['test_acc'])}, "
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


# ---------------------------------------------------------------------- retraining
def retrain(
    ticket: Ticket,
    model: nn.Module | Callable[[], nn.Module],
    train_data: Dataset | DataLoader,
    schedule: Schedule | Mapping[str, Any] | None = None,
    *,
    start: int | str | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    eval_data: Any = None,
    test_data: Any = None,
    quiet: bool = True,
    **train_kwargs: Any,
) -> TrainResult:
    """Measure a ticket: train it on the full data from its rewind state.

    Applies ``ticket`` to ``model`` (a fresh, unpruned model of the ticket's architecture, or
    a function making one) and trains it on all of ``train_data`` with the full schedule from
    the ticket's rewind point (``ticket.meta["rewind_epochs"]``, in epochs of the full
    schedule) to the end. The steps spent here are measurement, not search: they are not in
    the ticket's history and :func:`iteration_savings` reports them separately.

    Example::

        result = tickets.retrain(ticket, create_model("res20s", 10), train_set, epochs=30,
                                 lr_schedule=dict(milestones=[15, 25]), eval_data=val_set,
                                 test_data=test_set)
        result.test_acc, result.steps

    Args:
        ticket: a ticket with a rewind state (from :func:`prune` or ``Ticket.load``).
        model: an unpruned model (pruned and trained in place) or a zero-argument factory.
        train_data: the full training set (or a DataLoader over it).
        schedule: the full schedule (a :class:`Schedule` or mapping); ``train_kwargs`` may
            give its fields (``epochs=``, ``optimizer=``, ``lr_schedule=``...) and any other
            argument of :func:`tickets.training.train` (``amp``, ``num_workers``...).
        start: the schedule point to start from; default the ticket's rewind point.
        seed, device, eval_data, test_data, quiet: as in :func:`tickets.training.train`.

    Returns:
        The :class:`tickets.training.TrainResult` (``test_acc`` at the best-validation epoch,
        ``steps``, ``wall_time_s``...; ``dict(result)`` works).
    """
    if not isinstance(ticket, Ticket):
        raise TypeError(f"ticket must be a tickets.Ticket; got {type(ticket).__name__}")
    if ticket.rewind_state is None:
        raise ValueError("the ticket has no rewind state: retraining starts from its rewind weights")
    if not isinstance(model, nn.Module):
        if not callable(model):
            raise TypeError(f"model must be an nn.Module or a function returning one; got {type(model).__name__}")
        model = model()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model() must return an nn.Module; got {type(model).__name__}")
    ticket.apply(model, rewind=True)
    if start is None:
        epochs_at = float(ticket.meta.get("rewind_epochs", 0.0))
        start = f"{epochs_at}ep" if epochs_at else 0
    return train(model, train_data, schedule, seed=seed, start_step=start, device=device, eval_data=eval_data,
                 test_data=test_data, quiet=quiet, **train_kwargs)

