"""Checks of what a search is given (data sets, model, sampler) and small facts derived
from them (rewind point, schedule ratio, masks).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
import tickets.pruning.methods as methods
from tickets.prac.sampler import PrACSampler
from tickets.data.transforms import random_transform
from tickets.data.sampling import dataset_of, targets_of
from tickets.training.schedule import Schedule, parse_step

__all__ = []


# ---------------------------------------------------------------------- checks
def _check_search_arguments(model: Any, sampler: Any, rounds: Any, start_from: Any) -> None:
    """The checks of a search's model, ``rounds``, ``start_from`` and the kind of its sampler
    argument that need nothing resolved (run before the option groups are resolved)."""
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


def _resolve_training_data(sampler: Sampler[int] | Dataset | None, train_data: Dataset | None,
                           train_eval_data: Any, seed: Any) -> tuple[Sampler[int], Dataset]:
    """The search's sampler and training set from its arguments (a data set, or None with
    ``train_data``, means ``PrACSampler(train_data, seed=seed)``), checked to agree with each
    other and with ``train_eval_data``, labelled, and (a PrACSampler) of the same size."""
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
    if isinstance(sampler, PrACSampler) and sampler.num_samples != n:
        raise ValueError(f"the PrACSampler covers {sampler.num_samples:,} samples but train_data has {n:,}")
    return sampler, train_data  # type: ignore[return-value]


def _check_world_batch(batch_size: int, world_size: int) -> None:
    """Under torch.distributed ``batch_size`` is the global batch: a multiple of the world size."""
    if world_size > 1 and batch_size % world_size:
        raise ValueError(
            f"batch_size {batch_size} is the global batch of all {world_size} processes: it must be "
            f"a multiple of the world size"
        )


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


def _round_schedule(sched: Schedule, n: int, set_size: int, k: int, rewind_epochs: float, *, scale: bool,
                    min_step_fraction: float, world_size: int, budget: int | None = None) -> tuple[Schedule, int, bool]:
    """Round ``k``'s schedule on a set of ``set_size`` of ``n`` samples, the step it starts
    at (after a rewind: the rewind point in that schedule, before its end) and whether the
    small-set floor raised it. ``scale``: a PrAC round's schedule is scaled by its set
    (:func:`_time_ratio`).

    ``budget`` (``PrACOptions.round_steps``, rounds >= 1): the round trains exactly that many
    steps; its schedule is the one above from its start step to its end, compressed into
    them (:meth:`Schedule.compressed`), starting at step 0, and no floor applies."""
    if budget is not None and k > 0:
        plain, start, _ = _round_schedule(sched, n, set_size, k, rewind_epochs, scale=scale,
                                          min_step_fraction=min_step_fraction, world_size=world_size)
        spe = plain.steps_per_epoch(set_size, world_size)
        return plain.compressed(budget, spe, start_step=start), 0, False
    scaled = scale and set_size / n < 1.0
    time_ratio, floored = _time_ratio(sched, n, set_size, min_step_fraction, world_size) if scaled else (1.0, False)
    round_sched = sched.scaled(time_ratio) if scaled else sched
    spe = round_sched.steps_per_epoch(set_size, world_size)
    last = round_sched.total_steps(set_size, world_size) - 1
    start = 0 if k == 0 else min(int(round(rewind_epochs * time_ratio * spe)), last)
    return round_sched, start, floored


def _check_round_steps(round_steps: Mapping[int, int] | None, rounds: int) -> None:
    """``PrACOptions.round_steps`` may only budget rounds the search has (1 .. rounds - 1)."""
    outside = [k for k in (round_steps or {}) if k >= rounds]
    if outside:
        raise ValueError(
            f"round_steps has a budget for round {outside[0]}, but rounds={rounds} trains rounds 0..{rounds - 1} "
            f"(budgets are for rounds 1..{rounds - 1}): drop it or raise rounds"
        )


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


def _apply_masks(parameters: list[tuple[nn.Module, str]], names: list[str], found: Mapping[str, torch.Tensor]) -> None:
    for (module, name), q in zip(parameters, names):
        mask = found[q]
        if methods.is_pruned_tensor(module, name):
            if not torch.equal(methods._current_mask(module, name).bool().cpu(), mask):
                raise ValueError(f"{q!r} of the model is already pruned with another mask: pass a fresh model to resume")
        else:
            methods.FixedMask.apply(module, name, mask)


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
