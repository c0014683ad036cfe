"""The paper's selection rule: which samples form the next PrAC set, from a round's
forgetting statistics and the dense/pruned disagreement (:class:`SelectionRule`,
:func:`select`). The other rules (hardest-k, easiest-k, random-k, budget-aware) are in
:mod:`tickets.prac.score_rules`; :func:`disagreement` lives in :mod:`tickets.prac.scores`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal
import torch
from tickets.prac.stats import EmptySelectionError
from tickets.prac.scores import ScoreContext, disagreement

__all__ = ['disagreement', 'SelectionRule', 'Selection', 'select']


# ---------------------------------------------------------------------- selection
@dataclass(frozen=True)
class SelectionRule:
    """How the next PrAC set is chosen from the statistics.

    Args:
        threshold: keep samples (shown this round) whose forgetting score is above this
            (default 0: forgotten at least once, or never learned). Ignored when
            ``top_fraction`` is set.
        top_fraction: instead of a threshold, keep this fraction (in ``(0, 1]``) of the samples
            shown this round, highest scores first (ties broken by index).
        per_class: apply ``top_fraction`` within each class, so that every class keeps the
            same fraction of its samples (needs labels).
        min_per_class: every class keeps at least this many samples (its highest scores),
            whatever the rule selected; 0 = no minimum.
        use_disagreement: add the samples on which the dense and pruned models disagree
            (the pruning-aware side); False = forgetting statistics only.
        empty: what to do when nothing is selected: ``"error"`` raises
            :class:`EmptySelectionError`; ``"keep"`` keeps the current set for the next round
            (a documented fallback, recorded in the history as ``"fallback": "kept"``).
    """

    name: ClassVar[str] = "paper"

    threshold: int = 0
    top_fraction: float | None = None
    per_class: bool = False
    min_per_class: int = 0
    use_disagreement: bool = True
    empty: Literal["error", "keep"] = "keep"

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or self.threshold < 0:
            raise ValueError(f"threshold must be an int >= 0 (a forgetting count); got {self.threshold!r}")
        if self.top_fraction is not None and not 0.0 < float(self.top_fraction) <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1] or None; got {self.top_fraction!r}")
        if self.per_class and self.top_fraction is None:
            raise ValueError("per_class=True needs top_fraction (the fraction every class keeps)")
        if isinstance(self.min_per_class, bool) or not isinstance(self.min_per_class, int) or self.min_per_class < 0:
            raise ValueError(f"min_per_class must be an int >= 0; got {self.min_per_class!r}")
        if self.empty not in ("error", "keep"):
            raise ValueError(f"empty must be 'error' or 'keep'; got {self.empty!r}")

    def to_dict(self) -> dict[str, Any]:
        """The rule's fields (part of a PrAC search's fingerprint; without a ``"rule"`` key, so
        fingerprints of searches saved before the other rules existed are unchanged)."""
        return asdict(self)

    def scores(self) -> dict[str, dict[str, Any]]:
        """The scores the rule ranks by: forgetting statistics and the disagreement pass."""
        return {"forgetting": {}, "disagreement": {}}

    def choose(self, values: Mapping[str, torch.Tensor], context: ScoreContext) -> Selection:
        """:func:`select` on the scores' ``values`` (the rules' common interface, see
        :mod:`tickets.prac.score_rules`): forgetting scores (``NaN`` = not shown), union the
        disagreeing samples (none in round 0)."""
        forgetting = values["forgetting"]
        scores = torch.where(forgetting.isnan(), -1.0, forgetting).long()
        disagree = values.get("disagreement")
        if disagree is not None and bool(disagree.isnan().any()):
            disagree = None  # round 0: no pruned model to disagree with
        return select(scores, disagree=None if disagree is None else disagree.eq(1), targets=context.targets,
                      rule=self, current=context.current)


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select`.

    Attributes:
        indices: the next PrAC set (sorted ``LongTensor``), or the current set after an
            ``empty="keep"`` fallback.
        info: JSON-able counts: ``hard`` (selected by forgetting statistics), ``disagree``
            (disagreeing samples), ``added_by_disagreement`` (in the set only because of
            disagreement), ``size``, ``fraction``, ``fallback``.
    """

    indices: torch.Tensor
    info: dict[str, Any]


def _top(scores: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` highest scores among ``candidates`` (ties: lower index first)."""
    if count <= 0 or candidates.numel() == 0:
        return candidates[:0]
    s = scores[candidates]
    # Stable sort on -score keeps index order among ties: deterministic.
    order = torch.sort(-s, stable=True).indices
    return candidates[order[:count]]


def select(
    scores: torch.Tensor,
    *,
    disagree: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    rule: SelectionRule | None = None,
    current: torch.Tensor | None = None,
) -> Selection:
    """The next PrAC set: hard-to-memorize samples (by ``rule``) union disagreeing samples.

    Args:
        scores: forgetting score per sample of the full split (:meth:`SampleStats.scores`;
            ``-1`` = not shown this round, never selected by the forgetting side).
        disagree: bool per sample (:func:`disagreement`) or None (round 0, or no pruning side).
        targets: labels per sample, needed for ``per_class`` and ``min_per_class``.
        rule: the selection rule (default :class:`SelectionRule()`: score > 0, union).
        current: the current set, kept by the ``empty="keep"`` fallback.

    Raises:
        EmptySelectionError: nothing selected and ``rule.empty == "error"`` (or no ``current``
            to fall back to).
        ValueError: ``per_class``/``min_per_class`` without ``targets``; mismatched lengths.
    """
    rule = rule or SelectionRule()
    scores = scores.cpu().long()
    n = scores.numel()
    seen = scores >= 0
    hard = torch.zeros(n, dtype=torch.bool)
    if (rule.per_class or rule.min_per_class) and targets is None:
        raise ValueError("per_class and min_per_class need targets (one label per sample)")
    if targets is not None:
        targets = targets.cpu().long()
        if targets.numel() != n:
            raise ValueError(f"targets has {targets.numel()} entries; scores has {n}")
    if rule.top_fraction is None:
        hard = seen & (scores > rule.threshold)
    elif rule.per_class:
        assert targets is not None
        for c in torch.unique(targets).tolist():  # loop over classes, not samples
            members = (seen & (targets == c)).nonzero().flatten()
            keep = _top(scores, members, int(round(rule.top_fraction * members.numel())))
            hard[keep] = True
    else:
        members = seen.nonzero().flatten()
        hard[_top(scores, members, int(round(rule.top_fraction * members.numel())))] = True
    if rule.min_per_class:
        assert targets is not None
        for c in torch.unique(targets).tolist():
            members = (seen & (targets == c)).nonzero().flatten()
            have = int(hard[members].sum())
            if have < rule.min_per_class:
                rest = members[~hard[members]]
                hard[_top(scores, rest, rule.min_per_class - have)] = True
    chosen = hard.clone()
    n_disagree = 0
    if disagree is not None and rule.use_disagreement:
        disagree = disagree.cpu().bool()
        if disagree.numel() != n:
            raise ValueError(f"disagree has {disagree.numel()} entries; scores has {n}")
        chosen |= disagree
        n_disagree = int(disagree.sum())
    info: dict[str, Any] = {
        "hard": int(hard.sum()),
        "disagree": n_disagree,
        "added_by_disagreement": int((chosen & ~hard).sum()),
        "fallback": None,
    }
    indices = chosen.nonzero().flatten()
    if indices.numel() == 0:
        if rule.empty == "error" or current is None:
            raise EmptySelectionError(
                "the PrAC selection is empty: no sample shown this round was forgotten or never "
                f"learned (threshold={rule.threshold}, top_fraction={rule.top_fraction}) and the "
                "dense and pruned models agree on every sample. Use SelectionRule(empty='keep') to "
                "keep the current set, a top_fraction rule, or a longer schedule"
            )
        indices = current.cpu().long().clone()
        info["fallback"] = "kept"
    info["size"] = int(indices.numel())
    info["fraction"] = indices.numel() / n
    return Selection(indices, info)
