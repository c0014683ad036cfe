"""Per-sample statistics and PrAC selection."""

from __future__ import annotations

import pytest
import torch

from tickets.prac.stats import EmptySelectionError, SampleStats
from tickets.prac.rules import SelectionRule, disagreement, select
from tickets.training.evaluation import predict


def _reference_counts(history: list[list[int | None]]) -> list[int]:
    """Forgetting events from per-epoch 0/1/None (not shown) records, the slow obvious way."""
    counts = []
    for row in history:
        shown = [c for c in row if c is not None]
        counts.append(sum(1 for a, b in zip(shown, shown[1:]) if a == 1 and b == 0))
    return counts


def test_forgetting_counts_match_the_definition_on_random_records() -> None:
    g = torch.Generator().manual_seed(0)
    n, epochs = 40, 7
    stats = SampleStats(n)
    history: list[list[int | None]] = [[] for _ in range(n)]
    for _ in range(epochs):
        shown = torch.randperm(n, generator=g)[: 30]
        correct = torch.rand(30, generator=g) > 0.4
        for i, c in zip(shown.tolist(), correct.tolist()):
            history[i].append(int(c))
        for i in set(range(n)) - set(shown.tolist()):
            history[i].append(None)
        for chunk in torch.arange(30).split(8):  # batches
            stats.record(shown[chunk], correct[chunk])
    assert stats.forgetting_counts.tolist() == _reference_counts(history)
    assert stats.times_seen.tolist() == [sum(c is not None for c in row) for row in history]
    never = [bool(row) and all(c in (0, None) for c in row) and any(c is not None for c in row) for row in history]
    assert stats.never_learned.tolist() == never


def test_update_takes_logits_and_targets() -> None:
    stats = SampleStats(4)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    stats.update(torch.tensor([0, 1, 2]), logits, torch.tensor([0, 0, 0]))
    stats.update(torch.tensor([0, 1, 2]), logits.flip(1), torch.tensor([0, 0, 0]))
    assert stats.forgetting_counts.tolist() == [1, 0, 1, 0]
    assert stats.ever_correct.tolist() == [True, True, True, False]
    assert stats.never_learned.tolist() == [False] * 4  # sample 3 was never shown


def test_scores_rank_never_learned_first_and_unseen_last() -> None:
    stats = SampleStats(5)
    stats.record(torch.tensor([0, 1, 2, 3]), torch.tensor([True, True, False, True]))
    stats.record(torch.tensor([0, 1, 2, 3]), torch.tensor([False, True, False, True]))
    stats.record(torch.tensor([0, 1, 2, 3]), torch.tensor([True, True, False, False]))
    score = stats.scores()
    assert score.tolist() == [1, 0, 2, 1, -1]  # 2 never learned -> max + 1; 4 unseen -> -1
    assert stats.summary() == {"seen": 4, "forgotten": 2, "never_learned": 1, "forgetting_events": 2}


def test_default_rule_keeps_forgotten_and_never_learned_samples() -> None:
    chosen = select(torch.tensor([0, 3, 0, 1, -1, 5]))
    assert chosen.indices.tolist() == [1, 3, 5]
    assert chosen.info["hard"] == 3 and chosen.info["size"] == 3


def test_disagreement_samples_re_enter_the_set() -> None:
    scores = torch.tensor([0, 2, -1, -1, 0])  # samples 2 and 3 were not trained on this round
    disagree = torch.tensor([False, False, True, False, True])
    chosen = select(scores, disagree=disagree)
    assert chosen.indices.tolist() == [1, 2, 4]
    assert chosen.info["added_by_disagreement"] == 2 and chosen.info["disagree"] == 2
    no_prune_side = select(scores, disagree=disagree, rule=SelectionRule(use_disagreement=False))
    assert no_prune_side.indices.tolist() == [1]


def test_top_fraction_and_per_class_balance() -> None:
    scores = torch.tensor([5, 4, 3, 2, 1, 0, 0, 0])
    targets = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    top = select(scores, rule=SelectionRule(top_fraction=0.25))
    assert top.indices.tolist() == [0, 1]
    balanced = select(scores, targets=targets, rule=SelectionRule(top_fraction=0.25, per_class=True))
    assert balanced.indices.tolist() == [0, 4]
    floor = select(scores, targets=targets, rule=SelectionRule(min_per_class=2))
    assert floor.indices.tolist() == [0, 1, 2, 3, 4, 5]


def test_empty_selection_is_an_error_or_keeps_the_current_set() -> None:
    scores = torch.zeros(6, dtype=torch.long)
    with pytest.raises(EmptySelectionError, match="empty"):
        select(scores, rule=SelectionRule(empty="error"))
    kept = select(scores, current=torch.tensor([1, 2]))
    assert kept.indices.tolist() == [1, 2] and kept.info["fallback"] == "kept"


def test_bad_rules_name_the_value() -> None:
    with pytest.raises(ValueError, match="top_fraction"):
        SelectionRule(top_fraction=1.5)
    with pytest.raises(ValueError, match="per_class"):
        SelectionRule(per_class=True)
    with pytest.raises(ValueError, match="empty"):
        SelectionRule(empty="all")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="targets"):
        select(torch.zeros(3, dtype=torch.long), rule=SelectionRule(min_per_class=1))


def test_predict_runs_in_eval_mode_and_disagreement_compares_argmax() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Dropout(0.9))
    model.train()
    data = torch.utils.data.TensorDataset(torch.randn(10, 3), torch.zeros(10, dtype=torch.long))
    a, labels = predict(model, data, batch_size=4)
    b, _ = predict(model, data, batch_size=3)
    assert model.training and torch.equal(a, b) and labels.tolist() == [0] * 10
    assert disagreement(a, 1 - a).all()
    with pytest.raises(ValueError, match="length"):
        disagreement(a, a[:3])


def test_state_dict_round_trip() -> None:
    stats = SampleStats(3)
    stats.record(torch.tensor([0, 2]), torch.tensor([True, False]))
    other = SampleStats(3)
    other.load_state_dict(stats.state_dict())
    assert torch.equal(other.scores(), stats.scores())
    with pytest.raises(ValueError, match="another data set"):
        SampleStats(4).load_state_dict(stats.state_dict())
