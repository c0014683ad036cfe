"""The data-selection layer: the PrAC sampler, per-sample statistics and the selection
rules that pick the next PrAC set. Builds on the data layer and the process group
facts (:mod:`tickets.parallel`).
"""

from tickets.prac.sampler import PrACSampler
from tickets.prac.stats import EmptySelectionError, SampleStats, DistributedStats
from tickets.prac.rules import disagreement, SelectionRule, Selection, select

__all__ = [
    'PrACSampler',
    'EmptySelectionError',
    'SampleStats',
    'DistributedStats',
    'disagreement',
    'SelectionRule',
    'Selection',
    'select',
]
