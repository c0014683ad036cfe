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


# ---------------------------------------------------------------- the own-loop snippets of the docs
def _snippet(where: str) -> str:
    """The own-loop snippet shown in ``where``: the fenced block (or, in a module docstring, the
    ``::`` block) that builds a ``tickets.TicketSearch``, as a reader would copy it."""
    if where.endswith(".md"):
        text = (ROOT / where).read_text()
        if where == "docs/own-loop.md":
            text = text.split("## The round protocol", 1)[1]
        blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "TicketSearch(" in b]
        assert blocks, f"{where} shows no own-loop snippet"
        return blocks[0]
    doc = importlib.import_module(where).__doc__
    block = re.search(r"::\n\n((?: {4}.*\n|\n)+)", doc)
    assert block and "TicketSearch(" in block.group(1), f"the docstring of {where} shows no own-loop snippet"
    return "\n".join(line[4:] for line in block.group(1).splitlines())


class _Timm:
    """Stands in for ``timm`` in the README's snippet: ``create_model`` gives the tiny net."""

    @staticmethod
    def create_model(name: str, num_classes: int) -> nn.Module:
        assert num_classes == 10
        torch.manual_seed(5)
        net = convnet()
        net[-1] = nn.Linear(16, 10)
        return net


@pytest.mark.parametrize("where", ["README.md", "docs/own-loop.md", "tickets.search.ticket_search"])
def test_own_loop_snippets_of_the_docs_run(where, tmp_path):
    """Each own-loop snippet runs as shown (only its sizes shrunk), with the names its page
    defines before it: a snippet that misuses the API (e.g. passing ``evaluate(...)``, an
    ``EvalResult``, as ``val_acc``) fails here."""
    code = _snippet(where)
    sizes = {r"\brounds=\d+": "rounds=2", r"\bepochs=\d+": "epochs=2", r"\bnum_workers=\d+": "num_workers=0",
             r"\bcheckpoint_dir=\"[^\"]*\"": f"checkpoint_dir={str(tmp_path)!r}"}
    for pattern, value in sizes.items():
        code = re.sub(pattern, value, code)
    assert "rounds=2" in code
    namespace = {  # the names the page defines before the snippet (the README's model is remade in it)
        "torch": torch, "F": torch.nn.functional, "tickets": tickets, "PrACSampler": tickets.PrACSampler,
        "evaluate": tickets.evaluate, "timm": _Timm, "model": convnet(), "train_set": images(60, 0),
        "val_set": images(30, 1),
    }
    exec(compile(code, f"<own-loop snippet of {where}>", "exec"), namespace)
    ticket = namespace["ticket"]
    assert isinstance(ticket, tickets.Ticket) and len(ticket.history) == 2
    assert ticket.sparsity == pytest.approx(0.2, abs=0.01)
    if "end_epoch(val_acc=" in code:  # the reported accuracy chose the kept weights
        assert all(0.0 <= h["val_acc"] <= 1.0 for h in ticket.history)
    if "checkpoint_dir=" in code:
        assert (tmp_path / "ticket.ticket").is_file()


# ---------------------------------------------------------------- what docs/api.md says about prune
def _api_section(title: str) -> str:
    text = (ROOT / "docs" / "api.md").read_text()
    return text.split(f"#### {title}\n", 1)[1].split("\n#", 1)[0]


def test_amount_kinds_of_the_docs():
    """One pruning step takes an int count (torch's convention); the per-round amount of a
    search is a fraction, and an int there is refused with a message that says why."""
    model = convnet()
    params = tickets.prunable_parameters(model)
    total = sum(getattr(m, n).numel() for m, n in params)
    tickets.global_magnitude_prune(params, amount=100)
    assert sum(int((~mask).sum()) for mask in tickets.masks(model).values()) == 100
    assert sum(int(mask.sum()) for mask in tickets.masks(model).values()) == total - 100
    for amount in (5, 1, 0):
        with pytest.raises(ValueError, match=rf"got the int {amount}: a count is not accepted here"):
            tickets.Pruning(amount=amount)
    with pytest.raises(ValueError, match="a count is not accepted here"):
        tickets.prune(convnet(), images(12, 0), rounds=2, amount=3, epochs=1, quiet=True)
    with pytest.raises(ValueError, match=r"in \(0, 1\)"):
        tickets.Pruning(amount=1.0)


def test_sparsity_table_of_the_docs():
    rows = [line for line in _api_section("Sparsity by rounds").splitlines() if line.startswith("|")]
    rounds = [int(c) for c in rows[0].strip("|").split("|")[1:]]
    shown = [float(c.strip().rstrip("%")) for c in rows[2].strip("|").split("|")[1:]]
    assert rounds == list(range(1, 9))
    for r, s in zip(rounds, shown):
        assert s == pytest.approx(100 * (1 - 0.8 ** (r - 1)), abs=0.05), (r, s)


def test_prune_facts_of_the_docs(tmp_path):
    """sampler=None, the callbacks' arguments and keys, the sparsity of rounds=R, what the
    model holds afterwards and that retrain trains the given model in place, as documented."""
    g = torch.Generator().manual_seed(0)  # random labels: many samples stay hard, the PrAC sets stay large
    train = TensorDataset(torch.randn(60, 3, 12, 12, generator=g), torch.randint(0, 3, (60,), generator=g))
    val = images(30, 1)
    epochs, rounds = [], []
    model = convnet()
    ticket = tickets.prune(model, train_data=train, rounds=3, epochs=2, batch_size=16, rewind_to="1ep",
                           eval_data=val, quiet=True, checkpoint_dir=tmp_path,
                           on_epoch=lambda k, entry: epochs.append((k, dict(entry))),
                           on_round=lambda entry: rounds.append(dict(entry)))
    assert ticket.meta["method"] == "prac-imp"  # sampler=None with train_data is a PrACSampler
    assert ticket.sparsity == pytest.approx(1 - 0.8 ** 2, abs=0.01)
    documented_epoch = {"epoch", "step", "lr", "train_loss", "train_acc", "val_acc", "val_loss", "seconds"}
    assert {k for k, _ in epochs} == {0, 1, 2} and all(isinstance(k, int) for k, _ in epochs)
    for _, entry in epochs:
        assert documented_epoch <= entry.keys(), documented_epoch - entry.keys()
    assert [e["round"] for e in rounds] == [0, 1, 2] and rounds == ticket.history
    documented_round = {
        "round", "sparsity", "set_size", "set_fraction", "epochs", "epochs_trained", "start_step", "end_step",
        "steps", "samples", "val_acc", "val_loss", "test_acc", "test_loss", "best_epoch", "train_acc",
        "early_stopped", "precision", "channels_last", "wall_time_s", "total_steps", "total_samples",
        "total_wall_time_s", "stats_seen", "stats_forgotten", "stats_never_learned", "stats_forgetting_events",
    }
    for entry in rounds:
        assert documented_round <= entry.keys(), documented_round - entry.keys()
        assert ("next_set" in entry) == (entry["round"] < 2)
    assert set(rounds[0]["next_set"]) >= {"hard", "disagree", "added_by_disagreement", "fallback", "size", "fraction"}
    # the model is the last round's trained, pruned model, not the ticket's rewound weights
    state = model.state_dict()
    assert any(k.endswith("_orig") for k in state) and any(k.endswith("_mask") for k in state)
    trained = tickets.snapshot(model)
    assert any(not torch.equal(trained[k], ticket.rewind_state[k]) for k in ticket.masks)
    again = convnet(seed=4)  # a finished run loads the same final state into the model it gets
    tickets.prune(again, train_data=train, rounds=3, epochs=2, batch_size=16, rewind_to="1ep", eval_data=val,
                  quiet=True, checkpoint_dir=tmp_path)
    assert all(torch.equal(v, tickets.snapshot(again)[k]) for k, v in trained.items())
    fresh = ticket.apply(convnet(seed=5))  # the ticket as a model: masks and rewound weights
    assert all(torch.equal(tickets.snapshot(fresh)[k], ticket.rewind_state[k]) for k in ticket.masks)
    # retrain trains the model it is given in place
    target = convnet(seed=6)
    result = ticket.retrain(target, train, epochs=2, batch_size=16)
    assert result.steps > 0 and tickets.masks(target).keys() == ticket.masks.keys()
    assert any(not torch.equal(tickets.snapshot(target)[k], ticket.rewind_state[k]) for k in ticket.masks)
