"""The 0.2 import path of these names, kept so that existing imports work; their code
lives in :mod:`tickets.pruning.parameters`.
"""

from tickets.pruning.parameters import prunable_parameters, find_classifier, find_stem, KINDS, ROLES

__all__ = [
    'prunable_parameters',
    'find_classifier',
    'find_stem',
    'KINDS',
    'ROLES',
]
