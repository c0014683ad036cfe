"""A search's identity: the settings a resume must match (the fingerprint), the optimizer
description, and the origin checks of ``start_from``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
import torch
from tickets.prac.sampler import PrACSampler


__all__ = ['describe_optimizer']




# ---------------------------------------------------------------------- the run's identity
# "rounds" may grow on a finished or running search; "optimizer" was added to the fingerprint
# after the first release: a checkpoint without it resumes (its optimizer is not known)
_GROWABLE_KEYS = frozenset({"rounds"})


_ADDED_KEYS = frozenset({"optimizer"})


# settings that only concern rounds >= 1: a search may start from another's round 0 despite them
_AFTER_ROUND_0_KEYS = frozenset({
    "rounds", "amount", "rewind", "adaptive", "selection", "min_step_fraction", "scale_schedule", "early_bird",
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
