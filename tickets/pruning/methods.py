"""Pruning methods compatible with :mod:`torch.nn.utils.prune`, with its traps fixed.

The methods here are :class:`~torch.nn.utils.prune.BasePruningMethod` subclasses: they leave
the standard state (``<name>_orig`` parameter, ``<name>_mask`` buffer, a forward pre-hook),
so ``prune.remove``, ``prune.is_pruned`` and torch's own methods keep working. They differ
from torch's built-ins where torch is wrong for iterative magnitude pruning:

* scores come from the current ``<name>_orig * <name>_mask``, never from the attribute
  ``module.<name>`` cached at the last forward (stale after a rewind or an optimizer step);
* pruning a tensor again updates its one mask in place instead of stacking another method
  in a :class:`~torch.nn.utils.prune.PruningContainer` (constant memory across rounds);
* masks are ``torch.bool`` (a quarter of a float32 mask);
* the masked weight stored on the module deep-copies and pickles after a forward with
  gradients enabled;
* pruned entries of ``<name>_orig`` are set to zero when they are pruned.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping
from typing import Any
import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

__all__ = ['MaskedWeight', 'is_pruned_tensor', 'refresh', 'refresh_traced', 'MagnitudePruning', 'RandomPruning', 'FixedMask', 'magnitude_prune', 'random_prune', 'global_magnitude_prune', 'global_random_prune', 'pruned_parameters', 'masks', 'share_mask']


class MaskedWeight(torch.Tensor):
    """The masked weight ``<name>_orig * <name>_mask`` as stored on a pruned module.

    It is an ordinary tensor in every operation (``__torch_function__`` is disabled, so
    results are plain tensors and autograd is untouched), with one difference: copying or
    pickling it yields a detached plain tensor. That is what makes ``copy.deepcopy`` and
    ``pickle`` of a pruned model work after a forward with gradients enabled (torch trap 4:
    the cached non-leaf ``module.<name>`` refuses to be deep-copied).
    """

    __torch_function__ = torch._C._disabled_torch_function_impl

    def __deepcopy__(self, memo: dict[int, Any]) -> torch.Tensor:
        return self.detach().as_subclass(torch.Tensor).clone()

    def __reduce_ex__(self, protocol: Any) -> Any:
        return self.detach().as_subclass(torch.Tensor).clone().__reduce_ex__(protocol)


def _validate_amount(amount: Any, argument: str = "amount") -> None:
    if isinstance(amount, bool) or not isinstance(amount, numbers.Real):
        raise TypeError(
            f"{argument} must be a float in [0, 1] (a fraction) or a non-negative int "
            f"(a count); got {amount!r} of type {type(amount).__name__}"
        )
    if isinstance(amount, numbers.Integral):
        if amount < 0:
            raise ValueError(f"{argument} must be a non-negative int count; got {amount}")
    elif not (0.0 <= float(amount) <= 1.0):
        raise ValueError(f"{argument} must be a fraction in [0, 1] when a float; got {amount}")


def _count_to_prune(amount: int | float, surviving: int, what: str) -> int:
    """Number of entries to remove: a float is a fraction of ``surviving``, an int a count."""
    _validate_amount(amount)
    if isinstance(amount, numbers.Integral):
        if amount > surviving:
            raise ValueError(
                f"amount={amount} is larger than the {surviving} surviving entries of {what}; "
                f"use an int in [0, {surviving}] or a float fraction"
            )
        return int(amount)
    return int(round(float(amount) * surviving))


def _drop_lowest(
    scores: list[torch.Tensor],
    keeps: list[torch.Tensor],
    k: int,
    surviving: int | None = None,
    scratch: bool = False,
) -> list[torch.Tensor]:
    """New keep-masks with the ``k`` lowest-scoring surviving entries over all tensors removed.

    Exactly ``k`` entries go; ties at the threshold are broken by position (tensor order,
    then flat index), so the result is deterministic. Runs in linear time without sorting or
    compacting the survivors: the threshold is bracketed by the quantiles of a strided
    sample, only the few entries inside the bracket are gathered, and the exact ``k``-th
    value is taken among them. ``scratch=True`` lets the scores be overwritten.
    """
    if k <= 0:
        return [keep.clone() for keep in keeps]
    dtype = torch.float64 if any(s.dtype == torch.float64 for s in scores) else torch.float32
    # pruned entries become -inf: below every survivor, so "m >= threshold" is the new mask
    masked = [
        s.masked_fill_(~keep, -torch.inf) if scratch and s.dtype == dtype else torch.where(keep, s.to(dtype), -torch.inf)
        for s, keep in zip(scores, keeps)
    ]
    if surviving is None:
        surviving = sum(int(torch.count_nonzero(keep)) for keep in keeps)
    pruned = sum(m.numel() for m in masked) - surviving
    lo, hi = _bracket(masked, k, surviving)
    found = _kth_in_bracket(masked, k + pruned, lo, hi) if lo is not None else None
    if found is None:  # small input, or the sample's bracket missed: rank every survivor
        inside = [m[torch.isfinite(m)].cpu() for m in masked]
        found = torch.kthvalue(torch.cat(inside), k).values, pruned, inside
    threshold, below, inside = found
    missing = k + pruned - below - sum(int(torch.count_nonzero(b < threshold)) for b in inside)
    new_keeps = []
    for m, b in zip(masked, inside):
        new_keep = (m >= threshold).contiguous()  # flat positions below are logical ones (channels_last weights too)
        if missing > 0 and bool((b == threshold).any()):  # ties: the first ones go
            ties = (m == threshold).reshape(-1).nonzero().flatten()[:missing]
            new_keep.view(-1)[ties] = False
            missing -= ties.numel()
        new_keeps.append(new_keep)
    return new_keeps


def _bracket(masked: list[torch.Tensor], k: int, finite: int) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """Values ``lo <= hi`` likely to enclose the ``k``-th smallest finite entry (sample quantiles).

    Non-finite entries (pruned ones) are left out of the sample.

    ``(None, None)`` for small inputs, where ranking every survivor is cheap.
    """
    n = sum(m.numel() for m in masked)
    if n <= 1 << 20:
        return None, None
    stride = max(1, n // (1 << 18))
    sample = torch.cat([m.reshape(-1)[::stride] for m in masked])
    sample = torch.sort(sample[torch.isfinite(sample)]).values
    if sample.numel() <= 100:
        return None, None
    q = k / finite
    margin = 5.0 / sample.numel() ** 0.5 + 1e-4
    last = sample.numel() - 1
    return sample[int(max(0.0, q - margin) * last)], sample[int(min(1.0, q + margin) * last)]


def _kth_in_bracket(
    masked: list[torch.Tensor], k: int, lo: torch.Tensor, hi: torch.Tensor
) -> tuple[torch.Tensor, int, list[torch.Tensor]] | None:
    """``(k-th smallest of all entries, count below lo, per-tensor entries in [lo, hi])``.

    None when the ``k``-th smallest is outside ``[lo, hi]``.
    """
    below = 0
    inside = []
    for m in masked:
        under = m < lo
        below += int(torch.count_nonzero(under))
        in_bracket = m <= hi
        in_bracket ^= under  # lo <= hi: "under" implies "<= hi", so xor leaves lo <= m <= hi
        inside.append(m[in_bracket].cpu())
    rank = k - below
    if not 0 < rank <= sum(b.numel() for b in inside):
        return None
    return torch.kthvalue(torch.cat(inside), rank).values, below, inside


def _check_scores(scores: torch.Tensor, what: str) -> None:
    # a sum is one cheap pass; only a non-finite sum needs the exact NaN search
    if scores.is_floating_point() and not torch.isfinite(scores.sum()) and torch.isnan(scores).any():
        raise ValueError(f"importance scores of {what} contain NaN; every score must be a number")


def is_pruned_tensor(module: nn.Module, name: str) -> bool:
    """Whether tensor ``name`` of ``module`` carries the standard prune state."""
    return name + "_orig" in module._parameters and name + "_mask" in module._buffers


def _find_hook(module: nn.Module, name: str) -> tuple[int, torch_prune.BasePruningMethod] | None:
    for key, hook in module._forward_pre_hooks.items():
        if isinstance(hook, torch_prune.BasePruningMethod) and hook._tensor_name == name:
            return key, hook
    return None


def _describe(module: nn.Module, name: str) -> str:
    return f"'{name}' of {type(module).__name__}"


def _original(module: nn.Module, name: str) -> torch.Tensor:
    """The unmasked tensor: ``<name>_orig`` when pruned, else the parameter itself."""
    if is_pruned_tensor(module, name):
        return module._parameters[name + "_orig"]
    tensor = module._parameters.get(name)
    if tensor is None:
        valid = sorted(k.removesuffix("_orig") for k, v in module._parameters.items() if v is not None)
        raise ValueError(
            f"{type(module).__name__} has no parameter named {name!r}; valid names: {valid}"
        )
    return tensor


def _current_mask(module: nn.Module, name: str) -> torch.Tensor:
    if is_pruned_tensor(module, name):
        return module._buffers[name + "_mask"].bool()
    return torch.ones_like(_original(module, name), dtype=torch.bool)


# Ids of the guarded root forwards now running, innermost last; see tickets.pruning.guard.
_active_forward: list[int] = []


def _stamp(orig: torch.Tensor, mask: torch.Tensor) -> tuple[Any, ...]:
    active = _active_forward[-1] if _active_forward else None
    return (orig._version, mask._version, torch.is_grad_enabled(), active)


def refresh(module: nn.Module, name: str) -> None:
    """Recompute ``module.<name>`` from ``<name>_orig * <name>_mask`` now.

    Pruning hooks only run before the owning module's forward; call this after writing
    into ``<name>_orig`` or the mask outside of a forward (the library does so itself).
    """
    orig = module._parameters[name + "_orig"]
    mask = module._buffers[name + "_mask"]
    weight = (orig * mask).as_subclass(MaskedWeight)
    weight._tickets_stamp = _stamp(orig, mask)
    setattr(module, name, weight)


def refresh_traced(module: nn.Module, name: str) -> None:
    """``module.<name> = <name>_orig * <name>_mask`` as plain tensors, for code traced by
    ``torch.compile``: the product becomes part of the graph (no freshness stamp, no tensor
    subclass, nothing dynamo cannot trace)."""
    setattr(module, name, module._parameters[name + "_orig"] * module._buffers[name + "_mask"])


def _is_fresh(module: nn.Module, name: str) -> bool:
    """Whether ``module.<name>`` was computed in this guarded forward from the current state."""
    if not _active_forward:
        return False
    current = module.__dict__.get(name)
    return getattr(current, "_tickets_stamp", None) == _stamp(
        module._parameters[name + "_orig"], module._buffers[name + "_mask"]
    )


def _set_mask(
    module: nn.Module, name: str, mask: torch.Tensor, method: torch_prune.BasePruningMethod
) -> None:
    """Install or update the prune state of ``module.<name>`` with ``mask`` (in place)."""
    orig = _original(module, name)
    mask = mask.to(device=orig.device, dtype=torch.bool)
    if mask.shape != orig.shape:
        raise ValueError(
            f"mask of shape {tuple(mask.shape)} does not match {_describe(module, name)} "
            f"of shape {tuple(orig.shape)}"
        )
    if not is_pruned_tensor(module, name):
        module.register_parameter(name + "_orig", orig)
        del module._parameters[name]
        module.register_buffer(name + "_mask", mask.clone())
    else:
        buffer = module._buffers[name + "_mask"]
        if buffer.dtype == torch.bool and buffer.shape == mask.shape:
            buffer.copy_(mask)
        else:  # a float mask left by torch's own methods: store it compactly from now on
            module._buffers[name + "_mask"] = mask.clone()
    found = _find_hook(module, name)
    if found is not None:
        del module._forward_pre_hooks[found[0]]
    method._tensor_name = name
    module.register_forward_pre_hook(method)
    with torch.no_grad():
        orig.mul_(module._buffers[name + "_mask"])
    refresh(module, name)


class _TicketsMethod(torch_prune.BasePruningMethod):
    """Shared behaviour: compact masks, in-place rounds, copyable masked weights."""

    PRUNING_TYPE = "unstructured"
    _tensor_name: str

    def __call__(self, module: nn.Module, inputs: Any) -> None:
        if torch.compiler.is_compiling():
            refresh_traced(module, self._tensor_name)
            return
        if not _is_fresh(module, self._tensor_name):  # the model's guard may have done it
            refresh(module, self._tensor_name)

    def _scores(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def compute_mask(self, t: torch.Tensor, default_mask: torch.Tensor) -> torch.Tensor:
        """Mask that removes ``amount`` of the entries of ``t`` that ``default_mask`` keeps.

        Args:
            t: the tensor (or importance scores) to rank; same shape as ``default_mask``.
            default_mask: the mask so far (any dtype; nonzero = surviving).

        Returns:
            A mask of ``default_mask``'s dtype and shape.
        """
        keep = default_mask.bool()
        k = _count_to_prune(self.amount, int(torch.count_nonzero(keep)), "this tensor")
        scores = self._scores(t).detach()
        _check_scores(scores, "this tensor")
        return _drop_lowest([scores], [keep], k)[0].to(default_mask.dtype)

    @classmethod
    def _prepare(cls, module: nn.Module, name: str) -> None:
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module; got {type(module).__name__}")
        if not isinstance(name, str):
            raise TypeError(f"name must be a str naming a parameter; got {name!r}")
        _original(module, name)  # raises for an unknown name

    @classmethod
    def _apply(
        cls,
        module: nn.Module,
        name: str,
        method: _TicketsMethod,
        importance_scores: torch.Tensor | None,
    ) -> _TicketsMethod:
        cls._prepare(module, name)
        orig = _original(module, name)
        mask = _current_mask(module, name)
        if importance_scores is not None:
            if importance_scores.shape != orig.shape:
                raise ValueError(
                    f"importance_scores of shape {tuple(importance_scores.shape)} do not match "
                    f"{_describe(module, name)} of shape {tuple(orig.shape)}"
                )
            scores = importance_scores.detach()
        else:
            scores = orig.detach() * mask  # the current weights, never the cached attribute
        new_mask = method.compute_mask(scores, mask)
        _set_mask(module, name, new_mask, method)
        return method


class MagnitudePruning(_TicketsMethod):
    """Remove the entries of smallest absolute value (unstructured, one tensor at a time).

    Args:
        amount: a float in ``[0, 1]`` is the fraction of the *surviving* entries to remove
            (so 0.2 each round is iterative magnitude pruning); an int is a count.

    Example::

        MagnitudePruning.apply(model.fc, "weight", amount=0.2)   # 20% of what survives
        prune.global_unstructured(params, pruning_method=MagnitudePruning, amount=0.2)
    """

    def __init__(self, amount: int | float) -> None:
        _validate_amount(amount)
        self.amount = amount

    def _scores(self, t: torch.Tensor) -> torch.Tensor:
        return t.abs()

    @classmethod
    def apply(  # type: ignore[override]
        cls,
        module: nn.Module,
        name: str,
        amount: int | float,
        importance_scores: torch.Tensor | None = None,
    ) -> MagnitudePruning:
        """Prune ``module.<name>`` by magnitude; see the class docstring for ``amount``.

        A tensor already pruned (by any method) keeps one mask, updated in place; the
        scores are ``|<name>_orig * mask|`` unless ``importance_scores`` (same shape) is given.
        """
        return cls._apply(module, name, cls(amount), importance_scores)


class RandomPruning(_TicketsMethod):
    """Remove surviving entries uniformly at random: the random-ticket baseline.

    Args:
        amount: float fraction of the surviving entries, or int count.
        seed: seed of the generator; the same seed, tensor and mask give the same mask.
    """

    def __init__(self, amount: int | float, seed: int = 0) -> None:
        _validate_amount(amount)
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed must be an int; got {seed!r}")
        self.amount = amount
        self.seed = int(seed)

    def _scores(self, t: torch.Tensor) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed)
        return torch.rand(t.shape, generator=generator).to(t.device)

    @classmethod
    def apply(  # type: ignore[override]
        cls, module: nn.Module, name: str, amount: int | float, seed: int = 0
    ) -> RandomPruning:
        """Prune ``module.<name>`` at random; ``amount`` as in :class:`MagnitudePruning`."""
        return cls._apply(module, name, cls(amount, seed), None)


class FixedMask(_TicketsMethod):
    """The hook left by :meth:`tickets.Ticket.apply`: a given mask, nothing computed."""

    amount = 0

    def _scores(self, t: torch.Tensor) -> torch.Tensor:
        return t

    @classmethod
    def apply(cls, module: nn.Module, name: str, mask: torch.Tensor) -> FixedMask:  # type: ignore[override]
        """Set the mask of ``module.<name>`` to ``mask`` (binary, same shape)."""
        cls._prepare(module, name)
        method = cls()
        _set_mask(module, name, _binary(mask, _describe(module, name)), method)
        return method


def _binary(mask: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask for {what} must be a tensor; got {type(mask).__name__}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise ValueError(f"mask for {what} must be binary (0/1 or bool); got other values")
    return mask.bool()


def magnitude_prune(
    module: nn.Module,
    name: str,
    amount: int | float,
    importance_scores: torch.Tensor | None = None,
) -> nn.Module:
    """Prune tensor ``name`` of ``module`` by magnitude, in the style of ``prune.l1_unstructured``.

    Args:
        module: the module holding the tensor.
        name: the parameter's name, e.g. ``"weight"``.
        amount: float in ``[0, 1]`` = fraction of surviving entries; int = count.
        importance_scores: optional scores of the tensor's shape to rank by instead.

    Returns:
        ``module``, pruned in place.

    Example::

        tickets.magnitude_prune(model.conv1, "weight", amount=0.2)
    """
    MagnitudePruning.apply(module, name, amount, importance_scores=importance_scores)
    return module


def random_prune(module: nn.Module, name: str, amount: int | float, seed: int = 0) -> nn.Module:
    """Prune tensor ``name`` of ``module`` at random (seeded); see :func:`magnitude_prune`."""
    RandomPruning.apply(module, name, amount, seed=seed)
    return module


def _as_pairs(parameters: Iterable[tuple[nn.Module, str]]) -> list[tuple[nn.Module, str]]:
    if isinstance(parameters, (str, bytes)) or not isinstance(parameters, Iterable):
        raise TypeError(
            f"parameters must be an iterable of (module, name) pairs; got {type(parameters).__name__}"
        )
    pairs = list(parameters)
    if not pairs:
        raise ValueError("parameters is empty: there is nothing to prune")
    seen: dict[int, int] = {}
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], nn.Module)):
            raise TypeError(f"parameters[{i}] must be a (module, name) pair; got {pair!r}")
        tensor = _original(*pair)
        if id(tensor) in seen:
            raise ValueError(
                f"parameters[{i}] ({_describe(*pair)}) is the same tensor as "
                f"parameters[{seen[id(tensor)]}]; list a shared tensor once"
            )
        seen[id(tensor)] = i
    return pairs


def _global_prune(
    pairs: list[tuple[nn.Module, str]],
    amount: int | float,
    scores: list[torch.Tensor],
    make_method: Any,
    scratch: bool = False,
) -> None:
    keeps = [_current_mask(module, name) for module, name in pairs]
    total = sum(int(torch.count_nonzero(keep)) for keep in keeps)
    k = _count_to_prune(amount, total, f"the {len(pairs)} tensors")
    for score, (module, name) in zip(scores, pairs):
        _check_scores(score, _describe(module, name))
    scores = [s.to(keep.device) for s, keep in zip(scores, keeps)]
    for (module, name), new_keep in zip(pairs, _drop_lowest(scores, keeps, k, total, scratch)):
        _set_mask(module, name, new_keep, make_method())


def global_magnitude_prune(
    parameters: Iterable[tuple[nn.Module, str]],
    amount: int | float,
    importance_scores: Mapping[tuple[nn.Module, str], torch.Tensor] | None = None,
) -> None:
    """Prune the smallest-magnitude surviving weights across all ``parameters`` at once.

    The IMP step: ``amount=0.2`` removes exactly ``round(0.2 * surviving)`` entries over all
    tensors together, ranked by ``|<name>_orig * <name>_mask|`` as they are *now* (after a
    rewind or an optimizer step too). Each tensor keeps one bool mask, updated in place, so
    memory does not grow across rounds. Ties are broken by position, deterministically.

    Args:
        parameters: ``(module, name)`` pairs, e.g. from :func:`tickets.prunable_parameters`.
        amount: float in ``[0, 1]`` = fraction of the surviving entries; int = count.
        importance_scores: optional ``{(module, name): scores}`` to rank by instead of the
            magnitude for some tensors (same shape as the tensor).

    Example::

        params = tickets.prunable_parameters(model)
        tickets.global_magnitude_prune(params, amount=0.2)
    """
    pairs = _as_pairs(parameters)
    _validate_amount(amount)
    given = dict(importance_scores or {})
    scores = []
    for module, name in pairs:
        orig = _original(module, name)
        if (module, name) in given:
            score = given.pop((module, name)).detach()
            if score.shape != orig.shape:
                raise ValueError(
                    f"importance_scores for {_describe(module, name)} have shape "
                    f"{tuple(score.shape)}; expected {tuple(orig.shape)}"
                )
        else:
            score = orig.detach().abs()  # a fresh tensor: _drop_lowest may overwrite it
        scores.append(score)
    if given:
        module, name = next(iter(given))
        raise ValueError(f"importance_scores names {_describe(module, name)}, which is not in parameters")
    _global_prune(pairs, amount, scores, lambda: MagnitudePruning(amount), scratch=not importance_scores)


def global_random_prune(
    parameters: Iterable[tuple[nn.Module, str]], amount: int | float, seed: int = 0
) -> None:
    """Prune surviving weights across ``parameters`` uniformly at random (seeded).

    The random-ticket baseline of :func:`global_magnitude_prune`, with the same layer-wise
    budget freedom (the global count is exact) and the same arguments.
    """
    pairs = _as_pairs(parameters)
    _validate_amount(amount)
    generator = torch.Generator().manual_seed(int(seed))
    scores = [torch.rand(_original(m, n).shape, generator=generator) for m, n in pairs]
    _global_prune(pairs, amount, scores, lambda: RandomPruning(amount, seed), scratch=True)


def pruned_parameters(model: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """Every pruned tensor of ``model`` as ``(qualified name, module, tensor name)``.

    The qualified name is the unpruned state_dict key, e.g. ``"layer1.0.conv1.weight"``.
    A tensor shared by several modules (weight tying) appears once per owning module.
    """
    found = []
    for module_name, module in model.named_modules():
        for key in module._buffers:
            if key.endswith("_mask"):
                name = key[: -len("_mask")]
                if is_pruned_tensor(module, name):
                    qualified = f"{module_name}.{name}" if module_name else name
                    found.append((qualified, module, name))
    return found


def masks(model: nn.Module) -> dict[str, torch.Tensor]:
    """The masks of ``model`` as ``{qualified name: bool tensor on CPU}`` (copies).

    A tensor shared by several modules is listed once, under its first owner's name.
    """
    found: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for q, module, name in pruned_parameters(model):
        orig = module._parameters[name + "_orig"]
        if id(orig) not in seen:
            seen.add(id(orig))
            found[q] = module._buffers[name + "_mask"].detach().bool().cpu().clone()
    return found


def share_mask(owners: list[tuple[nn.Module, str]]) -> None:
    """Give every module holding one shared Parameter the same prune state (weight tying).

    ``owners`` are ``(module, name)`` pairs holding the same Parameter as ``<name>`` or
    ``<name>_orig``, at least one of them pruned. Afterwards every owner holds it as
    ``<name>_orig`` with one and the same bool ``<name>_mask`` buffer (the intersection of
    the masks they had) and a pre-hook, so each owner's forward sees the masked weight and a
    round that updates the mask in place reaches them all. :mod:`tickets.guard` calls this.
    """
    pruned = [(m, n) for m, n in owners if is_pruned_tensor(m, n)]
    if not pruned:
        raise ValueError("share_mask needs at least one pruned owner")
    first, first_name = pruned[0]
    keep = _current_mask(first, first_name)
    for module, name in pruned[1:]:
        keep = keep & _current_mask(module, name).to(keep.device)
    found = _find_hook(first, first_name)
    method = found[1] if found is not None and isinstance(found[1], _TicketsMethod) else FixedMask()
    _set_mask(first, first_name, keep, method)
    orig = first._parameters[first_name + "_orig"]
    buffer = first._buffers[first_name + "_mask"]
    for module, name in owners:
        if module is first and name == first_name:
            continue
        if not is_pruned_tensor(module, name):  # the layout of a first prune.apply
            del module._parameters[name]
            module.register_parameter(name + "_orig", orig)
        module._buffers[name + "_mask"] = buffer  # the same tensor object: shared in place
        if _find_hook(module, name) is None:
            hook = FixedMask()
            hook._tensor_name = name
            module.register_forward_pre_hook(hook)
        refresh(module, name)
