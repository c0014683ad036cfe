"""The data-selection layer: the PrAC sampler, per-sample statistics and the selection
rules that pick the next PrAC set. Builds on the data layer and the process group
facts (:mod:`tickets.parallel`).
"""

from tickets.prac.sampler import PrACSampler, random_sets_like
from tickets.prac.stats import EmptySelectionError, SampleStats, DistributedStats
from tickets.prac.scores import (
    disagreement, SampleScore, ScoreContext, ScoreRecord, Forgetting, Disagreement, EL2N, RandomScore, SCORES,
    register_score,
)
from tickets.prac.rules import SelectionRule, Selection, select
from tickets.prac.score_rules import ScoreRule, BudgetRule, RandomRule, RULES, resolve_rule

__all__ = [
    'PrACSampler',
    'random_sets_like',
    'EmptySelectionError',
    'SampleStats',
    'DistributedStats',
    'disagreement',
    'SelectionRule',
    'Selection',
    'select',
    'SampleScore',
    'ScoreContext',
    'ScoreRecord',
    'Forgetting',
    'Disagreement',
    'EL2N',
    'RandomScore',
    'SCORES',
    'register_score',
    'ScoreRule',
    'BudgetRule',
    'RandomRule',
    'RULES',
    'resolve_rule',
]
