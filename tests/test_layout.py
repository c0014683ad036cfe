"""The package's layout: layers that import only downwards, and the 0.2 import paths kept.

The layers, lowest first (``docs/architecture.md``): a module may import modules of its own
layer or of a lower one, never of a higher one. Imports inside functions count too: they tie
two modules together all the same.
"""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import tickets

PACKAGE = Path(tickets.__file__).parent

LAYERS: list[tuple[str, ...]] = [
    ("tickets.parallel",),
    ("tickets.pruning",),
    ("tickets.data",),
    ("tickets.prac",),
    ("tickets.training",),
    ("tickets.ticket",),
    ("tickets.search",),
    ("tickets.stability", "tickets.sparse", "tickets.models"),
    # the public faces and the programs on top: the package root, the 0.2 paths, the demo
    ("tickets.distributed", "tickets.integrations", "tickets.demo", "tickets.__main__", "tickets.methods",
     "tickets.guard", "tickets.selection", "tickets.rewind", "tickets.sampler", "tickets.stats", "tickets.imp"),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int | None:
    for i, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    return None


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.startswith("tickets.")}


def test_every_module_has_a_layer() -> None:
    unplaced = [_module_name(p) for p in PACKAGE.rglob("*.py") if _module_name(p) != "tickets"
                and _layer(_module_name(p)) is None]
    assert not unplaced, f"modules outside every layer of LAYERS (add them there and to docs/architecture.md): {unplaced}"


def test_lower_layers_never_import_higher_ones() -> None:
    upward = []
    for path in PACKAGE.rglob("*.py"):
        name = _module_name(path)
        own = _layer(name)
        if own is None:
            continue
        for target in _imports(path):
            layer = _layer(target)
            if layer is not None and layer > own:
                upward.append(f"{name} -> {target}")
    assert not upward, f"imports from a higher layer: {sorted(upward)}"


# every public name of 0.2 (and of this release's additions), from the module it was imported from
OLD_PATHS: dict[str, list[str]] = {
    "tickets.data": ["DATASETS", "DataSplits", "DatasetInfo", "ImageDataset", "Augment", "Normalize", "BatchLoader",
                     "balanced_subset", "batch_loader", "random_transform", "load_dataset", "load_folder_dataset",
                     "load_image_folder", "stratified_split", "validation_indices"],
    "tickets.training": ["Schedule", "TrainResult", "EvalResult", "Trainer", "train", "evaluate", "parse_step",
                         "make_schedule", "resolve_precision", "resolve_channels_last", "resolve_device",
                         "NonFiniteLossError"],
    "tickets.ticket": ["Ticket", "SparsityReport", "sparsity_report", "atomic_save", "remove_stale_temporaries",
                       "pack_mask", "unpack_mask", "FORMAT"],
    "tickets.search": ["TicketSearch", "Round", "Pruning", "PrACOptions", "Runtime", "EarlyBird", "RunInterrupted",
                       "load_prac_sets", "describe_optimizer", "resolve_options"],
    "tickets.stability": ["Interpolation", "ErrorBarrier", "Instability", "interpolate", "interpolated_model",
                          "error_barrier", "instability", "recompute_bn_statistics", "STABLE_BARRIER", "TrainFn"],
    "tickets.methods": ["MaskedWeight", "MagnitudePruning", "RandomPruning", "FixedMask", "magnitude_prune",
                        "random_prune", "global_magnitude_prune", "global_random_prune", "is_pruned_tensor",
                        "pruned_parameters", "masks", "refresh", "share_mask"],
    "tickets.guard": ["install_guard", "has_guard", "tie_shared"],
    "tickets.selection": ["prunable_parameters", "find_classifier", "find_stem", "KINDS", "ROLES"],
    "tickets.rewind": ["snapshot", "rewind", "enforce_masks"],
    "tickets.sampler": ["PrACSampler", "IndexedDataset", "dataset_of", "targets_of"],
    "tickets.stats": ["SampleStats", "SelectionRule", "Selection", "EmptySelectionError", "predict", "disagreement",
                      "select"],
    "tickets.imp": ["prune", "retrain", "EarlyBird", "iteration_savings", "Savings", "load_prac_sets", "RunInterrupted"],
    "tickets.distributed": ["world", "is_active", "is_writer", "init_from_env", "ShardSampler", "DistributedStats",
                            "check_identical", "broadcast_buffers", "all_reduce_sum", "shard_of", "gather_predictions",
                            "mask_checksum"],
    "tickets.sparse": ["CHUNK_ROWS", "KernelChoice", "KernelReport", "RULE", "SparseLinear", "kernel_report", "sparsify"],
    "tickets.integrations.lightning": ["TicketCallback"],
}

TOP_LEVEL_0_2 = [
    "EarlyBird", "EmptySelectionError", "ErrorBarrier", "FixedMask", "IndexedDataset", "Instability", "Interpolation",
    "KernelChoice", "KernelReport", "MagnitudePruning", "MaskedWeight", "NonFiniteLossError", "PrACOptions",
    "PrACSampler", "Pruning", "RandomPruning", "Round", "RunInterrupted", "Runtime", "SampleStats", "Savings",
    "Schedule", "SelectionRule", "SparseLinear", "SparsityReport", "Ticket", "TicketSearch", "TrainResult",
    "distributed", "enforce_masks", "error_barrier", "evaluate", "find_classifier", "find_stem",
    "global_magnitude_prune", "global_random_prune", "instability", "install_guard", "interpolate",
    "interpolated_model", "is_pruned_tensor", "iteration_savings", "kernel_report", "load_prac_sets",
    "magnitude_prune", "masks", "prunable_parameters", "prune", "pruned_parameters", "random_prune",
    "recompute_bn_statistics", "resolve_channels_last", "resolve_precision", "retrain", "rewind", "snapshot",
    "sparsify", "sparsity_report", "stability", "train",
]


@pytest.mark.parametrize("module", sorted(OLD_PATHS))
def test_the_02_import_paths_still_work(module: str) -> None:
    loaded = importlib.import_module(module)
    missing = [name for name in OLD_PATHS[module] if not hasattr(loaded, name)]
    assert not missing, f"{module} lost {missing}"


def test_the_top_level_api_is_unchanged() -> None:
    assert set(TOP_LEVEL_0_2) <= set(tickets.__all__)
    for name in tickets.__all__:
        assert hasattr(tickets, name), name
    assert callable(tickets.rewind) and callable(tickets.prune)
    assert tickets.distributed.DistributedStats is importlib.import_module("tickets.distributed").DistributedStats
    assert hasattr(tickets.stability, "instability")


def test_old_paths_do_not_shadow_top_level_names_in_a_fresh_process() -> None:
    # `from tickets.rewind import snapshot` imports the module tickets.rewind; tickets.rewind must
    # stay the function, and the star import of a package must work
    code = (
        "from tickets.rewind import snapshot\n"
        "import tickets\n"
        "assert callable(tickets.rewind) and not isinstance(tickets.rewind, type(tickets)), tickets.rewind\n"
        "from tickets.data import *\n"
        "from tickets.training import *\n"
        "from tickets.search import *\n"
        "import tickets.distributed as d\n"
        "assert d.DistributedStats.__name__ == 'DistributedStats'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
