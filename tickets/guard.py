"""The 0.2 import path of these names, kept so that existing imports work; their code
lives in :mod:`tickets.pruning.guard`.
"""

from tickets.pruning.guard import install_guard, has_guard, tie_shared

__all__ = [
    'install_guard',
    'has_guard',
    'tie_shared',
]
