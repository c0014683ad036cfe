"""Compute-matched baselines of a PrAC search: step budgets per round (``round_steps``, the
full data for exactly the PrAC rounds' steps), class-stratified random subsets of the PrAC
sets' sizes, and the two costs of ``iteration_savings``. Tiny data, CPU, fp32."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.utils.data import TensorDataset

import tickets
from tickets import PrACSampler, TicketSearch
from tickets.data.splits import stratified_subset
from tickets.prac.sampler import random_sets_like
from tickets.search.options import PrACOptions, RunInterrupted
from tickets.training.schedule import CompressedSchedule, Schedule
from test_own_loop import own_loop

torch.set_num_threads(1)


def _data(n: int = 240, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    w = torch.randn(12, 3, generator=torch.Generator().manual_seed(42))
    y = (x @ w + 0.3 * torch.randn(n, 3, generator=g)).argmax(1)
    return TensorDataset(x, y)


def _model(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


TRAIN, VAL = _data(240, 0), _data(60, 1)
N, BATCH, EPOCHS = 240, 32, 6
SPE = math.ceil(N / BATCH)  # 8 steps per epoch of the full data
COMMON: dict[str, Any] = dict(rounds=3, epochs=EPOCHS, lr=0.05, batch_size=BATCH, rewind_to="1ep", eval_data=VAL,
                              quiet=True, seed=0, precision="fp32")


def _full_data(seed: int = 0) -> PrACSampler:
    """Full-data IMP in the PrAC sampler's data order (so it can start from a PrAC search's round 0)."""
    return PrACSampler.replay(TRAIN, [torch.arange(N)], seed=seed)


def _strip(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if "wall_time" not in k} for h in history]


@pytest.fixture(scope="module")
def prac_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[tickets.Ticket, Path]:
    folder = tmp_path_factory.mktemp("prac")
    ticket = tickets.prune(_model(), PrACSampler(TRAIN, seed=0), checkpoint_dir=folder, **COMMON)
    return ticket, folder


# ---------------------------------------------------------------------- the compressed schedule
def test_a_compressed_schedule_follows_its_source_from_the_start_to_the_last_step() -> None:
    cosine = Schedule(epochs=EPOCHS, kind="cosine", warmup_epochs=2)
    total = EPOCHS * SPE
    same = cosine.compressed(total - SPE, SPE, start_step=SPE)  # as many steps as the span: the source itself
    assert [same.lr_factor(i, SPE) for i in range(total - SPE)] == [cosine.lr_factor(SPE + i, SPE) for i in range(total - SPE)]
    short = cosine.compressed(7, SPE, start_step=SPE, run_steps_per_epoch=3)
    assert isinstance(short, CompressedSchedule) and short.total_steps(9) == 7 and short.epochs == 3
    factors = [short.lr_factor(i, 3) for i in range(7)]
    assert factors[0] == cosine.lr_factor(SPE, SPE) and factors[-1] == cosine.lr_factor(total - 1, SPE)
    assert factors[-1] < 0.01 and factors[1] > factors[0]  # the warm-up (2 epochs) goes on past the start (1 epoch)
    assert factors[2:] == sorted(factors[2:], reverse=True)  # then the cosine decays
    steps = Schedule(epochs=10, milestones=(5, 7.5), gamma=0.1).compressed(11, 10)  # positions 0, 9.9, ..., 99
    assert [round(steps.lr_factor(i, 10), 6) for i in range(11)] == [1.0] * 6 + [0.1] * 2 + [0.01] * 3
    assert steps.to_dict()["compressed_from"]["milestones"] == [5.0, 7.5] and steps.to_dict()["steps"] == 11
    for bad in (dict(steps=0), dict(steps=2.5), dict(start_step=10 * 10)):
        with pytest.raises(ValueError):
            Schedule(epochs=10).compressed(**{"steps": 5, "steps_per_epoch": 10, **bad})


# ---------------------------------------------------------------------- full data, same steps
def test_full_data_with_the_prac_rounds_steps_trains_exactly_those_steps(prac_run, tmp_path: Path) -> None:
    prac, folder = prac_run
    budgets = {h["round"]: h["steps"] for h in prac.history[1:]}
    assert any(h["set_size"] < N for h in prac.history[1:])  # real PrAC rounds
    same = tickets.prune(_model(), _full_data(), round_steps=budgets, start_from=folder,
                         checkpoint_dir=tmp_path / "same", **COMMON)
    assert [h["steps"] for h in same.history] == [h["steps"] for h in prac.history]
    assert same.history[-1]["total_steps"] == prac.history[-1]["total_steps"]
    for h in same.history[1:]:
        assert h["set_size"] == N and h["round_steps"] == h["steps"] == budgets[h["round"]]
        assert (h["start_step"], h["end_step"]) == (0, h["steps"])
        assert h["epochs"] == math.ceil(h["steps"] / SPE) and h["epochs_trained"] == round(h["steps"] / SPE, 4)
        assert h["compressed_from"] == {"epochs": EPOCHS, "steps_per_epoch": SPE, "start_step": SPE, "end_step": EPOCHS * SPE}
        assert h["samples"] == min(h["steps"] * BATCH, N * (h["steps"] // SPE) + (h["steps"] % SPE) * BATCH)
    savings = tickets.iteration_savings(same, prac)
    assert savings.saved == 0.0 and savings.total_prac == savings.total_full
    # a sequence works too (entry k = round k), as a keyword or in PrACOptions
    again = tickets.prune(_model(), _full_data(), prac=PrACOptions(round_steps=[None, *budgets.values()]),
                          start_from=folder, **COMMON)
    assert _strip(again.history) == _strip(same.history)


def test_the_budgeted_rounds_lr_runs_from_the_rewind_point_to_the_schedules_end() -> None:
    search = TicketSearch(_model(), _full_data(), rounds=2, epochs=EPOCHS, batch_size=BATCH, rewind_to="1ep",
                          lr_schedule="cosine", warmup_epochs=1, round_steps={1: 13}, quiet=True, precision="fp32")
    full = Schedule(epochs=EPOCHS, batch_size=BATCH, kind="cosine", warmup_epochs=1)
    loader, seen = search.loader(), []
    for rnd in search:
        optimizer = torch.optim.SGD(search.model.parameters(), lr=0.1)
        scheduler = rnd.lr_scheduler(optimizer)
        for _ in rnd:
            for x, y, idx in loader:
                if rnd.index == 1:
                    seen.append((rnd.lr_factor(), optimizer.param_groups[0]["lr"]))
                logits = search.model(x)
                optimizer.zero_grad()
                F.cross_entropy(logits, y).backward()
                optimizer.step()
                scheduler.step()
                rnd.report(idx, logits, y)
    assert len(seen) == 13 == search.history[1]["steps"]
    factors = [f for f, _ in seen]
    assert all(lr == pytest.approx(0.1 * f) for f, lr in seen)
    assert factors[0] == full.lr_factor(SPE, SPE)  # the rewind point (1 epoch) of the full round
    assert factors[-1] == full.lr_factor(EPOCHS * SPE - 1, SPE) < 0.01  # the full round's last step: cosine near 0
    assert factors == sorted(factors, reverse=True)


def test_a_budgeted_run_resumed_mid_round_equals_an_uninterrupted_one(tmp_path: Path) -> None:
    budgets = {1: 20, 2: 11}  # round 1: two full epochs of 8 steps and 4 more
    settings = dict(COMMON, round_steps=budgets, checkpoint_every=1)
    whole_model = _model()
    whole = tickets.prune(whole_model, _full_data(), checkpoint_dir=tmp_path / "whole", **settings)

    def stop(k: int, entry: dict[str, Any]) -> None:
        if k == 1 and entry["epoch"] == 1:
            raise RunInterrupted("stop in the budgeted round")

    with pytest.raises(RunInterrupted):
        tickets.prune(_model(), _full_data(), checkpoint_dir=tmp_path / "cut", on_epoch=stop, **settings)
    resumed_model = _model(seed=9)  # a fresh process: the checkpoint replaces its weights
    resumed = tickets.prune(resumed_model, _full_data(), checkpoint_dir=tmp_path / "cut", **settings)
    assert _strip(resumed.history) == _strip(whole.history)
    assert [h["steps"] for h in resumed.history[1:]] == [20, 11]
    for key in whole.masks:
        assert torch.equal(whole.masks[key], resumed.masks[key])
    for a, b in zip(whole_model.state_dict().values(), resumed_model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="round_steps"):  # budgets are part of the run's identity
        tickets.prune(_model(), _full_data(), checkpoint_dir=tmp_path / "cut", **dict(settings, round_steps={1: 21, 2: 11}))


def test_an_own_loop_with_budgets_equals_the_engine() -> None:
    settings = dict(rounds=3, epochs=4, batch_size=16, amount=0.3, rewind_to="1ep", precision="fp32", quiet=True,
                    lr_schedule=dict(milestones=[2, 3]), round_steps={1: 9, 2: 30})
    data, val = _data(96, 3), _data(48, 4)
    engine_model = _model()
    engine = tickets.prune(engine_model, PrACSampler(data, seed=0), eval_data=val, **settings)

    model = _model()
    search = TicketSearch(model, PrACSampler(data, seed=0), **settings)
    own_loop(search, model, val)  # the loop users write (tests/test_own_loop.py)
    mine = search.ticket
    assert [h["steps"] for h in mine.history[1:]] == [9, 30]
    keys = ("round", "sparsity", "set_size", "epochs", "epochs_trained", "start_step", "end_step", "steps", "samples",
            "val_acc", "best_epoch", "round_steps", "compressed_from", "next_set")
    for a, b in zip(mine.history, engine.history):
        for key in keys:
            assert a.get(key) == b.get(key), (a["round"], key)
    for key in mine.masks:
        assert torch.equal(mine.masks[key], engine.masks[key])
    for a, b in zip(model.state_dict().values(), engine_model.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("value, error, match", [
    ({0: 10}, ValueError, "round 0"),
    ([5, 10], ValueError, r"round_steps\[0\]"),
    ({1: 0}, ValueError, "int >= 1"),
    ({1: -3}, ValueError, "int >= 1"),
    ({1: 2.5}, ValueError, "int >= 1"),
    ({-1: 5}, ValueError, "ints >= 1"),
    ("12", TypeError, "round_steps must be"),
])
def test_bad_budgets_are_refused_with_the_value(value: Any, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        PrACOptions(round_steps=value)


def test_budgets_for_rounds_the_search_lacks_are_refused_and_fingerprinted_only_when_set() -> None:
    with pytest.raises(ValueError, match=r"round 3, but rounds=3 trains rounds 0..2"):
        TicketSearch(_model(), _full_data(), rounds=3, epochs=2, round_steps={1: 4, 3: 4})
    assert "round_steps" not in TicketSearch(_model(), _full_data(), rounds=3, epochs=2).config
    budgeted = TicketSearch(_model(), _full_data(), rounds=3, epochs=2, round_steps=[None, 4, None])
    assert budgeted.config["round_steps"] == {"1": 4} and budgeted.prac.round_steps == {1: 4}


# ---------------------------------------------------------------------- random subsets of the same sizes
def test_random_subsets_of_the_prac_sizes_train_exactly_the_prac_steps(prac_run, tmp_path: Path) -> None:
    prac, folder = prac_run
    sizes = [len(s) for s in tickets.load_prac_sets(folder)]
    assert sizes == [h["set_size"] for h in prac.history]
    sets = random_sets_like(TRAIN, sizes, seed=0)
    rand = tickets.prune(_model(), PrACSampler.replay(TRAIN, sets, seed=0), start_from=folder,
                         checkpoint_dir=tmp_path / "random", **COMMON)
    assert [h["set_size"] for h in rand.history] == sizes
    assert [h["steps"] for h in rand.history] == [h["steps"] for h in prac.history]
    assert [h["epochs"] for h in rand.history] == [h["epochs"] for h in prac.history]
    assert [s.tolist() for s in tickets.load_prac_sets(tmp_path / "random")] == [s.tolist() for s in sets]


def test_random_sets_like_round_zero_is_everything_and_rounds_draw_their_own_seed() -> None:
    labels = torch.arange(300) % 3
    sets = random_sets_like(labels, [300, 120, 120, 45], seed=7)
    assert torch.equal(sets[0], torch.arange(300)) and [len(s) for s in sets] == [300, 120, 120, 45]
    assert not torch.equal(sets[1], sets[2])  # same size, another draw
    assert all(torch.equal(a, b) for a, b in zip(sets, random_sets_like(labels.tolist(), [None, 120, 120, 45], seed=7)))
    assert not torch.equal(sets[1], random_sets_like(labels, [None, 120], seed=8)[1])
    assert torch.equal(random_sets_like(TRAIN, [N, 50], 0)[1], random_sets_like(TRAIN.tensors[1], [N, 50], 0)[1])
    with pytest.raises(ValueError, match=r"sizes\[0\] is 299"):
        random_sets_like(labels, [299, 10])
    with pytest.raises(ValueError, match=r"sizes\[1\] is 301"):
        random_sets_like(labels, [300, 301])
    with pytest.raises(ValueError, match="non-empty"):
        random_sets_like(labels, [])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 5), min_size=1, max_size=80), st.data(), st.integers(0, 2**32))
def test_stratified_subsets_keep_the_class_proportions(labels: list[int], data: st.DataObject, seed: int) -> None:
    n = len(labels)
    size = data.draw(st.integers(1, n))
    chosen = stratified_subset(labels, size, seed)
    assert chosen.dtype == torch.int64 and len(chosen) == size
    assert chosen.tolist() == sorted(set(chosen.tolist())) and 0 <= int(chosen.min()) and int(chosen.max()) < n
    assert torch.equal(chosen, stratified_subset(torch.tensor(labels), size, seed))  # deterministic for a seed
    t = torch.tensor(labels)
    picked = torch.bincount(t[chosen], minlength=6)
    for c, count in enumerate(torch.bincount(t, minlength=6).tolist()):
        assert abs(int(picked[c]) - size * count / n) < 1  # within 1 of the exact share


def test_stratified_subset_refuses_sizes_outside_the_split() -> None:
    for size in (0, 11, -1):
        with pytest.raises(ValueError, match=r"size must be in \[1, 10\]"):
            stratified_subset(list(range(10)), size)
    with pytest.raises(ValueError, match="seed"):
        stratified_subset([0, 1], 1, seed=-1)
    with pytest.raises(TypeError, match="integer class labels"):
        stratified_subset([0.5, 1.5], 1)
