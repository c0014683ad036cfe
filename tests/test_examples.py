"""The own-loop examples of docs/own-loop.md, run on tiny image data: each finds a ticket
whose masks hold their invariants, resumes from its checkpoint, and matches the docs."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import tickets

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "docs" / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def images(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.randn(n, 3, 12, 12, generator=g) * 0.5
    x[:, 0] += (y == 0).float()[:, None, None]
    x[:, 1] += (y == 1).float()[:, None, None]
    return TensorDataset(x, y)


def convnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 3),
    )


def check_ticket(ticket: tickets.Ticket, model: nn.Module, rounds: int) -> None:
    assert len(ticket.history) == rounds
    assert ticket.sparsity == pytest.approx(1 - 0.8 ** (rounds - 1), abs=0.01)
    for h in ticket.history:
        assert h["steps"] == h["end_step"] - h["start_step"] > 0
    assert ticket.history[0]["set_size"] == 60
    found = tickets.masks(model)
    for key, mask in ticket.masks.items():
        assert torch.equal(found[key].bool().cpu(), mask)
    for _, module, name in tickets.pruned_parameters(model):  # pruned weights stayed zero
        assert not bool((getattr(module, name)[~module._buffers[name + "_mask"].bool()]).any())
    fresh = ticket.apply(convnet(seed=7))
    assert tickets.masks(fresh).keys() == ticket.masks.keys()


@pytest.mark.parametrize("name", ["plain_loop", "timm_recipe", "lightning_module"])
def test_example_finds_a_ticket_and_resumes(name, tmp_path):
    if name == "lightning_module":
        pytest.importorskip("lightning")
    example = load(name)
    train, val = images(60, 0), images(30, 1)
    model = convnet()
    ticket = example.find_ticket(model, train, val, rounds=3, epochs=3, lr=0.05, checkpoint_dir=tmp_path)
    check_ticket(ticket, model, 3)
    again = example.find_ticket(convnet(seed=3), train, val, rounds=3, epochs=3, lr=0.05, checkpoint_dir=tmp_path)
    assert again.history == ticket.history  # a finished search returns its ticket without training
    for key in ticket.masks:
        assert torch.equal(again.masks[key], ticket.masks[key])


@pytest.mark.parametrize("name, marker", [("plain_loop", "own-loop"), ("timm_recipe", "timm"), ("lightning_module", "lightning")])
def test_docs_show_the_tested_examples(name, marker):
    source = (EXAMPLES / f"{name}.py").read_text()
    block = re.search(rf"# \[{marker}\]\n(.*?)\n *# \[/{marker}\]", source, re.S)
    assert block, f"{name}.py has no [{marker}] block"
    docs = (ROOT / "docs" / "own-loop.md").read_text()
    body = "\n".join(line for line in block.group(1).splitlines())
    first, last = body.strip().splitlines()[0].strip(), body.strip().splitlines()[-1].strip()
    assert first in docs and last in docs, f"docs/own-loop.md does not show docs/examples/{name}.py"
    dedented = [line.strip() for line in body.splitlines() if line.strip()]
    shown = {line.strip() for line in docs.splitlines()}
    missing = [line for line in dedented if line not in shown]
    assert not missing, f"docs/own-loop.md differs from docs/examples/{name}.py: {missing[:3]}"
