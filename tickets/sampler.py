"""The 0.2 import path of these names, kept so that existing imports work; their code
lives in :mod:`tickets.data.sampling`, :mod:`tickets.prac.sampler`.
"""

from tickets.prac.sampler import PrACSampler
from tickets.data.sampling import IndexedDataset, dataset_of, targets_of

__all__ = [
    'PrACSampler',
    'IndexedDataset',
    'dataset_of',
    'targets_of',
]
