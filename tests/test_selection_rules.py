"""Sample scores and selection rules (tickets.prac.scores, tickets.prac.score_rules): set
sizes, determinism, sets within the split, the same sets on every process, the paper's rule
unchanged, EL2N by hand, exact resumes, and every rule name through tickets.prune, own loops
and Lightning."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.utils.data import TensorDataset

import tickets
import tickets.prac.scores as scores_module
from tickets import BudgetRule, PrACSampler, RandomRule, ScoreRule, SelectionRule, TicketSearch
from tickets.prac.rules import select
from tickets.prac.score_rules import RULES, choose_next, record_for, resolve_rule
from tickets.prac.scores import EL2N, ScoreContext, ScoreRecord, SampleScore, register_score, SCORES
from tickets.prac.stats import SampleStats
from tickets.search.options import RunInterrupted

torch.set_num_threads(1)


def blobs(n: int, seed: int, noise: float = 1.6) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(3, 8, generator=g) * 1.5
    y = torch.arange(n) % 3
    return TensorDataset(centers[y] + noise * torch.randn(n, 8, generator=g), y)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


TRAIN, VAL = blobs(120, 0), blobs(30, 1)
RUN: dict[str, Any] = dict(rounds=4, epochs=3, batch_size=16, amount=0.3, rewind_to="1ep", precision="fp32",
                           eval_data=VAL, quiet=True)


def _strip(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if "wall_time" not in k} for h in history]


def _sets(sampler: PrACSampler, **kwargs: Any) -> tuple[tickets.Ticket, list[list[int]]]:
    found: list[list[int]] = []
    ticket = tickets.prune(mlp(), sampler, on_round=lambda entry: found.append(sampler.indices.tolist()),
                           **{**RUN, **kwargs})
    return ticket, found


# ---------------------------------------------------------------------- the paper's rule, unchanged
PAPER_SETS = [  # the sets the paper's rule chose on this run before the rules became pluggable
    [10, 14, 20, 37, 43, 44, 48, 53, 54, 55, 58, 64, 93, 100, 118],
    [2, 4, 5, 12, 14, 15, 24, 36, 37, 38, 41, 42, 53, 55, 57, 58, 68, 72, 74, 80, 87, 89, 93, 101, 105, 119],
    [4, 7, 10, 14, 16, 19, 22, 25, 28, 31, 34, 37, 40, 42, 43, 44, 46, 48, 54, 55, 58, 61, 64, 70, 72, 73, 79, 82, 85,
     93, 94, 100, 103, 105, 106, 109, 118],
]


@pytest.mark.parametrize("selection", [None, "paper", SelectionRule()])
def test_the_default_rule_picks_the_same_sets_as_before(selection: Any) -> None:
    ticket, found = _sets(PrACSampler(TRAIN, seed=0, selection=selection))
    assert found[:3] == PAPER_SETS
    assert ticket.history[1]["next_set"] == {"hard": 5, "disagree": 24, "added_by_disagreement": 21, "fallback": None,
                                             "size": 26, "fraction": 26 / 120}
    assert ticket.meta["selection"] == SelectionRule().to_dict()  # the fingerprint's form, no "rule" key
    assert isinstance(SelectionRule(), type(resolve_rule(None)))


@settings(max_examples=60, deadline=None)
@given(n=st.integers(4, 60), data=st.data())
def test_the_paper_rule_through_the_rule_interface_equals_select(n: int, data: st.DataObject) -> None:
    forgetting = torch.tensor(data.draw(st.lists(st.integers(-1, 4), min_size=n, max_size=n)))
    disagree = torch.tensor(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    targets = torch.arange(n) % 3
    rule = SelectionRule(top_fraction=data.draw(st.sampled_from([None, 0.5])), min_per_class=data.draw(st.integers(0, 2)))
    dense = torch.zeros(n, dtype=torch.long)
    context = ScoreContext(round=2, num_samples=n, forgetting=forgetting, predictions=disagree.long(),
                           dense_predictions=dense, targets=targets, current=torch.arange(n))
    chosen = choose_next(rule, SampleStats(n), context)
    expected = select(forgetting, disagree=disagree, targets=targets, rule=rule, current=torch.arange(n))
    assert torch.equal(chosen.indices, expected.indices) and chosen.info == expected.info


# ---------------------------------------------------------------------- properties of the rules
def _context(n: int, values: torch.Tensor, round_index: int = 1, budget: float | None = 0.3,
             targets: torch.Tensor | None = None) -> ScoreContext:
    forgetting = torch.where(values.isnan(), -1.0, (values * 3).floor()).long()
    return ScoreContext(round=round_index, num_samples=n, forgetting=forgetting, predictions=torch.zeros(n, dtype=torch.long),
                        dense_predictions=(values > 0.8).long(), targets=targets, current=torch.arange(n),
                        step_fraction=None if budget is None else (lambda size: budget))


values_strategy = st.integers(5, 80).flatmap(lambda n: st.lists(
    st.one_of(st.floats(0.0, 1.5, allow_nan=False), st.just(float("nan"))), min_size=n, max_size=n))

rules_strategy = st.one_of(
    st.builds(ScoreRule, fraction=st.one_of(st.none(), st.floats(0.01, 1.0)), order=st.sampled_from(["hardest", "easiest"]),
              skip_hardest=st.sampled_from([0.0, 0.1])),
    st.builds(BudgetRule, fraction=st.one_of(st.none(), st.floats(0.01, 1.0)), low=st.sampled_from([0.0, 0.1]),
              high=st.sampled_from([0.5, 1.0])),
    st.builds(RandomRule, fraction=st.one_of(st.none(), st.floats(0.01, 1.0)), seed=st.integers(0, 5)),
)


@settings(max_examples=150, deadline=None)
@given(raw=values_strategy, rule=rules_strategy, budget=st.floats(0.0, 1.2), round_index=st.integers(0, 4))
def test_rules_give_sets_of_the_specified_size_within_the_split_deterministically(
        raw: list[float], rule: Any, budget: float, round_index: int) -> None:
    n = len(raw)
    values = torch.tensor(raw, dtype=torch.float64)
    context = _context(n, values, round_index, budget, targets=torch.arange(n) % 3)
    given_values = {"el2n": values, "forgetting": scores_module.Forgetting(n).values(context),
                    "disagreement": scores_module.Disagreement(n).values(context)}
    chosen = rule.choose(given_values, context)
    again = rule.choose({k: v.clone() for k, v in given_values.items()}, context)
    assert torch.equal(chosen.indices, again.indices) and chosen.info == again.info  # deterministic
    idx = chosen.indices
    assert idx.numel() >= 1 and idx.dtype == torch.long
    assert int(idx.min()) >= 0 and int(idx.max()) < n and torch.equal(idx, torch.unique(idx))  # sorted, in the split
    paper = SelectionRule().choose(given_values, context).info["size"]
    requested = paper if rule.fraction is None else min(n, max(1, math.floor(rule.fraction * n + 0.5)))
    if isinstance(rule, RandomRule):
        assert idx.numel() == requested
        return
    assert chosen.info["requested"] == requested
    ranked = (~values.isnan()).sum().item()
    ranked -= math.floor(rule.skip_hardest * ranked)
    if chosen.info["fallback"] == "kept":  # nothing had a value: the current set stays
        assert ranked == 0 and torch.equal(idx, torch.arange(n))
        return
    assert idx.numel() == min(requested, ranked)  # the size, capped by the samples that have a value
    assert not bool(values[idx].isnan().any())
    if isinstance(rule, BudgetRule):
        share = min(1.0, max(0.0, (budget - rule.low) / (rule.high - rule.low)))
        assert chosen.info["hard"] == math.floor(share * idx.numel() + 0.5)
        assert chosen.info["hard"] + chosen.info["easy"] == idx.numel()


def test_hardest_easiest_and_the_budget_mix_by_hand() -> None:
    values = torch.tensor([0.5, 0.9, float("nan"), 0.1, 0.7, 0.3, 0.9, 0.2], dtype=torch.float64)
    context = _context(8, values, budget=0.5)
    assert ScoreRule(fraction=0.25).choose({"el2n": values}, context).indices.tolist() == [1, 6]  # tie: lower index first
    assert ScoreRule(fraction=0.25, order="easiest").choose({"el2n": values}, context).indices.tolist() == [3, 7]
    assert ScoreRule(fraction=0.25, skip_hardest=0.3).choose({"el2n": values}, context).indices.tolist() == [0, 4]
    mixed = BudgetRule(fraction=0.5).choose({"el2n": values}, context)  # k = 4, h = 0.5: 2 hardest + 2 easiest
    assert mixed.indices.tolist() == [1, 3, 6, 7] and (mixed.info["hard"], mixed.info["easy"]) == (2, 2)
    assert BudgetRule(fraction=0.5, low=0.5).choose({"el2n": values}, context).indices.tolist() == [0, 3, 5, 7]
    assert BudgetRule(fraction=0.5, high=0.5).choose({"el2n": values}, context).indices.tolist() == [0, 1, 4, 6]
    assert BudgetRule().hard_fraction(0.25) == 0.25 and BudgetRule(low=0.2, high=0.6).hard_fraction(0.4) == pytest.approx(0.5)


def test_the_random_rule_draws_what_random_sets_like_draws() -> None:
    targets = torch.arange(90) % 3
    rule = RandomRule(fraction=0.2, seed=3)
    sets = tickets.random_sets_like(targets, [90, 18, 18, 18], seed=3)
    for k in range(3):
        context = ScoreContext(round=k, num_samples=90, targets=targets, current=torch.arange(90))
        assert torch.equal(rule.choose({}, context).indices, sets[k + 1])
    no_labels = rule.choose({}, ScoreContext(round=0, num_samples=90))
    assert no_labels.indices.numel() == 18 and torch.equal(no_labels.indices, rule.choose({}, ScoreContext(0, 90)).indices)


def test_names_objects_and_their_errors() -> None:
    assert set(RULES) == {"paper", "el2n", "easiest", "forgetting", "random", "budget"}
    assert resolve_rule("el2n") == ScoreRule(score="el2n") and resolve_rule("budget") == BudgetRule()
    assert resolve_rule("easiest") == ScoreRule(order="easiest") and resolve_rule("random") == RandomRule()
    assert tickets.PrACOptions(selection="budget").selection == BudgetRule()  # a name is stored as its rule
    assert PrACSampler(TRAIN, selection=ScoreRule(fraction=0.5)).selection == ScoreRule(fraction=0.5)
    with pytest.raises(ValueError, match=r"unknown selection rule 'hard'; valid names: \['budget', 'easiest', 'el2n'"):
        PrACSampler(TRAIN, selection="hard")
    with pytest.raises(ValueError, match="unknown selection rule"):
        tickets.PrACOptions(selection="el2m")
    with pytest.raises(TypeError, match="selection must be a rule name"):
        PrACSampler(TRAIN, selection=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"unknown score 'el3n'; valid scores: \['disagreement', 'el2n'"):
        ScoreRule(score="el3n")
    with pytest.raises(ValueError, match="fraction must be a fraction of the training split in \\(0, 1\\]"):
        BudgetRule(fraction=1.5)
    with pytest.raises(ValueError, match="low must be below high"):
        BudgetRule(low=0.5, high=0.5)
    with pytest.raises(ValueError, match="order must be 'hardest' or 'easiest'"):
        ScoreRule(order="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="skip_hardest must be a fraction in \\[0, 1\\)"):
        ScoreRule(skip_hardest=1.0)
    with pytest.raises(ValueError, match="el2n_epochs must be an int >= 1"):
        ScoreRule(el2n_epochs=0)
    with pytest.raises(ValueError, match="two selection rules"):
        TicketSearch(mlp(), PrACSampler(TRAIN, selection="el2n"), rounds=2, selection="budget", quiet=True)
    assert BudgetRule(low=0.1).to_dict() == {"rule": "budget", "fraction": None, "seed": 0, "score": "el2n",
                                             "skip_hardest": 0.0, "el2n_epochs": None, "low": 0.1, "high": 1.0}


def test_a_score_of_ones_own_is_usable_by_name() -> None:
    class Margin(SampleScore):
        name = "test-margin"

        def values(self, context: ScoreContext) -> torch.Tensor:
            return torch.arange(context.num_samples, dtype=torch.float64)

    register_score(Margin)
    try:
        with pytest.raises(ValueError, match="exists"):
            register_score(Margin)
        chosen = choose_next(ScoreRule(score="test-margin", fraction=0.1), SampleStats(50), ScoreContext(1, 50))
        assert chosen.indices.tolist() == [45, 46, 47, 48, 49]
    finally:
        SCORES.pop("test-margin")


# ---------------------------------------------------------------------- EL2N
def _el2n(logits: list[float], label: int) -> float:
    top = max(logits)
    exp = [math.exp(v - top) for v in logits]
    p = [e / sum(exp) for e in exp]
    return math.sqrt(sum((pi - (1.0 if i == label else 0.0)) ** 2 for i, pi in enumerate(p)))


def test_el2n_values_by_hand() -> None:
    score = EL2N(4)
    a, b, c = [2.0, 0.0, -1.0], [0.5, 0.4, 0.1], [-3.0, 1.0, 1.0]
    # epoch 1: sample 0 twice (one epoch counts with its mean), sample 1 once; sample 2 once
    score.observe(torch.tensor([0, 1]), torch.tensor([a, b]), torch.tensor([0, 2]))
    score.observe(torch.tensor([0, 2]), torch.tensor([c, a]), torch.tensor([0, 1]))
    score.flush()
    # epoch 2: sample 0 and 1 again
    score.observe(torch.tensor([1, 0]), torch.tensor([c, b]), torch.tensor([1, 1]))
    score.flush()
    got = score.values(ScoreContext(0, 4))
    expected0 = ((_el2n(a, 0) + _el2n(c, 0)) / 2 + _el2n(b, 1)) / 2
    expected1 = (_el2n(b, 2) + _el2n(c, 1)) / 2
    assert got[0].item() == pytest.approx(expected0, rel=1e-6)
    assert got[1].item() == pytest.approx(expected1, rel=1e-6)
    assert got[2].item() == pytest.approx(_el2n(a, 1), rel=1e-6)
    assert math.isnan(got[3].item())  # never shown: no value
    assert score.summary()["el2n_seen"] == 3
    early = EL2N(4, first_epochs=1)  # the round's first epoch only
    early.observe(torch.tensor([0]), torch.tensor([a]), torch.tensor([0]))
    early.flush()
    early.observe(torch.tensor([0]), torch.tensor([c]), torch.tensor([0]))
    early.flush()
    assert early.values(ScoreContext(0, 4))[0].item() == pytest.approx(_el2n(a, 0), rel=1e-6)
    # the next round: samples not shown keep their latest value
    later = EL2N(4)
    later.carry(score.state_dict())
    later.observe(torch.tensor([1]), torch.tensor([a]), torch.tensor([0]))
    later.flush()
    v = later.values(ScoreContext(1, 4))
    assert v[1].item() == pytest.approx(_el2n(a, 0), rel=1e-6) and v[0].item() == got[0].item()
    assert v[2].item() == got[2].item() and math.isnan(v[3].item())


def test_el2n_of_two_simulated_processes_equals_one(monkeypatch: pytest.MonkeyPatch) -> None:
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(40, 5, generator=g), torch.randint(0, 5, (40,), generator=g)
    order = torch.randperm(40, generator=g)
    one = EL2N(40)
    ranks = [EL2N(40, distributed=True), EL2N(40, distributed=True)]
    for epoch in range(2):
        for start in range(0, 40, 8):  # each process gets every other batch, as a ShardSampler would split
            idx = order[start:start + 8]
            one.observe(idx, logits[idx] * (epoch + 1), labels[idx])
            ranks[(start // 8) % 2].observe(idx, logits[idx] * (epoch + 1), labels[idx])
        one.flush()
        buffers = [r._epoch.clone() for r in ranks]
        for r, other in zip(ranks, reversed(buffers)):  # the all-reduce: each adds the other's epoch
            monkeypatch.setattr(scores_module, "is_active", lambda: True)
            monkeypatch.setattr(scores_module, "_comm_device", lambda device: torch.device("cpu"))
            monkeypatch.setattr(scores_module.dist, "all_reduce", lambda t, op=None, other=other: t.add_(other))
            r.flush()
    context = ScoreContext(0, 40)
    assert torch.equal(ranks[0].values(context), one.values(context))
    assert torch.equal(ranks[1].values(context), one.values(context))
    for rule in (ScoreRule(fraction=0.3), BudgetRule(fraction=0.3)):
        sets = [rule.choose({"el2n": r.values(context)}, _context(40, r.values(context))).indices for r in ranks]
        assert torch.equal(sets[0], sets[1])


def test_the_record_holds_only_what_the_rule_needs() -> None:
    assert type(record_for(SelectionRule(), 10)) is SampleStats  # the paper's rule: the statistics as before
    assert type(record_for(RandomRule(), 10)) is SampleStats
    assert type(record_for(ScoreRule(score="forgetting"), 10)) is SampleStats
    record = record_for(BudgetRule(el2n_epochs=2), 10)
    assert isinstance(record, ScoreRecord) and record.scores_by_name["el2n"].first_epochs == 2  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match=r"no record of the score\(s\) \['el2n'\]"):
        record.load_state_dict(SampleStats(10).state_dict())
    plain = SampleStats(10)
    plain.load_state_dict(record.state_dict())  # the paper's rule reads a richer record's statistics


# ---------------------------------------------------------------------- through the search
@pytest.mark.parametrize("name", sorted(RULES))
def test_every_rule_name_through_prune(name: str) -> None:
    sampler = PrACSampler(TRAIN, seed=0, selection=name)
    ticket, found = _sets(sampler, rounds=3)
    assert ticket.meta["selection"] == resolve_rule(name).to_dict()
    assert [len(s) for s in found[:2]] == [h["set_size"] for h in ticket.history[1:]]
    for chosen in found:
        assert 1 <= len(chosen) <= 120 and chosen == sorted(set(chosen)) and 0 <= chosen[0] and chosen[-1] < 120
    again_sampler = PrACSampler(TRAIN, seed=0)
    again, again_found = _sets(again_sampler, rounds=3, selection=name)  # PrACOptions.selection: the same search
    assert again_found == found and _strip(again.history) == _strip(ticket.history)
    if name in ("el2n", "easiest", "budget"):
        assert ticket.history[0]["stats_el2n_seen"] == 120
    if name == "budget":  # b = steps of the next round / steps of a full round (24 steps - rewind 8)
        for k in (0, 1):
            info = ticket.history[k]["next_set"]
            assert info["budget"] == round(ticket.history[k + 1]["steps"] / 16, 6)
            assert info["hard"] == math.floor(info["hard_fraction"] * info["size"] + 0.5)


def test_the_budget_rule_follows_round_steps_budgets() -> None:
    ticket, _ = _sets(PrACSampler(TRAIN, seed=0, selection="budget"), rounds=3, round_steps={1: 12, 2: 4})
    assert [h["steps"] for h in ticket.history[1:]] == [12, 4]
    assert [ticket.history[k]["next_set"]["budget"] for k in (0, 1)] == [0.75, 0.25]


def test_the_fingerprint_holds_the_rule(tmp_path: Path) -> None:
    tickets.prune(mlp(), PrACSampler(TRAIN, selection="el2n"), checkpoint_dir=tmp_path, **{**RUN, "rounds": 2})
    with pytest.raises(ValueError, match="other settings.*selection"):
        tickets.prune(mlp(), PrACSampler(TRAIN, selection=ScoreRule(fraction=0.5)), checkpoint_dir=tmp_path,
                      **{**RUN, "rounds": 2})


@pytest.mark.parametrize("crash_at", [(0, 2), (1, 2)])
def test_a_run_with_el2n_resumed_mid_round_equals_the_uninterrupted_one(tmp_path: Path, crash_at: tuple[int, int]) -> None:
    kwargs = {**RUN, "rounds": 3, "epochs": 4, "checkpoint_every": 1}
    whole, whole_sets = _sets(PrACSampler(TRAIN, seed=2, selection="budget"), checkpoint_dir=tmp_path / "whole", **kwargs)

    def crash(k: int, entry: dict[str, Any]) -> None:
        if (k, entry["epoch"]) == crash_at:
            raise RunInterrupted("stopped mid-round")

    with pytest.raises(RunInterrupted):
        tickets.prune(mlp(), PrACSampler(TRAIN, seed=2, selection="budget"), checkpoint_dir=tmp_path / "cut",
                      on_epoch=crash, **kwargs)
    state = torch.load(tmp_path / "cut" / "state.pt", weights_only=False)
    assert state["trainer"]["stats"]["scores"]["el2n"]["epoch"] == 2  # saved mid-round with its EL2N record
    resumed, resumed_sets = _sets(PrACSampler(TRAIN, seed=2, selection="budget"), checkpoint_dir=tmp_path / "cut", **kwargs)
    assert _strip(resumed.history) == _strip(whole.history)
    assert resumed_sets == whole_sets[len(whole_sets) - len(resumed_sets):]
    assert [s.tolist() for s in tickets.load_prac_sets(tmp_path / "cut")] == \
        [s.tolist() for s in tickets.load_prac_sets(tmp_path / "whole")]
    for key, mask in whole.masks.items():
        assert torch.equal(resumed.masks[key], mask)


def test_extending_an_el2n_run_equals_running_it_longer(tmp_path: Path) -> None:
    longer, longer_sets = _sets(PrACSampler(TRAIN, seed=1, selection="el2n"), rounds=4)
    _sets(PrACSampler(TRAIN, seed=1, selection="el2n"), rounds=2, checkpoint_dir=tmp_path)
    extended, _ = _sets(PrACSampler(TRAIN, seed=1, selection="el2n"), rounds=4, checkpoint_dir=tmp_path)
    assert _strip(extended.history) == _strip(longer.history)
    assert [s.tolist() for s in tickets.load_prac_sets(tmp_path)] == [list(range(120))] + longer_sets[:3]


def test_start_from_across_rules(tmp_path: Path) -> None:
    tickets.prune(mlp(), PrACSampler(TRAIN, seed=0), checkpoint_dir=tmp_path / "paper", **{**RUN, "rounds": 1})
    with pytest.raises(ValueError, match=r"start_from=.*no record of the score\(s\) \['el2n'\].*run the search with this rule first"):
        tickets.prune(mlp(), PrACSampler(TRAIN, seed=0, selection="el2n"), checkpoint_dir=tmp_path / "el2n",
                      start_from=tmp_path / "paper", **RUN)
    tickets.prune(mlp(), PrACSampler(TRAIN, seed=0, selection="budget"), checkpoint_dir=tmp_path / "budget",
                  **{**RUN, "rounds": 1})
    paper, paper_sets = _sets(PrACSampler(TRAIN, seed=0), checkpoint_dir=tmp_path / "p2", start_from=tmp_path / "budget")
    assert paper_sets[:2] == PAPER_SETS[1:3]  # the paper's search from a budget search's round 0: the same sets
    el2n, _ = _sets(PrACSampler(TRAIN, seed=0, selection="el2n"), checkpoint_dir=tmp_path / "e2",
                    start_from=tmp_path / "budget")
    direct, _ = _sets(PrACSampler(TRAIN, seed=0, selection="el2n"))
    assert [h["set_size"] for h in el2n.history] == [h["set_size"] for h in direct.history]
    # EL2N averaged over other epochs there: its values are not this rule's, so it is refused
    early = ScoreRule(score="el2n", el2n_epochs=1)
    with pytest.raises(ValueError, match=r"start_from=.*all epochs of the round \(first_epochs=None\); this one over the round's first 1 epoch"):
        tickets.prune(mlp(), PrACSampler(TRAIN, seed=0, selection=early), checkpoint_dir=tmp_path / "e3",
                      start_from=tmp_path / "budget", **RUN)


@pytest.mark.parametrize("saved, loading", [(None, 2), (2, None), (1, 2)])
def test_an_el2n_record_of_other_epochs_is_refused(saved: int | None, loading: int | None) -> None:
    score = EL2N(6, first_epochs=saved)
    score.observe(torch.arange(3), torch.randn(3, 4), torch.tensor([0, 1, 2]))
    score.flush()
    with pytest.raises(ValueError, match=f"first_epochs={loading!r}"):
        EL2N(6, first_epochs=loading).load_state_dict(score.state_dict())
    again = EL2N(6, first_epochs=saved)
    again.load_state_dict(score.state_dict())  # the same epochs: restored exactly
    torch.testing.assert_close(again.values(ScoreContext(0, 6)), score.values(ScoreContext(0, 6)), rtol=0, atol=0, equal_nan=True)


def _own_loop(search: TicketSearch, model: nn.Module, stop_in_round: int | None = None) -> None:
    from test_own_loop import own_loop  # the loop users write (SGD lr 0.1, momentum 0.9, wd 1e-4: the engine's)

    own_loop(search, model, VAL, stop_in_round=stop_in_round)


def test_an_own_loop_with_the_budget_rule_matches_the_engine_and_resumes(tmp_path: Path) -> None:
    engine, engine_sets = _sets(PrACSampler(TRAIN, seed=0, selection="budget"))
    model = mlp()
    sampler = PrACSampler(TRAIN, seed=0, selection="budget")
    options = {k: v for k, v in RUN.items() if k != "eval_data"}
    search = TicketSearch(model, sampler, checkpoint_dir=tmp_path, **options)
    with pytest.raises(KeyboardInterrupt):
        _own_loop(search, model, stop_in_round=2)
    search.close()
    model = mlp()
    sampler = PrACSampler(TRAIN, seed=0, selection="budget")
    search = TicketSearch(model, sampler, checkpoint_dir=tmp_path, **options)
    _own_loop(search, model)
    assert [h["size"] for h in sampler.history] == [len(s) for s in engine_sets[:3]]
    for a, b in zip(search.ticket.history, engine.history):
        for key in ("set_size", "steps", "stats_el2n_seen", "stats_el2n_mean", "next_set"):
            assert a.get(key) == b.get(key), (a["round"], key)


def test_the_lightning_callback_with_the_el2n_rule_matches_the_engine() -> None:
    pytest.importorskip("lightning.pytorch")
    from test_lightning import Module, fit
    from tickets.integrations.lightning import TicketCallback

    engine, engine_sets = _sets(PrACSampler(TRAIN, seed=0, selection="el2n"), eval_data=None)
    model = mlp()
    sampler = PrACSampler(TRAIN, seed=0, selection="el2n")
    search = TicketSearch(model, sampler, **{k: v for k, v in RUN.items() if k != "eval_data"})
    fit(Module(model, search), TicketCallback(search))
    assert [h["size"] for h in sampler.history] == [len(s) for s in engine_sets[:3]]
    assert torch.equal(sampler.indices, torch.tensor(engine_sets[-1]))


def test_two_processes_pick_the_same_sets_with_el2n_and_the_budget_rule(tmp_path: Path) -> None:
    from test_distributed import launch, results, same_run

    done = launch(tmp_path / "out", "rule:budget", tmp_path / "ck")  # torchrun, 2 processes, gloo
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = results(tmp_path / "out")
    same_run(r0, r1)  # identical masks, sets and history (next_set included) on both ranks
    assert r0["history"][0]["next_set"]["rule"] == "budget" and r0["history"][0]["stats_el2n_seen"] == 100
    assert r0["history"][0]["next_set"] == r1["history"][0]["next_set"]
    assert [h["stats_el2n_mean"] for h in r0["history"]] == [h["stats_el2n_mean"] for h in r1["history"]]
