"""Selection rules that compose sample scores with a budget, and rules by name.

Every rule has the same small interface:

* ``rule.scores()``: ``{score name: options}``, the scores (:mod:`tickets.prac.scores`) it
  ranks by; a search records or computes exactly those (the extra prediction pass only when
  a score needs it);
* ``rule.choose(values, context)``: the next set (a :class:`tickets.prac.rules.Selection`)
  from ``{score name: values}`` and the :class:`~tickets.prac.scores.ScoreContext`;
* ``rule.to_dict()``: its name and parameters (part of a search's fingerprint).

The rules:

* ``"paper"``: :class:`tickets.SelectionRule` (the PrAC paper's rule, the default);
* ``"el2n"``, ``"easiest"``, ``"forgetting"``: :class:`ScoreRule`, the hardest-k or
  easiest-k samples by a score;
* ``"random"``: :class:`RandomRule`, a class-stratified random-k;
* ``"budget"``: :class:`BudgetRule`, hard and easy samples mixed by the next round's step
  budget (Sorscher et al. 2022).

The set size ``k`` of the last three is the paper's rule's (``fraction=None``: the size of the
set the paper's rule would choose from the same round) or ``round(fraction * N)``.
Everything a rule uses is the same on every process of a ``torch.distributed`` run (the
scores are combined over the processes, the draws seeded), so every process picks the same set.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, ClassVar, Literal, Union
import torch
from tickets.data.sampling import _seed_for
from tickets.data.splits import stratified_subset
from tickets.prac.rules import Selection, SelectionRule
from tickets.prac.scores import ScoreContext, ScoreRecord, new_record, score_class
from tickets.prac.stats import EmptySelectionError, SampleStats

__all__ = ['ScoreRule', 'RandomRule', 'BudgetRule', 'RULES', 'Rule', 'resolve_rule', 'pick_rule', 'record_for',
           'choose_next', 'needs_pass', 'carries']


def _check_fraction(value: Any, name: str, *, none_means: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) <= 1.0:
        raise ValueError(f"{name} must be a fraction of the training split in (0, 1], or None ({none_means}); got {value!r}")


def _check_seed(seed: Any) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")


@dataclass(frozen=True, kw_only=True)
class _SizedRule:
    """What the rules sized like the paper's rule share: ``fraction`` and ``seed``."""

    kind: ClassVar[str] = ""
    needs_targets: ClassVar[bool] = False

    fraction: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        _check_fraction(self.fraction, "fraction", none_means="the paper's rule's set size")
        _check_seed(self.seed)

    def to_dict(self) -> dict[str, Any]:
        """``{"rule": kind, **fields}``: the rule's name and parameters (the fingerprint's ``selection``)."""
        return {"rule": self.kind, **asdict(self)}

    def _size_scores(self) -> dict[str, dict[str, Any]]:
        return {"forgetting": {}, "disagreement": {}} if self.fraction is None else {}

    def size(self, values: Mapping[str, torch.Tensor], context: ScoreContext) -> int:
        """The set size ``k``: ``round(fraction * N)`` (at least 1), or with ``fraction=None`` the
        size of the set :class:`SelectionRule` () would choose from the same values."""
        n = context.num_samples
        if self.fraction is not None:
            return min(n, max(1, int(math.floor(float(self.fraction) * n + 0.5))))
        return int(SelectionRule().choose(values, context).info["size"])


def _ranked(values: torch.Tensor, skip_hardest: float) -> tuple[torch.Tensor, int]:
    """The samples with a value, hardest first (ties: the lower index first), without the
    ``skip_hardest`` fraction at the top; and the number of samples with a value."""
    values = values.cpu().double()
    candidates = (~values.isnan()).nonzero().flatten()
    order = candidates[torch.sort(-values[candidates], stable=True).indices]
    skip = int(math.floor(skip_hardest * order.numel()))
    return order[skip:], int(candidates.numel())


def _selection(chosen: torch.Tensor, n: int, info: dict[str, Any], context: ScoreContext) -> Selection:
    """A :class:`Selection` of ``chosen`` (the current set when empty, ``"fallback": "kept"``)."""
    indices = torch.unique(chosen.long())
    info["fallback"] = None
    if indices.numel() == 0:
        if context.current is None:
            raise EmptySelectionError(f"the {info.get('rule')} rule selected no sample (no sample has a value)")
        indices, info["fallback"] = context.current.cpu().long().clone(), "kept"
    info["size"] = int(indices.numel())
    info["fraction"] = indices.numel() / n
    return Selection(indices, info)


def _score_options(score: str, el2n_epochs: int | None, seed: int) -> dict[str, Any]:
    if score == "el2n":
        return {"first_epochs": el2n_epochs}
    if score == "random":
        return {"seed": seed}
    return {}


@dataclass(frozen=True, kw_only=True)
class _ScoreBased(_SizedRule):
    """The fields of the rules that rank by one score."""

    score: str = "el2n"
    skip_hardest: float = 0.0
    el2n_epochs: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        score_class(self.score)  # a ValueError listing the valid scores
        if isinstance(self.skip_hardest, bool) or not isinstance(self.skip_hardest, (int, float)) \
                or not 0.0 <= float(self.skip_hardest) < 1.0:
            raise ValueError(f"skip_hardest must be a fraction in [0, 1) of the ranked samples; got {self.skip_hardest!r}")
        if self.el2n_epochs is not None and (isinstance(self.el2n_epochs, bool) or not isinstance(self.el2n_epochs, int)
                                             or self.el2n_epochs < 1):
            raise ValueError(f"el2n_epochs must be an int >= 1 (the round's first epochs) or None (all); got {self.el2n_epochs!r}")

    def scores(self) -> dict[str, dict[str, Any]]:
        """The ranking score (with its options) and, for the paper's set size, its scores."""
        return {**self._size_scores(), self.score: _score_options(self.score, self.el2n_epochs, self.seed)}


@dataclass(frozen=True, kw_only=True)
class ScoreRule(_ScoreBased):
    """Hardest-k (or easiest-k) samples by one score.

    The ``k`` samples with the highest values of ``score`` (``order="easiest"``: the lowest),
    among the samples that have a value: for ``"el2n"`` every sample from round 1 on (a
    sample not shown this round keeps its latest value), for ``"forgetting"`` the samples
    shown this round (that set can only shrink, as the paper's forgetting side). Ties go to
    the lower index.

    Args:
        score: the score's name (:data:`tickets.prac.scores.SCORES`: ``"el2n"``,
            ``"forgetting"``, ``"disagreement"``, ``"random"``, or one added with
            :func:`tickets.prac.scores.register_score`).
        order: ``"hardest"`` (highest values) or ``"easiest"`` (lowest).
        fraction: the set size as a fraction of the training split; None = the size the
            paper's rule would choose from the same round.
        skip_hardest: leave out this fraction of the ranked samples at the hard end first
            (Paul et al. skip the very hardest, often mislabelled, samples); 0 = none.
        el2n_epochs: with ``score="el2n"``, average over the round's first this many epochs
            only (:class:`tickets.prac.scores.EL2N`'s ``first_epochs``); None = all epochs.
        seed: the seed of ``score="random"``.
    """

    kind: ClassVar[str] = "score"
    order: Literal["hardest", "easiest"] = "hardest"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.order not in ("hardest", "easiest"):
            raise ValueError(f"order must be 'hardest' or 'easiest'; got {self.order!r}")

    def choose(self, values: Mapping[str, torch.Tensor], context: ScoreContext) -> Selection:
        """The ``k`` hardest (easiest) ranked samples; ``info`` says how many had a value."""
        ranked, candidates = _ranked(values[self.score], float(self.skip_hardest))
        requested = self.size(values, context)
        k = min(requested, ranked.numel())
        chosen = ranked[:k] if self.order == "hardest" else ranked[ranked.numel() - k:]
        info = {"rule": self.kind, "score": self.score, "order": self.order, "requested": requested,
                "candidates": candidates, "hard": k if self.order == "hardest" else 0,
                "easy": k if self.order == "easiest" else 0}
        return _selection(chosen, context.num_samples, info, context)


@dataclass(frozen=True, kw_only=True)
class BudgetRule(_ScoreBased):
    """A set whose mix of hard and easy samples follows the next round's step budget
    (Sorscher et al., NeurIPS 2022: with a small budget keep the easy, prototypical samples,
    with a large one the hard ones).

    With ``b`` = the optimizer steps the next round trains on a set of ``k`` samples over the
    steps of a full round (every sample, unscaled schedule, from the rewind point: what
    ``r**2`` with the step floor, or a ``round_steps`` budget, gives), the hard share is
    ``h = clamp((b - low) / (high - low), 0, 1)`` (``h = b`` by default) and the set is the
    ``n_hard = floor(h * k + 1/2)`` hardest ranked samples plus the ``k - n_hard`` easiest
    (ranked as in :class:`ScoreRule`, after ``skip_hardest``).

    Args:
        score, fraction, skip_hardest, el2n_epochs, seed: as for :class:`ScoreRule`.
        low: at or below this budget the set is all easy samples (a fraction of a full
            round's steps, >= 0).
        high: at or above this budget it is all hard samples (> ``low``).
    """

    kind: ClassVar[str] = "budget"
    low: float = 0.0
    high: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("low", "high"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a budget (a fraction of a full round's steps) >= 0; got {value!r}")
        if not float(self.low) < float(self.high):
            raise ValueError(f"low must be below high (all easy at or below low, all hard at or above high); got "
                             f"low={self.low!r}, high={self.high!r}")

    def hard_fraction(self, budget: float) -> float:
        """``h = clamp((budget - low) / (high - low), 0, 1)``: the hard share of the set."""
        return min(1.0, max(0.0, (float(budget) - float(self.low)) / (float(self.high) - float(self.low))))

    def choose(self, values: Mapping[str, torch.Tensor], context: ScoreContext) -> Selection:
        """``n_hard`` hardest plus ``k - n_hard`` easiest; ``info`` has the budget and the mix."""
        if context.step_fraction is None:
            raise ValueError("the budget rule needs the next round's step budget (context.step_fraction): use it "
                             "in a search (tickets.prune, TicketSearch), which provides it")
        ranked, candidates = _ranked(values[self.score], float(self.skip_hardest))
        requested = self.size(values, context)
        k = min(requested, ranked.numel())
        budget = float(context.step_fraction(k)) if k else 0.0
        share = self.hard_fraction(budget)
        n_hard = int(math.floor(share * k + 0.5))
        chosen = torch.cat([ranked[:n_hard], ranked[ranked.numel() - (k - n_hard):]])
        info = {"rule": self.kind, "score": self.score, "requested": requested, "candidates": candidates,
                "budget": round(budget, 6), "hard_fraction": round(share, 6), "hard": n_hard, "easy": k - n_hard}
        return _selection(chosen, context.num_samples, info, context)


@dataclass(frozen=True, kw_only=True)
class RandomRule(_SizedRule):
    """``k`` samples drawn at random, keeping the split's class proportions
    (:func:`tickets.data.splits.stratified_subset`; without labels, uniformly), with a seed
    derived from ``(seed, next round)``: the same draw as :func:`tickets.random_sets_like`
    makes for that round and size, on every process and machine. The baseline every rule
    must beat at equal cost.

    Args:
        fraction: the set size as a fraction of the training split; None = the size the
            paper's rule would choose from the same round (the random baseline at the
            paper's cost, picked inside the search).
        seed: the seed of the draws (an int >= 0).
    """

    kind: ClassVar[str] = "random"
    needs_targets: ClassVar[bool] = True

    def scores(self) -> dict[str, dict[str, Any]]:
        """None of its own; the paper's scores with ``fraction=None`` (for the set size)."""
        return self._size_scores()

    def choose(self, values: Mapping[str, torch.Tensor], context: ScoreContext) -> Selection:
        k = self.size(values, context)
        draw_seed = _seed_for(self.seed, context.round + 1)
        if context.targets is not None:
            chosen = stratified_subset(context.targets.cpu(), k, draw_seed)
        else:
            generator = torch.Generator().manual_seed(draw_seed)
            chosen = torch.randperm(context.num_samples, generator=generator)[:k]
        return _selection(chosen, context.num_samples, {"rule": self.kind, "requested": k}, context)


Rule = Union[SelectionRule, ScoreRule, BudgetRule, RandomRule]


RULES: dict[str, Any] = {
    "paper": SelectionRule,
    "el2n": lambda: ScoreRule(score="el2n", order="hardest"),
    "easiest": lambda: ScoreRule(score="el2n", order="easiest"),
    "forgetting": lambda: ScoreRule(score="forgetting", order="hardest"),
    "random": RandomRule,
    "budget": BudgetRule,
}
"""The rules by name: ``"paper"`` (the default), ``"el2n"`` (hardest-k by EL2N),
``"easiest"`` (easiest-k by EL2N), ``"forgetting"`` (hardest-k by forgetting events, no
disagreement side), ``"random"`` (random-k), ``"budget"`` (the budget-aware mix by EL2N); all
with the paper's set size."""


_RULE_TYPES = (SelectionRule, ScoreRule, BudgetRule, RandomRule)


def resolve_rule(selection: Any) -> Rule:
    """A rule from a rule object, a name of :data:`RULES`, or None (the paper's rule).

    Raises:
        ValueError: an unknown name (the message lists the valid ones).
        TypeError: neither a name nor a rule.
    """
    if selection is None:
        return SelectionRule()
    if isinstance(selection, str):
        if selection not in RULES:
            raise ValueError(f"unknown selection rule {selection!r}; valid names: {sorted(RULES)} (or a rule object: "
                             f"SelectionRule, ScoreRule, BudgetRule, RandomRule)")
        return RULES[selection]()
    if isinstance(selection, _RULE_TYPES):
        return selection
    raise TypeError(f"selection must be a rule name ({sorted(RULES)}) or a rule (tickets.SelectionRule, ScoreRule, "
                    f"BudgetRule, RandomRule); got {type(selection).__name__}")


def pick_rule(option: Any, sampler: Any) -> Rule:
    """A search's rule: ``PrACOptions.selection`` or the sampler's ``selection``; the paper's
    rule when neither is given.

    Raises:
        ValueError: both are given and differ.
    """
    own = getattr(sampler, "selection", None)
    if option is not None and own is not None and resolve_rule(option) != own:
        raise ValueError(f"two selection rules: the search's selection={resolve_rule(option)!r} and the sampler's "
                         f"{own!r}; give it in one place (PrACSampler(train_set, selection=...))")
    return resolve_rule(option if option is not None else own)


def needs_pass(rule: Rule) -> bool:
    """Whether choosing with ``rule`` needs the extra prediction pass over the split."""
    return any(score_class(name).needs_predictions for name in rule.scores())


def carries(rule: Rule) -> bool:
    """Whether ``rule``'s recorded scores carry values from round to round (the search keeps
    each round's record for the next)."""
    return any(score_class(name).carries and score_class(name).needs_logits for name in rule.scores())


def record_for(rule: Rule, num_samples: int, device: torch.device | str | None = None, *, distributed: bool = False,
               previous: Mapping[str, Any] | None = None) -> SampleStats | ScoreRecord:
    """A round's record for ``rule`` (:func:`tickets.prac.scores.new_record`): the forgetting
    statistics, plus the scores it needs from the training batches."""
    return new_record(rule.scores(), num_samples, device, distributed=distributed, previous=previous)


def choose_next(rule: Rule, record: SampleStats | ScoreRecord, context: ScoreContext) -> Selection:
    """The next set: the values of every score ``rule`` needs (recorded ones from ``record``,
    the others computed from ``context``), then ``rule.choose``."""
    values: dict[str, torch.Tensor] = {}
    for name, options in rule.scores().items():
        if isinstance(record, ScoreRecord) and name in record.scores_by_name:
            values[name] = record.values(name, context)
        elif score_class(name).needs_logits:
            raise ValueError(f"the {name!r} score is recorded during the round, but the round's record has no {name!r}")
        else:
            values[name] = score_class(name)(context.num_samples, **dict(options)).values(context)
    return rule.choose(values, context)

