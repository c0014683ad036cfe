"""torch-tickets: find lottery tickets for any PyTorch model, with torch.nn.utils.prune.

The public API lives here; see ``docs/`` for guides.
"""

from tickets.guard import install_guard
from tickets.imp import (
    EarlyBird,
    RunInterrupted,
    Savings,
    iteration_savings,
    load_prac_sets,
    prune,
    retrain,
)
from tickets.search import PrACOptions, Pruning, Round, Runtime, TicketSearch, describe_optimizer
from tickets.methods import (
    FixedMask,
    MagnitudePruning,
    MaskedWeight,
    RandomPruning,
    global_magnitude_prune,
    global_random_prune,
    is_pruned_tensor,
    magnitude_prune,
    masks,
    pruned_parameters,
    random_prune,
)
from tickets.rewind import enforce_masks, rewind, snapshot
from tickets.sampler import IndexedDataset, PrACSampler
from tickets.selection import find_classifier, find_stem, prunable_parameters
from tickets import distributed, stability
from tickets.stability import (
    ErrorBarrier,
    Instability,
    Interpolation,
    error_barrier,
    instability,
    interpolate,
    interpolated_model,
    recompute_bn_statistics,
)
from tickets.stats import EmptySelectionError, SampleStats, SelectionRule
from tickets.ticket import SparsityReport, Ticket, sparsity_report
from tickets.sparse import KernelChoice, KernelReport, SparseLinear, kernel_report, sparsify
from tickets.training import (
    NonFiniteLossError, Schedule, TrainResult, evaluate, resolve_channels_last, resolve_precision, train,
)

__version__ = "0.1.0"

__all__ = [
    "distributed",
    "stability",
    "ErrorBarrier",
    "Instability",
    "Interpolation",
    "error_barrier",
    "instability",
    "interpolate",
    "interpolated_model",
    "recompute_bn_statistics",
    "EarlyBird",
    "EmptySelectionError",
    "IndexedDataset",
    "PrACSampler",
    "RunInterrupted",
    "SampleStats",
    "Savings",
    "Schedule",
    "SelectionRule",
    "TrainResult",
    "evaluate",
    "iteration_savings",
    "load_prac_sets",
    "prune",
    "retrain",
    "train",
    "FixedMask",
    "MagnitudePruning",
    "MaskedWeight",
    "RandomPruning",
    "SparsityReport",
    "Ticket",
    "enforce_masks",
    "find_classifier",
    "find_stem",
    "global_magnitude_prune",
    "global_random_prune",
    "install_guard",
    "is_pruned_tensor",
    "magnitude_prune",
    "masks",
    "prunable_parameters",
    "pruned_parameters",
    "random_prune",
    "rewind",
    "snapshot",
    "sparsity_report",
    "KernelChoice",
    "KernelReport",
    "SparseLinear",
    "kernel_report",
    "sparsify",
    "NonFiniteLossError",
    "resolve_channels_last",
    "resolve_precision",
    "PrACOptions",
    "Pruning",
    "Round",
    "Runtime",
    "TicketSearch",
    "describe_optimizer",
]
