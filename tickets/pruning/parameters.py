"""Choosing which tensors of a model to prune.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from torch import nn
import tickets.pruning.methods as methods
from tickets.pruning.guard import install_guard

__all__ = ['find_classifier', 'find_stem', 'prunable_parameters']


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


KINDS = ("conv", "linear")


ROLES = ("classifier", "stem")


def _kind(module: nn.Module, name: str) -> str | None:
    if name == "weight" and isinstance(module, _CONV):
        return "conv"
    if name == "weight" and isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, nn.MultiheadAttention) and name in (
        "in_proj_weight",
        "q_proj_weight",
        "k_proj_weight",
        "v_proj_weight",
    ):
        return "linear"
    return None


def _weights(model: nn.Module) -> list[tuple[str, nn.Module, str, str]]:
    """Every conv/linear weight as (qualified name, module, tensor name, kind), model order."""
    found = []
    for module_name, module in model.named_modules():
        names = [k[: -len("_orig")] if methods.is_pruned_tensor(module, k[: -len("_orig")]) else k
                 for k, v in module._parameters.items() if v is not None]
        for name in names:
            kind = _kind(module, name)
            if kind is not None:
                found.append((f"{module_name}.{name}" if module_name else name, module, name, kind))
    return found


def _module_names(model: nn.Module, modules: Iterable[nn.Module]) -> set[str]:
    wanted = {id(m) for m in modules}
    return {n for n, m in model.named_modules() if id(m) in wanted}


def find_classifier(model: nn.Module) -> list[str]:
    """Qualified names of the classifier's prunable weights.

    Uses ``model.get_classifier()`` where the model has it (timm, including distilled
    models with two heads); otherwise the last convolution or linear layer in
    registration order (torchvision's ``fc``, ``classifier.N``, ``heads.head``, ...).
    """
    weights = _weights(model)
    if not weights:
        return []
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        try:
            heads = getter()
        except Exception:  # a model whose get_classifier needs arguments or fails
            heads = None
        if heads is not None:
            heads = heads if isinstance(heads, (tuple, list)) else (heads,)
            owners = [m for h in heads if isinstance(h, nn.Module) for m in h.modules()]
            names = _module_names(model, owners)
            found = [q for q, _, _, _ in weights if q.rsplit(".", 1)[0] in names]
            if found:
                return found
    return [weights[-1][0]]


def find_stem(model: nn.Module) -> list[str]:
    """Qualified names of the stem's prunable weight (the layer that sees the input).

    Uses timm's ``pretrained_cfg["first_conv"]`` where present; otherwise the first
    convolution or linear layer in registration order.
    """
    weights = _weights(model)
    if not weights:
        return []
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    first = cfg.get("first_conv") if isinstance(cfg, dict) else None
    if first:
        firsts = first if isinstance(first, (list, tuple)) else [first]
        found = [q for q, _, _, _ in weights if any(q in (f, f + ".weight") for f in firsts)]
        if found:
            return found
    return [weights[0][0]]


def _check_choice(argument: str, values: Sequence[str], valid: Sequence[str]) -> tuple[str, ...]:
    if isinstance(values, str):
        values = (values,)
    values = tuple(values)
    for v in values:
        if v not in valid:
            raise ValueError(f"{argument} has {v!r}; valid values: {list(valid)}")
    return values


def _patterns(argument: str, patterns: str | Sequence[str] | None) -> tuple[str, ...]:
    if patterns is None:
        return ()
    if isinstance(patterns, str):
        return (patterns,)
    patterns = tuple(patterns)
    for p in patterns:
        if not isinstance(p, str):
            raise TypeError(f"{argument} must hold glob patterns (str); got {p!r}")
    return patterns


def _matches(qualified: str, patterns: tuple[str, ...]) -> bool:
    module_name = qualified.rsplit(".", 1)[0] if "." in qualified else ""
    return any(
        fnmatch.fnmatchcase(qualified, p) or fnmatch.fnmatchcase(module_name, p) for p in patterns
    )


def prunable_parameters(
    model: nn.Module,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    keep_dense: str | Sequence[str] = ROLES,
    kinds: str | Sequence[str] = KINDS,
) -> list[tuple[nn.Module, str]]:
    """The ``(module, name)`` pairs to prune in any timm or torchvision model.

    Convolution and linear weights (``nn.MultiheadAttention``'s input projection included);
    never biases, normalization or embeddings. A tensor shared by several modules is listed
    once, so it gets one mask. Also installs the mask guard on ``model``
    (:func:`tickets.pruning.guard.install_guard`) so weights read functionally stay masked.

    Args:
        model: the model.
        include: glob patterns on qualified names (``"layer*.conv*"`` matches the module,
            ``"*.weight"`` the tensor); when given, only matching tensors are kept.
        exclude: glob patterns of tensors never to prune.
        keep_dense: roles left dense: ``"classifier"`` (found with ``get_classifier()`` or
            as the last layer) and ``"stem"`` (the first layer). ``()`` prunes both. The
            lottery-ticket papers differ here: IMP for ResNets prunes the classifier,
            PrAC keeps it dense (``keep_dense=("classifier",), kinds=("conv",)``).
        kinds: ``"conv"``, ``"linear"`` or both; ``kinds=("conv",)`` prunes convolutions only.

    Returns:
        A list of ``(module, name)`` pairs in model order, ready for
        :func:`tickets.global_magnitude_prune` or ``prune.global_unstructured``.

    Raises:
        ValueError: for an unknown role or kind, or when nothing is left to prune.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    roles = _check_choice("keep_dense", keep_dense, ROLES)
    kinds = _check_choice("kinds", kinds, KINDS)
    include_p, exclude_p = _patterns("include", include), _patterns("exclude", exclude)
    dense: set[str] = set()
    if "classifier" in roles:
        dense.update(find_classifier(model))
    if "stem" in roles:
        dense.update(find_stem(model))
    chosen: list[tuple[nn.Module, str]] = []
    seen: set[int] = set()
    for qualified, module, name, kind in _weights(model):
        tensor = methods._original(module, name)
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if kind not in kinds or qualified in dense:
            continue
        if include_p and not _matches(qualified, include_p):
            continue
        if exclude_p and _matches(qualified, exclude_p):
            continue
        chosen.append((module, name))
    if not chosen:
        raise ValueError(
            f"nothing to prune in {type(model).__name__} with include={include!r}, "
            f"exclude={exclude!r}, keep_dense={roles}, kinds={kinds}: it has no "
            f"convolution or linear weight left to choose"
        )
    install_guard(model)
    return chosen
