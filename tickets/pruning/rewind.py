"""Rewinding pruned models: snapshots of weights and writing them back into ``<name>_orig``.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Mapping
import torch
from torch import nn
import tickets.pruning.methods as methods
from tickets.pruning.guard import install_guard

__all__ = ['snapshot', 'rewind', 'enforce_masks']


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``model``'s state in the *unpruned* key form.

    Pruned tensors appear under their plain name (``"conv.weight"``) as
    ``<name>_orig * <name>_mask``; masks are left out. Every other parameter and buffer
    (normalization running statistics included) is copied as it is. The result is what
    :func:`rewind` and :class:`tickets.Ticket` take as a rewind state, and it loads with
    ``load_state_dict`` into an unpruned model of the same architecture.

    Args:
        model: any module, pruned or not.
    """
    pruned = {q: (module, name) for q, module, name in methods.pruned_parameters(model)}
    skip = {q + "_orig" for q in pruned} | {q + "_mask" for q in pruned}
    full = model.state_dict(keep_vars=False)
    state: dict[str, torch.Tensor] = OrderedDict()
    for key, value in full.items():
        if key in skip:
            continue
        state[key] = value.detach().cpu().clone()
    metadata = getattr(full, "_metadata", None)
    if metadata is not None:  # module versions: e.g. MNASNet's load_state_dict requires them
        state._metadata = copy.deepcopy(metadata)  # type: ignore[attr-defined]
    for q, (module, name) in pruned.items():
        orig = module._parameters[name + "_orig"]
        state[q] = (orig.detach() * module._buffers[name + "_mask"]).cpu().clone()
    return state


def _pruned_keys(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    return {q: (module, name) for q, module, name in methods.pruned_parameters(model)}


@torch.no_grad()
def rewind(model: nn.Module, state: Mapping[str, torch.Tensor], *, strict: bool = True) -> nn.Module:
    """Reset ``model`` to the weights in ``state``, keeping its masks.

    Surviving weights are written into ``<name>_orig`` (the tensor the optimizer updates;
    writing ``module.<name>`` would be overwritten at the next forward) multiplied by the
    mask, so pruned entries are zero everywhere. Every other parameter and buffer,
    normalization running statistics included, is restored too. Masks in ``state`` are
    ignored: rewinding never changes which weights survive.

    Args:
        model: the (pruned) model to reset in place.
        state: a mapping from state_dict keys to tensors, e.g. from :func:`snapshot` or
            ``model.state_dict()`` taken earlier, in the unpruned (``"x.weight"``) or the
            pruned (``"x.weight_orig"``) key form.
        strict: if True, a key of the model missing from ``state`` is an error.

    Returns:
        ``model``.
    """
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of state_dict keys to tensors; got {type(state).__name__}")
    install_guard(model)  # first: tied owners of a pruned tensor must be masked when written
    pruned = _pruned_keys(model)
    targets: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict(keep_vars=True).items():
        if key.endswith("_mask") and key[: -len("_mask")] in pruned:
            continue
        targets[key] = value
    missing: list[str] = []
    for key, target in targets.items():
        plain = key[: -len("_orig")] if key.endswith("_orig") and key[: -len("_orig")] in pruned else None
        source = state.get(key)
        if source is None and plain is not None:
            source = state.get(plain)
        if source is None:
            missing.append(plain or key)
            continue
        if not isinstance(source, torch.Tensor):
            raise TypeError(f"state[{key!r}] must be a tensor; got {type(source).__name__}")
        if source.shape != target.shape:
            raise ValueError(
                f"state[{plain or key!r}] has shape {tuple(source.shape)}; the model's tensor has "
                f"shape {tuple(target.shape)}: the state is from another architecture"
            )
        source = source.to(device=target.device, dtype=target.dtype)
        if plain is not None:
            module, name = pruned[plain]
            source = source * module._buffers[name + "_mask"]
        target.copy_(source)
    if missing and strict:
        raise KeyError(
            f"state has no entry for {missing[0]!r} ({len(missing)} keys missing); "
            f"pass a state taken from this architecture, or strict=False"
        )
    for q, (module, name) in pruned.items():
        methods.refresh(module, name)
    return model


@torch.no_grad()
def enforce_masks(model: nn.Module) -> nn.Module:
    """Zero the pruned entries of every ``<name>_orig`` of ``model`` in place.

    The effective weights ``<name>_orig * mask`` are zero at pruned entries whatever the
    optimizer does; weight decay and momentum carried over from before pruning can still
    move the hidden entries of ``<name>_orig``. Call this after ``optimizer.step()`` to keep
    them at zero too (``tickets.prune`` does), so that ``prune.remove`` and checkpoints never
    see stale values.

    Args:
        model: a module, pruned or not (nothing happens to unpruned tensors).
    """
    for _, module, name in methods.pruned_parameters(model):
        module._parameters[name + "_orig"].mul_(module._buffers[name + "_mask"])
    return model
