"""Stability analysis (linear mode connectivity) of dense networks and lottery tickets:
interpolation and error barriers, and the instability experiment.
"""

from tickets.stability.interpolation import STABLE_BARRIER, Batches, LossFn, Interpolation, ErrorBarrier, recompute_bn_statistics, interpolated_model, interpolate, error_barrier
from tickets.stability.instability import Instability, TrainFn, instability

__all__ = [
    'STABLE_BARRIER',
    'Batches',
    'LossFn',
    'Interpolation',
    'ErrorBarrier',
    'recompute_bn_statistics',
    'interpolated_model',
    'interpolate',
    'error_barrier',
    'Instability',
    'TrainFn',
    'instability',
]
