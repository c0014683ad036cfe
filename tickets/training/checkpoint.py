"""The trainer's checkpoint: what continues a training run exactly, and the random state.

* :func:`trainer_state` / :func:`load_trainer_state`: the state of a
  :class:`tickets.training.Trainer` at an epoch's end (model, optimizer, gradient scaler,
  progress counters and log, the best-validation record, per-sample statistics, the
  sampler's generator, the early stop's state, the global random generators), as tensors
  and plain values that load with ``torch.load(weights_only=True)``;
* :func:`seed_everything`, :func:`rng_state` / :func:`set_rng_state`: the global random
  generators (torch, Python, NumPy) an epoch draws from;
* :func:`state_copy` / :func:`load_state`: a model's full state (pruned key form, masks
  included), as the best-validation weights are kept.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any
import numpy as np
import torch
from torch import nn
import tickets.pruning.methods as methods
from tickets.pruning.rewind import rewind

__all__ = ['trainer_state', 'load_trainer_state', 'seed_everything', 'rng_state', 'set_rng_state', 'state_copy',
           'load_state']


def seed_everything(seed: int) -> None:
    """Seed torch's, Python's and NumPy's global generators (NumPy with ``seed % 2**32``)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))


def rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)),
    }


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore the global RNG states taken with :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model.state_dict()`` (pruned key form, masks included)."""
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def load_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load a full state (pruned key form, masks included) taken with :func:`state_copy`."""
    if methods.pruned_parameters(model):
        rewind(model, state)
    else:
        model.load_state_dict(state)


def trainer_state(trainer: Any) -> dict[str, Any]:
    """Everything needed to continue ``trainer`` (a :class:`tickets.training.Trainer`) exactly,
    taken at an epoch's end: what :meth:`Trainer.state_dict` returns."""
    generator = getattr(trainer.sampler, "generator", None)
    early = trainer.early_stop
    return {
        "model": state_copy(trainer.model),
        "optimizer": trainer.optimizer.state_dict(),
        "scaler": trainer.scaler.state_dict(),
        "step": trainer.step,
        "steps_taken": trainer.steps_taken,
        "samples": trainer.samples,
        "wall_time": trainer.wall_time,
        "log": [dict(e) for e in trainer.log],
        "best": (trainer.best_acc, trainer.best_loss, trainer.best_epoch),
        "best_state": trainer.best_state,
        "early_stopped": trainer.early_stopped,
        "finished": trainer.finished,
        "stats": trainer.stats.state_dict() if trainer.stats is not None else None,
        "sampler_generator": generator.get_state() if isinstance(generator, torch.Generator) else None,
        "early_stop": early.state_dict() if early is not None and hasattr(early, "state_dict") else None,
        "rng": rng_state(),
    }


def load_trainer_state(trainer: Any, state: Mapping[str, Any]) -> None:
    """Continue ``trainer`` from :func:`trainer_state` (same model, data and schedule)."""
    load_state(trainer.model, state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    trainer.scaler.load_state_dict(state["scaler"])
    trainer.step, trainer.steps_taken, trainer.samples = int(state["step"]), int(state["steps_taken"]), int(state["samples"])
    trainer.wall_time = float(state["wall_time"])
    trainer.log = [dict(e) for e in state["log"]]
    trainer.best_acc, trainer.best_loss, trainer.best_epoch = state["best"]
    trainer.best_state = state["best_state"]
    trainer.early_stopped, trainer.finished = bool(state["early_stopped"]), bool(state["finished"])
    if trainer.stats is not None and state.get("stats") is not None:
        trainer.stats.load_state_dict(state["stats"])
    generator = getattr(trainer.sampler, "generator", None)
    if isinstance(generator, torch.Generator) and state.get("sampler_generator") is not None:
        generator.set_state(state["sampler_generator"])
    early = trainer.early_stop
    if early is not None and state.get("early_stop") is not None and hasattr(early, "load_state_dict"):
        early.load_state_dict(state["early_stop"])
    if state.get("rng"):
        set_rng_state(state["rng"])
