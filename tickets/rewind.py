"""The 0.2 import path of these names, kept so that existing imports work; their code
lives in :mod:`tickets.pruning.rewind`.
"""

from tickets.pruning.rewind import snapshot, rewind, enforce_masks

__all__ = [
    'snapshot',
    'rewind',
    'enforce_masks',
]
