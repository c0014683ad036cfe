"""Any timm or torchvision model: the zoo (issue 4).

Every torchvision classification builder and a broad sample of timm families go through
``benchmarks.zoo.check_model``: keep_dense finds the classifier and the stem, one global
magnitude round at 50% is exact, gradients reach ``<name>_orig`` through a few SGD steps, the
forward that runs uses ``orig * mask`` of the current weights (compared with an unpruned copy),
Ticket save/load/apply and ``prune.remove`` leave the same outputs.

The full zoo is marked ``zoo`` and deselected by default; run it with ``pytest -m zoo``
(``.ci/run`` does). A few representative models run in the default suite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks import zoo


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """One intra-op thread: on a small shared CI machine, more threads only contend."""
    threads = torch.get_num_threads()
    torch.set_num_threads(int(os.environ.get("ZOO_THREADS", "1")))
    yield
    torch.set_num_threads(threads)


def _record(facts: dict) -> None:
    """Append the facts of a model to $ZOO_RESULTS (for ``python -m benchmarks.zoo_table``)."""
    path = os.environ.get("ZOO_RESULTS")
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({**facts, "status": "pass"}) + "\n")


@pytest.mark.parametrize("spec", zoo.FAST, ids=lambda m: m.id)
def test_zoo_fast(spec: zoo.ZooModel, tmp_path: Path) -> None:
    zoo.check_model(spec, tmp_path)


@pytest.mark.zoo
@pytest.mark.parametrize("spec", zoo.ALL, ids=lambda m: m.id)
def test_zoo(spec: zoo.ZooModel, tmp_path: Path) -> None:
    _record(zoo.check_model(spec, tmp_path))


def test_fast_subset_covers_functional_access() -> None:
    ids = {m.id for m in zoo.FAST}
    assert ids == set(zoo.FAST_IDS)
    assert len(zoo.ALL) == len({m.id for m in zoo.ALL}), "duplicate ids in the zoo"
    import torchvision

    assert {m.name for m in zoo.TORCHVISION} == set(torchvision.models.list_models(module=torchvision.models))


def test_snapshot_keeps_module_versions_for_load_state_dict() -> None:
    """MNASNet's _load_from_state_dict needs the state_dict's _metadata (module versions)."""
    import torchvision

    import tickets

    torch.manual_seed(0)
    model = torchvision.models.mnasnet0_5(num_classes=3)
    tickets.global_magnitude_prune(tickets.prunable_parameters(model), amount=0.5)
    fresh = torchvision.models.mnasnet0_5(num_classes=3)
    fresh.load_state_dict(tickets.snapshot(model))  # raised "version should be set to 1 or 2"
    model.eval(), fresh.eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
