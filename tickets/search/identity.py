"""A search's identity: the settings a resume must match (the fingerprint), the optimizer
description, and the origin checks of ``start_from``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
import torch
from torch import nn
from tickets.pruning.rewind import snapshot
from tickets.prac.sampler import PrACSampler
from tickets.prac.score_rules import Rule
from tickets.training.schedule import Schedule
from tickets.search.options import EarlyBird, PrACOptions, Pruning


__all__ = ['describe_optimizer']




# ---------------------------------------------------------------------- the run's identity
# "rounds" may grow on a finished or running search; "optimizer" was added to the fingerprint
# after the first release: a checkpoint without it resumes (its optimizer is not known)
_GROWABLE_KEYS = frozenset({"rounds"})


_ADDED_KEYS = frozenset({"optimizer"})


# settings that only concern rounds >= 1: a search may start from another's round 0 despite them
_AFTER_ROUND_0_KEYS = frozenset({
    "rounds", "amount", "rewind", "adaptive", "selection", "min_step_fraction", "scale_schedule", "early_bird",
    "round_steps",
})


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


def _origin(model: nn.Module, sampler: Any, n: int) -> dict[str, Any]:
    """What round 0 starts from: a digest of the model's weights, the sampler's identity
    (type, seed, shuffling, generator state) and a digest of round 0's set."""
    return {
        "init": _digest(snapshot(model)),
        "sampler": _sampler_identity(sampler),
        "set": _digest({"set": _first_set(sampler, n)}),
    }


# ---------------------------------------------------------------------- the fingerprint
def _engine_optimizer(schedule: Schedule, model: nn.Module) -> dict[str, Any]:
    """What the engine's optimizer factory builds for ``model`` (class and every param-group
    hyperparameter), JSON-normalized; an own loop builds its optimizer after begin_round(),
    so :meth:`Round.attach` checks that one instead."""
    built = schedule.make_optimizer([p for p in model.parameters() if p.requires_grad])
    return json.loads(json.dumps(describe_optimizer(built)))


def _run_config(*, rounds: int, schedule: Schedule, pruning: Pruning, prac: PrACOptions, rewind_step: int,
                num_samples: int, sampler: Any, adaptive: bool, seed: int, rule: Rule, names: list[str],
                classes: int, precision: str, optimizer: dict[str, Any] | None, world_size: int) -> dict[str, Any]:
    """The settings of a search that a resume must match (its JSON form is the fingerprint):
    ``optimizer`` is the engine's (:func:`_engine_optimizer`; None: an own loop)."""
    bird = pruning.early_bird
    bird_repr = repr(bird if isinstance(bird, EarlyBird) else EarlyBird()) if bird else None
    config: dict[str, Any] = {
        "rounds": rounds, "amount": float(pruning.amount), "schedule": schedule.to_dict(), "rewind_to": rewind_step,
        "rewind": pruning.rewind, "num_samples": num_samples, "sampler": type(sampler).__name__, "adaptive": adaptive,
        "seed": seed, "selection": rule.to_dict() if adaptive else None,
        "scale_schedule": prac.scale_schedule, "early_bird": bird_repr, "parameters": names,
        "classes": classes, "precision": precision,
        "min_step_fraction": float(prac.min_step_fraction) if adaptive else None,
    }
    if prac.round_steps:  # only when set: the fingerprints of searches without budgets stay as they were
        config["round_steps"] = {str(k): int(v) for k, v in prac.round_steps.items()}  # type: ignore[union-attr]
    if optimizer is not None:
        config["optimizer"] = optimizer
    else:
        config["loop"] = "own"
    if world_size > 1:  # a distributed run resumes with the same number of processes
        config["world_size"] = world_size
    return config


def _ticket_meta(config: Mapping[str, Any], *, is_prac: bool, rewind_epochs: float, schedule: Schedule,
                 engine: bool, meta: Mapping[str, Any] | None) -> dict[str, Any]:
    """The base ``meta`` of a search's tickets, from its :func:`_run_config` and the
    user's ``meta``; the schedule without the SGD fields when they never ran."""
    trained_schedule = schedule.to_dict()
    if not engine or schedule.optimizer is not None:  # the SGD fields never ran: say what did
        for key in ("lr", "momentum", "weight_decay", "nesterov"):
            trained_schedule.pop(key, None)
    return {
        "method": "prac-imp" if is_prac else "imp", "rewind": config["rewind"], "rewind_step": config["rewind_to"],
        "rewind_epochs": rewind_epochs, "amount": config["amount"], "rounds": config["rounds"],
        "num_samples": config["num_samples"], "classes": config["classes"], "schedule": trained_schedule,
        "seed": config["seed"],
        "optimizer": config.get("optimizer"),  # None for own loops: each round's history entry has it
        "selection": config["selection"], **dict(meta or {}),
    }
