"""Splitting a data set's samples: the validation split of a training set, class-balanced
subsets, class-stratified random subsets and stratified splits (positions only; the data
sets themselves are in :mod:`tickets.data.datasets`).
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
import numpy as np
import torch

__all__ = ['validation_indices', 'balanced_subset', 'stratified_subset', 'stratified_split']


def validation_indices(targets: Sequence[int], val_size: int) -> list[int]:
    """Indices of the validation split taken from a training set.

    The reference holds out the *last* ``val_size`` indices. That is a random class mix for
    torchvision's CIFAR (stored in shuffled order), but for an image folder, whose samples are
    sorted by class, it would be whole classes; so when ``targets`` are sorted, the last
    ``val_size / num_classes`` samples of every class are taken instead (the first classes
    take one extra each when it does not divide evenly).
    """
    n = len(targets)
    if not 0 <= val_size < n:
        raise ValueError(f"val_size must be in [0, {n}) for a training set of {n} samples, got {val_size}")
    if val_size == 0:
        return []
    t = np.asarray(targets)
    if not np.all(t[1:] >= t[:-1]):
        return list(range(n - val_size, n))
    classes = np.unique(t)
    per, extra = divmod(val_size, len(classes))
    chosen: list[int] = []
    for k, c in enumerate(classes):
        members = np.flatnonzero(t == c)
        take = per + (1 if k < extra else 0)
        if take >= len(members):
            raise ValueError(f"val_size={val_size} leaves no training images of class {int(c)} ({len(members)} images)")
        chosen.extend(members[len(members) - take :].tolist())
    return sorted(chosen)


def balanced_subset(targets: Sequence[int], size: int, seed: int = 0) -> list[int]:
    """``size`` positions drawn without replacement, as evenly over classes as possible.

    Deterministic for a given ``seed``; returned sorted. Used for reduced-size runs.
    """
    n = len(targets)
    if not 0 < size <= n:
        raise ValueError(f"subset size must be in [1, {n}], got {size}")
    t = np.asarray(targets)
    rng = np.random.default_rng(seed)
    classes = np.unique(t)
    pools = [rng.permutation(np.flatnonzero(t == c)).tolist() for c in classes]
    chosen: list[int] = []
    # round-robin over classes so that small classes simply run out
    while len(chosen) < size:
        for pool in pools:
            if pool and len(chosen) < size:
                chosen.append(pool.pop())
    return sorted(chosen)


def _class_labels(targets: Sequence[int] | torch.Tensor | np.ndarray) -> np.ndarray:
    """``targets`` as a 1-d int64 array of class labels, checked."""
    t = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
    if t.ndim != 1 or (t.size and not np.issubdtype(t.dtype, np.integer)):
        raise TypeError(f"targets must be a 1-d sequence of integer class labels; got {t.dtype} of shape {t.shape}")
    if t.size == 0:
        raise ValueError("targets is empty: a subset needs at least one sample")
    return t.astype(np.int64, copy=False)


def stratified_subset(targets: Sequence[int] | torch.Tensor | np.ndarray, size: int, seed: int = 0) -> torch.Tensor:
    """A random subset of ``size`` positions that keeps the class proportions of the split.

    Class ``c``, with ``n_c`` of the ``N`` samples, gets ``size * n_c / N`` places rounded by
    the largest-remainder rule: every class first gets the floor of its share, then the
    classes with the largest fractional parts (ties: the smaller label first) get one more
    each until ``size`` is reached. So each class's count is within 1 of its exact share and
    the counts add up to ``size``. The members of each class are drawn without replacement with
    ``numpy.random.default_rng(seed)``: the same ``targets``, ``size`` and ``seed`` give the
    same subset on every machine.

    Args:
        targets: the class label of every sample of the split (a sequence, tensor or array).
        size: how many positions to draw, an int in ``[1, N]`` (``N`` = the whole split).
        seed: the draw's seed, an int >= 0.

    Returns:
        The chosen positions, sorted, as an int64 tensor.

    Raises:
        ValueError: ``size`` outside ``[1, N]``, a negative ``seed``, empty ``targets``.
        TypeError: ``targets`` not 1-d integer labels, ``size`` or ``seed`` not an int.
    """
    t = _class_labels(targets)
    n = len(t)
    if isinstance(size, bool) or not isinstance(size, numbers.Integral):
        raise TypeError(f"size must be an int in [1, {n}]; got {size!r}")
    if not 1 <= size <= n:
        raise ValueError(f"size must be in [1, {n}] (the split has {n} samples); got {size}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    classes, counts = np.unique(t, return_counts=True)
    quota, remainder = np.divmod(int(size) * counts, n)  # exact integer shares: floor and fractional part * N
    order = sorted(range(len(classes)), key=lambda i: (-int(remainder[i]), i))
    for i in order[: int(size) - int(quota.sum())]:
        quota[i] += 1
    rng = np.random.default_rng(int(seed))
    chosen = [rng.choice(np.flatnonzero(t == c), size=int(q), replace=False) for c, q in zip(classes, quota)]
    return torch.from_numpy(np.sort(np.concatenate(chosen)).astype(np.int64))


def stratified_split(
    targets: Sequence[int], fractions: Sequence[float], seed: int = 0, class_names: Sequence[str] | None = None
) -> list[list[int]]:
    """Split positions ``0..N-1`` class by class into a remainder and one part per fraction.

    Every class's samples are shuffled (``numpy.random.default_rng(seed)``, so the split is
    reproducible) and part ``j`` takes ``round(fractions[j] * n_c)`` of a class's ``n_c``
    samples, at least one when ``fractions[j] > 0``, so every class is in every nonzero part;
    the remainder keeps the rest.

    Args:
        targets: the class index of every sample.
        fractions: one fraction in ``[0, 1)`` per part; their sum must be below 1.
        seed: seed of the shuffles.
        class_names: names of the class indices, for error messages.

    Returns ``[remainder, part_1, ..., part_k]``, each a sorted list of positions.

    Raises:
        ValueError: a fraction out of range, or a class too small to give every nonzero part
            one sample and keep one (the message names the class and its count).
    """
    if any(not 0.0 <= f < 1.0 for f in fractions) or sum(fractions) >= 1.0:
        raise ValueError(f"fractions must lie in [0, 1) and sum to less than 1; got {list(fractions)}")
    t = np.asarray(targets)
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for c in np.unique(t):
        members = rng.permutation(np.flatnonzero(t == c))
        takes = [max(1, round(f * len(members))) if f > 0 else 0 for f in fractions]
        if sum(takes) >= len(members):
            name = class_names[int(c)] if class_names is not None else int(c)
            raise ValueError(
                f"class {name!r} has {len(members)} samples: too few to hold out {sum(takes)} "
                f"(fractions {list(fractions)}, at least one each) and keep one for training"
            )
        start = sum(takes)
        parts[0].extend(members[start:].tolist())
        for j, take in enumerate(takes):
            begin = sum(takes[:j])
            parts[j + 1].extend(members[begin : begin + take].tolist())
    return [sorted(p) for p in parts]
