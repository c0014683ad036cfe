"""The PrAC sampler.

:class:`PrACSampler` is a ``torch.utils.data.Sampler`` over the current *Pruning-Aware
Critical set* (all indices of the data set at first). ``tickets.prune`` replaces the set
after every round with the samples that are hard to memorize or easy to forget under
pruning (:mod:`tickets.prac.stats`, :mod:`tickets.prac.rules`); between rounds it is an
ordinary sampler that any ``DataLoader`` accepts (``batch_size``, ``num_workers > 0``,
``persistent_workers``, prefetching).

Per-sample statistics never rely on the sampler and the loader staying in step (with
workers and prefetching the loader runs ahead of the training step). Instead
:class:`tickets.data.sampling.IndexedDataset` returns ``(input, target, index)``: the index
travels inside the batch with its sample, through worker processes and the default collate
function, so every prediction is attributed to the sample it was made on.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any
import torch
from torch.utils.data import Dataset, Sampler
from tickets.data.sampling import _seed_for, targets_of
from tickets.data.splits import stratified_subset
from tickets.prac.score_rules import Rule, resolve_rule

__all__ = ['PrACSampler', 'random_sets_like']


def _as_index_tensor(indices: Sequence[int] | torch.Tensor, size: int, argument: str) -> torch.Tensor:
    t = torch.as_tensor(indices if isinstance(indices, torch.Tensor) else list(indices))
    if t.dtype == torch.bool:
        if t.numel() != size:
            raise ValueError(f"{argument} as a bool mask must have {size} entries (one per sample); got {t.numel()}")
        t = t.nonzero().flatten()
    if t.dim() != 1 or (t.numel() and (t.dtype.is_floating_point or t.dtype.is_complex)):
        raise TypeError(f"{argument} must be a 1-d sequence of integer indices or a bool mask; got {t.dtype} of shape {tuple(t.shape)}")
    t = t.long().cpu()
    if t.numel() == 0:
        raise ValueError(f"{argument} is empty: a PrAC set needs at least one sample")
    low, high = int(t.min()), int(t.max())
    if low < 0 or high >= size:
        bad = low if low < 0 else high
        raise ValueError(f"{argument} holds index {bad}, outside the data set's range [0, {size})")
    unique = torch.unique(t)  # sorted, duplicates removed
    return unique


class PrACSampler(Sampler[int]):
    """A sampler over the current PrAC set of ``data_source`` (every sample at first).

    Each epoch yields every index of the current set once, shuffled with a generator seeded
    by ``(seed, round, epoch)``: the order is reproducible, independent of the global RNG,
    and the same after a resumed run. ``tickets.prune`` calls :meth:`update` after each
    round; :attr:`history` records how each round's set was built.

    Example::

        sampler = PrACSampler(train_set, seed=0)
        ticket = tickets.prune(model, sampler, rounds=5, epochs=30)
        sampler.indices, len(sampler), sampler.fraction, sampler.history[-1]

    To reuse the PrAC sets found with one architecture for another one, see :meth:`replay`.

    Args:
        data_source: the training data set (a map-style ``Dataset`` with ``len``).
        shuffle: shuffle the set every epoch (False: increasing index order).
        seed: seed of the shuffling; any int (0 is a seed like any other).
        indices: the initial set (indices or a bool mask over ``data_source``); None = all.
        selection: how a search picks the next set after each round: a rule name
            (``"paper"``, ``"el2n"``, ``"easiest"``, ``"forgetting"``, ``"random"``,
            ``"budget"``; :data:`tickets.prac.score_rules.RULES`) or a rule object
            (:class:`tickets.SelectionRule`, :class:`tickets.ScoreRule`,
            :class:`tickets.BudgetRule`, :class:`tickets.RandomRule`); None = the paper's rule
            (or ``PrACOptions.selection``). See ``docs/prac.md``.

    Raises:
        ValueError: an unknown rule name (the message lists the valid ones).
    """

    def __init__(
        self,
        data_source: Dataset,
        *,
        shuffle: bool = True,
        seed: int = 0,
        indices: Sequence[int] | torch.Tensor | None = None,
        selection: str | Rule | None = None,
    ) -> None:
        try:
            size = len(data_source)  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"data_source must be a map-style Dataset with a length; got {type(data_source).__name__}"
            ) from None
        if size < 1:
            raise ValueError("data_source is empty: a PrAC set needs at least one sample")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {seed!r}")
        self.data_source = data_source
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.num_samples = size
        self._indices = torch.arange(size) if indices is None else _as_index_tensor(indices, size, "indices")
        self.epoch = 0
        self.round = 0
        self.history: list[dict[str, Any]] = []
        self._plan: list[torch.Tensor] | None = None
        self.selection: Rule | None = None if selection is None else resolve_rule(selection)

    # ------------------------------------------------------------------ the set
    @property
    def indices(self) -> torch.Tensor:
        """The current set: sorted sample indices into ``data_source`` (a copy)."""
        return self._indices.clone()

    @property
    def fraction(self) -> float:
        """``len(self) / len(data_source)``: the ``r`` that scales the round's schedule."""
        return len(self._indices) / self.num_samples

    @property
    def adaptive(self) -> bool:
        """True when the set is rebuilt from statistics after each round (False for :meth:`replay`)."""
        return self._plan is None

    def __len__(self) -> int:
        return len(self._indices)

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(_seed_for(self.seed, self.round, self.epoch))
            order = self._indices[torch.randperm(len(self._indices), generator=generator)]
        else:
            order = self._indices
        return iter(order.tolist())

    def set_epoch(self, epoch: int) -> None:
        """Use the data order of ``epoch`` (of the current round) on the next iteration."""
        self.epoch = int(epoch)

    def begin_round(self, round_index: int) -> None:
        """Start round ``round_index``: a replayed sampler switches to that round's set.

        Called by ``tickets.prune``; an adaptive sampler keeps the set :meth:`update` chose.
        """
        self.round = int(round_index)
        self.epoch = 0
        if self._plan is not None:
            self._indices = self._plan[min(self.round, len(self._plan) - 1)]

    def update(self, indices: Sequence[int] | torch.Tensor, *, info: dict[str, Any] | None = None) -> None:
        """Replace the set (indices or a bool mask) and record how it was built.

        Args:
            indices: the new set; duplicates are dropped, order does not matter.
            info: JSON-able facts about the selection (counts of forgotten, never-learned and
                disagreeing samples, the rule...), stored in :attr:`history` with the size.

        Raises:
            ValueError: an empty set or an index outside the data set.
        """
        self._indices = _as_index_tensor(indices, self.num_samples, "indices")
        entry = {"after_round": self.round, "size": len(self._indices), "fraction": self.fraction}
        entry.update(info or {})
        self.history.append(entry)

    # ------------------------------------------------------------------ reuse
    @classmethod
    def replay(
        cls,
        data_source: Dataset,
        sets: Sequence[Sequence[int] | torch.Tensor],
        *,
        shuffle: bool = True,
        seed: int = 0,
    ) -> PrACSampler:
        """A sampler that uses fixed, given sets: ``sets[k]`` in round ``k``.

        This is how a PrAC set found with one architecture is reused for another on the same
        data: pass the sets of the first run (``tickets.load_prac_sets(checkpoint_dir)``
        or ``[first_sampler.indices]``). Rounds after the last set keep using the last set.
        No statistics are needed to update it, so ``tickets.prune`` skips the disagreement
        pass for a replayed sampler.

        Args:
            data_source: the training data set (the same as the run that found the sets).
            sets: one set per round (index sequences or bool masks); at least one.
            shuffle, seed: as for the constructor.
        """
        if isinstance(sets, torch.Tensor) or not isinstance(sets, Sequence) or len(sets) == 0:
            raise ValueError("sets must be a non-empty list with one set of indices per round")
        sampler = cls(data_source, shuffle=shuffle, seed=seed)
        sampler._plan = [_as_index_tensor(s, sampler.num_samples, f"sets[{i}]") for i, s in enumerate(sets)]
        sampler._indices = sampler._plan[0]
        return sampler

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The sampler's state (set, round, epoch, history) for resumable runs."""
        return {
            "indices": self._indices.clone(),
            "round": self.round,
            "epoch": self.epoch,
            "seed": self.seed,
            "history": [dict(h) for h in self.history],
            "plan": None if self._plan is None else [p.clone() for p in self._plan],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state from :meth:`state_dict` (the data set must have the same length)."""
        indices = torch.as_tensor(state["indices"]).long()
        if indices.numel() and int(indices.max()) >= self.num_samples:
            raise ValueError(
                f"the saved PrAC set holds index {int(indices.max())} but the data set has "
                f"{self.num_samples} samples: it was saved for another data set"
            )
        self._indices = indices
        self.round = int(state["round"])
        self.epoch = int(state["epoch"])
        self.history = [dict(h) for h in state["history"]]
        plan = state.get("plan")
        self._plan = None if plan is None else [torch.as_tensor(p).long() for p in plan]

    def __repr__(self) -> str:
        kind = "adaptive" if self.adaptive else "replay"
        return (
            f"PrACSampler({len(self):,} of {self.num_samples:,} samples ({self.fraction:.1%}), "
            f"{kind}, shuffle={self.shuffle}, seed={self.seed}, round {self.round})"
        )


def _labels_of(train_set_or_targets: Dataset | Sequence[int] | torch.Tensor) -> torch.Tensor:
    """The class labels of a training set (its ``targets``, else read item by item), or the
    given labels themselves."""
    if isinstance(train_set_or_targets, Dataset):
        found = targets_of(train_set_or_targets)
        if found is not None:
            return found
        try:
            return torch.tensor([int(train_set_or_targets[i][1]) for i in range(len(train_set_or_targets))])  # type: ignore[arg-type]
        except (TypeError, IndexError, ValueError) as e:
            raise TypeError(
                f"random_sets_like needs class labels: {type(train_set_or_targets).__name__} has no targets and its "
                f"items are not (input, label) pairs ({e}); pass the labels instead"
            ) from None
    return torch.as_tensor(train_set_or_targets if isinstance(train_set_or_targets, torch.Tensor)
                           else list(train_set_or_targets))


def random_sets_like(train_set_or_targets: Dataset | Sequence[int] | torch.Tensor, sizes: Sequence[int | None],
                     seed: int = 0) -> list[torch.Tensor]:
    """Class-stratified random sets of given sizes, one per round: the random-subset baseline
    of a PrAC search.

    Round 0 gets every index (the dense training on all the data); round ``k >= 1`` a random
    subset of ``sizes[k]`` samples that keeps the split's class proportions
    (:func:`tickets.data.splits.stratified_subset`), drawn with its own seed derived from
    ``(seed, k)``, so rounds are independent draws and the sets are the same on every machine.
    Replay them as ``PrACSampler.replay(train_set, sets, seed=seed)``: a replayed sampler gets
    the schedule a PrAC round of the same set size gets (scaled, with the floor), so taking
    ``sizes`` from a PrAC search (``[len(s) for s in tickets.load_prac_sets(folder)]``, or its
    history's ``set_size``) gives a search with exactly its optimizer steps per round.

    Args:
        train_set_or_targets: the training set (its ``targets``, or the labels of its
            ``(input, label)`` items) or the class labels of its samples.
        sizes: one size per round; ``sizes[0]`` is the whole split (``N``) or None.
        seed: the seed every round's draw is derived from (any int).

    Returns:
        One sorted int64 index tensor per round.

    Raises:
        ValueError: no sizes, ``sizes[0]`` other than ``N`` or None, a size outside ``[1, N]``.
        TypeError: no class labels to be found, sizes that are not ints.
    """
    labels = _labels_of(train_set_or_targets)
    n = len(labels)
    if isinstance(sizes, (str, bytes, torch.Tensor)) or not isinstance(sizes, Sequence) or len(sizes) == 0:
        raise ValueError(f"sizes must be a non-empty list with one set size per round (sizes[0] = {n} or None); got {sizes!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {seed!r}")
    if sizes[0] is not None and sizes[0] != n:
        raise ValueError(f"sizes[0] is {sizes[0]!r}: round 0 trains on all {n} samples; pass {n} or None there")
    sets = [torch.arange(n)]
    for k, size in enumerate(sizes[1:], start=1):
        if isinstance(size, bool) or not isinstance(size, int):
            raise TypeError(f"sizes[{k}] must be an int in [1, {n}]; got {size!r}")
        if not 1 <= size <= n:
            raise ValueError(f"sizes[{k}] is {size}: a set size must be in [1, {n}] (the split has {n} samples)")
        sets.append(stratified_subset(labels, size, _seed_for(seed, k)))
    return sets
