"""The pruning layer: pruning methods over ``torch.nn.utils.prune``, the guard that keeps
masks applied, which parameters to prune, snapshots and rewinding. It imports nothing else
of the package.
"""

from tickets.pruning.methods import MaskedWeight, is_pruned_tensor, refresh, refresh_traced, MagnitudePruning, RandomPruning, FixedMask, magnitude_prune, random_prune, global_magnitude_prune, global_random_prune, pruned_parameters, masks, share_mask
from tickets.pruning.guard import tie_shared, has_guard, install_guard
from tickets.pruning.parameters import find_classifier, find_stem, prunable_parameters
from tickets.pruning.rewind import snapshot, rewind, enforce_masks

__all__ = [
    'MaskedWeight',
    'is_pruned_tensor',
    'refresh',
    'refresh_traced',
    'MagnitudePruning',
    'RandomPruning',
    'FixedMask',
    'magnitude_prune',
    'random_prune',
    'global_magnitude_prune',
    'global_random_prune',
    'pruned_parameters',
    'masks',
    'share_mask',
    'tie_shared',
    'has_guard',
    'install_guard',
    'find_classifier',
    'find_stem',
    'prunable_parameters',
    'snapshot',
    'rewind',
    'enforce_masks',
]
