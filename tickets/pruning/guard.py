"""Keep every pruned weight masked in every forward, including weights read functionally.

Torch recomputes ``module.<name> = <name>_orig * <name>_mask`` in a forward pre-hook of the
module that owns the tensor. Some models read a child's weight without calling the child
(``nn.MultiheadAttention`` reads ``out_proj.weight``, torchvision's Swin and timm attention
blocks call ``F.linear(x, self.qkv.weight, ...)``): there the hook never fires, the weight
is stale (and the second backward fails). The guard is a pre-hook on the *root* model that
recomputes every pruned tensor before each forward; the per-module hooks then see a fresh
value and skip their own work, so the cost is the same as plain torch. The same pre-hook
gives every module sharing a pruned Parameter (weight tying) the shared mask.
"""

from __future__ import annotations

import itertools
from typing import Any
import torch
from torch import nn
import tickets.pruning.methods as methods

__all__ = ['tie_shared', 'has_guard', 'install_guard']


_forward_ids = itertools.count(1)


class _GuardPre:
    """Forward pre-hook of the root model: refresh every pruned tensor."""

    def __call__(self, model: nn.Module, inputs: Any) -> None:
        if torch.compiler.is_compiling():  # compiled: every pruned tensor is recomputed in the graph
            for _, module, name in methods.pruned_parameters(model):
                methods.refresh_traced(module, name)
            return
        tie_shared(model)
        methods._active_forward.append(next(_forward_ids))
        for _, module, name in methods.pruned_parameters(model):
            methods.refresh(module, name)


class _GuardPost:
    """Forward hook of the root model: end the guarded forward."""

    def __call__(self, model: nn.Module, inputs: Any, output: Any) -> None:
        if methods._active_forward:
            methods._active_forward.pop()


def tie_shared(model: nn.Module) -> None:
    """Give every module that holds a pruned Parameter the mask too (weight tying).

    Pruning a shared Parameter through one owner leaves the other owners reading it
    unmasked; here each of them gets the standard prune state around the same Parameter
    and the same mask buffer (:func:`tickets.pruning.methods.share_mask`). Cheap when nothing is
    tied: one pass over the parameters.
    """
    owners: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for key, tensor in module._parameters.items():
            if tensor is None:
                continue
            base = key[: -len("_orig")] if key.endswith("_orig") else None
            name = base if base is not None and methods.is_pruned_tensor(module, base) else key
            owners.setdefault(id(tensor), []).append((module, name))
    for group in owners.values():
        if len(group) < 2:
            continue
        pruned = [(m, n) for m, n in group if methods.is_pruned_tensor(m, n)]
        if not pruned:
            continue
        buffers = {id(m._buffers[n + "_mask"]) for m, n in pruned}
        if len(pruned) < len(group) or len(buffers) > 1:
            methods.share_mask(group)


def has_guard(model: nn.Module) -> bool:
    """Whether :func:`install_guard` was called on ``model``."""
    return any(isinstance(h, _GuardPre) for h in model._forward_pre_hooks.values())


def install_guard(model: nn.Module) -> nn.Module:
    """Install the mask guard on ``model`` (idempotent) and return ``model``.

    :func:`tickets.prunable_parameters`, :meth:`tickets.Ticket.apply` and
    :func:`tickets.rewind` call it for you; call it yourself only if you prune a model's
    tensors with the low-level functions without going through those.

    Args:
        model: the root module whose ``forward`` you call.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if not has_guard(model):
        model.register_forward_pre_hook(_GuardPre(), prepend=True)
        model.register_forward_hook(_GuardPost(), always_call=True)
    tie_shared(model)
    return model
