"""The 0.2 import path of these names, kept so that existing imports work; their code
lives in :mod:`tickets.pruning.methods`.
"""

from tickets.pruning.methods import MaskedWeight, MagnitudePruning, RandomPruning, FixedMask, magnitude_prune, random_prune, global_magnitude_prune, global_random_prune, is_pruned_tensor, pruned_parameters, masks, refresh, refresh_traced, share_mask

__all__ = [
    'MaskedWeight',
    'MagnitudePruning',
    'RandomPruning',
    'FixedMask',
    'magnitude_prune',
    'random_prune',
    'global_magnitude_prune',
    'global_random_prune',
    'is_pruned_tensor',
    'pruned_parameters',
    'masks',
    'refresh',
    'refresh_traced',
    'share_mask',
]
