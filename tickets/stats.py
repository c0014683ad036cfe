"""The 0.2 import path of these names, kept so that existing imports work; their code
lives in :mod:`tickets.prac.rules`, :mod:`tickets.prac.scores`, :mod:`tickets.prac.stats`,
:mod:`tickets.training.evaluation`.
"""

from tickets.prac.stats import SampleStats, EmptySelectionError
from tickets.prac.rules import SelectionRule, Selection, select
from tickets.prac.scores import disagreement
from tickets.training.evaluation import predict

__all__ = [
    'SampleStats',
    'SelectionRule',
    'Selection',
    'EmptySelectionError',
    'predict',
    'disagreement',
    'select',
]
