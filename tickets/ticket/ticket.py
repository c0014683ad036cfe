"""Tickets: masks plus the weights to rewind to, saved and applied portably.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
import torch
from torch import nn
import tickets.pruning.methods as methods
from tickets.pruning.guard import install_guard
from tickets.pruning.rewind import rewind as _rewind
from torch.utils.data import DataLoader, Dataset
from tickets.training.schedule import Schedule
from tickets.training.results import TrainResult
from tickets.training.loop import train
from tickets.ticket.file import _check_json, read_ticket, write_ticket

__all__ = ['Ticket', 'SparsityReport', 'sparsity_report', 'retrain']


@dataclass
class Ticket:
    """A lottery ticket: which weights survive, and the weights to start them from.

    Attributes:
        masks: ``{qualified name: bool tensor}``, e.g. ``{"layer1.0.conv1.weight": ...}``,
            one per pruned tensor (True = the weight survives).
        rewind_state: the weights to train the ticket from, as an unpruned state_dict
            (pruned entries zero), or None for masks only.
        history: one JSON-able dict per round of the search that found the ticket.
        meta: JSON-able facts about the run (architecture, data, settings).
    """

    masks: dict[str, torch.Tensor]
    rewind_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.masks, Mapping) or not self.masks:
            raise ValueError("masks must be a non-empty mapping of qualified names to bool tensors")
        clean = {}
        for key, mask in self.masks.items():
            if not isinstance(mask, torch.Tensor):
                raise TypeError(f"masks[{key!r}] must be a tensor; got {type(mask).__name__}")
            if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
                raise ValueError(f"masks[{key!r}] must be binary (bool or 0/1)")
            clean[str(key)] = mask.detach().bool().cpu()
        self.masks = clean
        if self.rewind_state is not None:
            self.rewind_state = {k: v.detach().cpu() for k, v in self.rewind_state.items()}
            for key, mask in self.masks.items():
                w = self.rewind_state.get(key)
                if w is not None and w.shape != mask.shape:
                    raise ValueError(
                        f"rewind_state[{key!r}] has shape {tuple(w.shape)} but its mask has "
                        f"shape {tuple(mask.shape)}"
                    )
        self.history = list(self.history)
        self.meta = dict(self.meta)
        _check_json(self.history, "history")
        _check_json(self.meta, "meta")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        rewind_state: Mapping[str, torch.Tensor] | None = None,
        history: list[dict[str, Any]] | None = None,
        meta: dict[str, Any] | None = None,
        *,
        weights: bool = True,
    ) -> Ticket:
        """The ticket of a pruned ``model``: its masks, and the weights to rewind to.

        ``Ticket.from_model(model).save(path)`` then ``Ticket.load(path).apply(fresh)`` gives
        ``fresh`` the model's masks and its current (masked) weights.

        Args:
            model: a model pruned with this library or torch's methods.
            rewind_state: weights to rewind to (e.g. :func:`tickets.snapshot` taken at
                iteration k), unpruned or pruned key form; None = the model's current
                weights (``weights=True``) or none.
            history: per-round records; meta: facts about the run.
            weights: with ``rewind_state=None``, keep the model's current weights (default)
                or masks only (False; apply such a ticket with ``apply(model, rewind=False)``).
        """
        if not isinstance(weights, bool):
            raise TypeError(f"weights must be True (keep the model's weights) or False (masks only); got {weights!r}")
        if rewind_state is None and weights:
            rewind_state = model.state_dict()
        found = methods.masks(model)
        if not found:
            raise ValueError(f"{type(model).__name__} has no pruned tensor: prune it before making a Ticket")
        state = None
        if rewind_state is not None:
            state = {}
            for key, value in rewind_state.items():
                if key.endswith("_mask") and key[: -len("_mask")] in found:
                    continue
                if key.endswith("_orig") and key[: -len("_orig")] in found:
                    key = key[: -len("_orig")]
                state[key] = value.detach().cpu().clone()
            for key in found:
                if key not in state:
                    raise KeyError(f"rewind_state has no entry for pruned tensor {key!r}")
            for key, module, name in methods.pruned_parameters(model):  # tied owners too
                if key in state:
                    mask = module._buffers[name + "_mask"].detach().cpu().bool()
                    state[key] = torch.where(mask, state[key], torch.zeros((), dtype=state[key].dtype))
        return cls(found, state, history or [], meta or {})

    # ------------------------------------------------------------------ facts
    @property
    def layer_sparsity(self) -> dict[str, float]:
        """Fraction of pruned weights per tensor."""
        return {k: 1.0 - float(m.sum()) / m.numel() for k, m in self.masks.items()}

    @property
    def sparsity(self) -> float:
        """Fraction of pruned weights over all pruned tensors together."""
        total = sum(m.numel() for m in self.masks.values())
        return 1.0 - sum(int(m.sum()) for m in self.masks.values()) / total

    def __repr__(self) -> str:
        rewind = "with rewind state" if self.rewind_state is not None else "masks only"
        return (
            f"Ticket({len(self.masks)} tensors, sparsity {self.sparsity:.2%}, {rewind}, "
            f"{len(self.history)} rounds)"
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ticket to ``path`` as a safetensors file (atomically); returns the path.

        The file holds only tensors and text, so reading it cannot run code, and any
        safetensors reader opens it (layout in ``docs/deploy.md``):

        - ``mask/<name>``: each mask packed 8 entries per byte (:func:`pack_mask`);
        - ``rewind/<name>``: each rewind tensor; a pruned tensor whose pruned entries are
          zero (the case for every ticket this library makes) is stored as its surviving
          values only, in row-major order, and read back with zeros (``+0.0``) elsewhere;
        - header metadata: ``format``, ``version``, the masks' names and shapes, how each
          rewind tensor is stored, and ``history`` and ``meta`` as JSON text.

        A crash mid-write leaves the previous file intact. :meth:`load` also reads the
        torch-pickle files written by torch-tickets 0.1.
        """
        return write_ticket(path, self.masks, self.rewind_state, self.history, self.meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ticket:
        """Read a ticket written by :meth:`save` (safetensors) or by torch-tickets 0.1 (torch.save).

        Neither path can run code from the file: the safetensors file is tensors and JSON
        text, and an old torch file is read with ``torch.load(weights_only=True)``, which
        refuses any pickled object other than tensors and plain containers.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not a ticket, is corrupt or incomplete, or holds code;
                the message names the file and what is wrong.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ticket file at {str(path)!r}")
        return cls(*read_ticket(path))

    # ------------------------------------------------------------------ application
    def apply(self, model: nn.Module, *, rewind: bool = True) -> nn.Module:
        """Prune a fresh, unpruned ``model`` of the same architecture with this ticket.

        Afterwards the model is in the standard ``torch.nn.utils.prune`` state
        (``<name>_orig``, bool ``<name>_mask``, a pre-hook; ``prune.remove`` works) and,
        with ``rewind=True`` and a rewind state, holds the ticket's starting weights
        (normalization statistics included), ready to train.

        Args:
            model: an unpruned model with a tensor of the same shape for every mask.
            rewind: load the rewind state too (needs one); False applies masks only, to
                the model's own weights.

        Raises:
            ValueError: a tensor is missing, has another shape, or is already pruned; the
                message names the first such tensor. Nothing is changed then.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
        if rewind and self.rewind_state is None:
            raise ValueError("this ticket has no rewind state; call apply(model, rewind=False)")
        modules = dict(model.named_modules())
        targets = []
        for key, mask in self.masks.items():
            module_name, _, name = key.rpartition(".")
            module = modules.get(module_name)
            if module is None:
                raise ValueError(f"model has no module {module_name!r} for ticket tensor {key!r}: another architecture?")
            if methods.is_pruned_tensor(module, name):
                raise ValueError(f"{key!r} of the model is already pruned; apply a ticket to an unpruned model")
            tensor = module._parameters.get(name)
            if tensor is None:
                raise ValueError(f"model has no parameter {key!r}: another architecture?")
            if tensor.shape != mask.shape:
                raise ValueError(
                    f"{key!r} has shape {tuple(tensor.shape)} in the model but {tuple(mask.shape)} "
                    f"in the ticket: another architecture or configuration"
                )
            targets.append((module, name, mask))
        if rewind:
            assert self.rewind_state is not None
            own = model.state_dict()
            for key, value in own.items():
                if key not in self.rewind_state:
                    raise ValueError(f"the ticket's rewind state has no entry for {key!r}: another architecture?")
                if self.rewind_state[key].shape != value.shape:
                    raise ValueError(
                        f"{key!r} has shape {tuple(value.shape)} in the model but "
                        f"{tuple(self.rewind_state[key].shape)} in the ticket's rewind state"
                    )
        for module, name, mask in targets:
            methods.FixedMask.apply(module, name, mask)
        if rewind:
            _rewind(model, self.rewind_state)  # type: ignore[arg-type]
        install_guard(model)
        return model


    def retrain(
        self,
        model: nn.Module | Callable[[], nn.Module],
        train_data: Any,
        schedule: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Train this ticket on the full data from its rewind state, to measure it.

        The method form of :func:`tickets.retrain`; see it for the arguments. ``model`` (a
        fresh, unpruned model) is pruned and trained in place: afterwards it is the trained
        ticket. Returns the :class:`tickets.TrainResult` (accuracies, steps, wall time).
        """
        return retrain(self, model, train_data, schedule, **kwargs)


@dataclass(frozen=True)
class SparsityReport:
    """Per-tensor and global sparsity of a pruned model or ticket.

    Attributes:
        rows: ``(qualified name, shape, total, surviving)`` per pruned tensor.
    """

    rows: tuple[tuple[str, tuple[int, ...], int, int], ...]

    @property
    def total(self) -> int:
        return sum(r[2] for r in self.rows)

    @property
    def surviving(self) -> int:
        return sum(r[3] for r in self.rows)

    @property
    def global_sparsity(self) -> float:
        """Fraction pruned over all pruned tensors (0.0 for a model with none)."""
        return 1.0 - self.surviving / self.total if self.total else 0.0

    def __str__(self) -> str:
        header = ("tensor", "shape", "weights", "surviving", "sparsity")
        lines = [
            (q, "x".join(map(str, shape)) or "scalar", f"{t:,}", f"{s:,}", f"{1 - s / t:.2%}")
            for q, shape, t, s in self.rows
        ]
        lines.append(("global", "", f"{self.total:,}", f"{self.surviving:,}", f"{self.global_sparsity:.2%}"))
        widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(5)]
        fmt = "  ".join(["{:<%d}" % widths[0], "{:<%d}" % widths[1]] + ["{:>%d}" % w for w in widths[2:]])
        rule = "-" * (sum(widths) + 8)
        out = [fmt.format(*header), rule, *(fmt.format(*r) for r in lines[:-1]), rule, fmt.format(*lines[-1])]
        return "\n".join(out)


def sparsity_report(model_or_ticket: nn.Module | Ticket) -> SparsityReport:
    """Per-layer and global sparsity of a pruned model or a :class:`Ticket`.

    ``print(tickets.sparsity_report(model))`` shows a table; the returned object also
    holds the numbers (``.rows``, ``.global_sparsity``). Only pruned tensors count.
    """
    if isinstance(model_or_ticket, Ticket):
        found = model_or_ticket.masks
    elif isinstance(model_or_ticket, nn.Module):
        found = methods.masks(model_or_ticket)
    else:
        raise TypeError(f"expected an nn.Module or a Ticket; got {type(model_or_ticket).__name__}")
    rows = tuple((q, tuple(m.shape), m.numel(), int(m.sum())) for q, m in found.items())
    return SparsityReport(rows)


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
        model: an unpruned model, pruned and trained in place (afterwards it holds the
            trained ticket, in torch's prune state), or a zero-argument factory (its model is
            not returned: pass a model to keep the trained weights).
        train_data: the full training set (or a DataLoader over it).
        schedule: the full schedule (a :class:`Schedule` or mapping); ``train_kwargs`` may
            give its fields (``epochs=``, ``optimizer=``, ``lr_schedule=``...) and any other
            argument of :func:`tickets.training.train` (``amp``, ``num_workers``...).
        start: the schedule point to start from; default the ticket's rewind point.
        seed, device, eval_data, test_data, quiet: as in :func:`tickets.training.train`.

    Returns:
        The :class:`tickets.training.TrainResult` (``test_acc`` at the best-validation epoch,
        ``steps``, ``wall_time_s``...; ``dict(result)`` works).

    Raises:
        ValueError: a ticket without rewind state, an already-pruned model, or a schedule that
            ends at or before ``start`` (no step would be trained).
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
    result = train(model, train_data, schedule, seed=seed, start_step=start, device=device, eval_data=eval_data,
                   test_data=test_data, quiet=quiet, **train_kwargs)
    if result.steps == 0:  # a schedule that ends at the rewind point: nothing was measured
        raise ValueError(
            f"retraining trained no step: the schedule ends at or before the start {start!r} (the ticket's rewind "
            f"point); give a schedule longer than that (more epochs)"
        )
    return result
