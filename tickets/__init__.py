"""torch-tickets: find lottery tickets for any PyTorch model, with torch.nn.utils.prune.

The public API lives here; see ``docs/`` for guides.
"""

from tickets.pruning.guard import install_guard
from tickets.search.options import EarlyBird, PrACOptions, Pruning, RunInterrupted, Runtime
from tickets.search.accounting import Savings, iteration_savings
from tickets.search.run_folder import load_prac_sets
from tickets.search.driver import prune
from tickets.search.round import Round
from tickets.search.ticket_search import TicketSearch
from tickets.search.identity import describe_optimizer
from tickets.search.lock import RunFolderLocked
from tickets.pruning.methods import FixedMask, MagnitudePruning, MaskedWeight, RandomPruning, global_magnitude_prune, global_random_prune, is_pruned_tensor, magnitude_prune, masks, pruned_parameters, random_prune
# The 0.2 module tickets.rewind shares its name with the function tickets.rewind: load the
# module first, so that a later `import tickets.rewind` finds it loaded and leaves the
# package's `rewind` (the function, bound on the next line) alone.
import tickets.rewind as _rewind_module
from tickets.pruning.rewind import enforce_masks, rewind, snapshot
from tickets.data.sampling import IndexedDataset
from tickets.prac.sampler import PrACSampler, random_sets_like
from tickets.pruning.parameters import find_classifier, find_stem, prunable_parameters
from tickets import distributed, stability
from tickets.stability.interpolation import ErrorBarrier, Interpolation, error_barrier, interpolate, interpolated_model, recompute_bn_statistics
from tickets.stability.instability import Instability, instability
from tickets.prac.stats import EmptySelectionError, SampleStats
from tickets.prac.rules import SelectionRule
from tickets.prac.scores import EL2N, SampleScore, ScoreContext, register_score
from tickets.prac.score_rules import BudgetRule, RandomRule, ScoreRule
from tickets.ticket.ticket import SparsityReport, Ticket, retrain, sparsity_report
from tickets.sparse import KernelChoice, KernelReport, SparseLinear, kernel_report, sparsify
from tickets.training.results import NonFiniteLossError, TrainResult
from tickets.training.schedule import Schedule
from tickets.training.evaluation import evaluate
from tickets.training.precision import resolve_channels_last, resolve_precision
from tickets.training.loop import train

del _rewind_module

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
    "random_sets_like",
    "RunInterrupted",
    "SampleStats",
    "Savings",
    "Schedule",
    "SelectionRule",
    "ScoreRule",
    "BudgetRule",
    "RandomRule",
    "SampleScore",
    "ScoreContext",
    "EL2N",
    "register_score",
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
    "RunFolderLocked",
]
