"""PrACSampler and IndexedDataset: the set, the order, and index attribution with workers."""

from __future__ import annotations

import time

import pytest
import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset

from tickets.data.sampling import IndexedDataset, targets_of
from tickets.prac.sampler import PrACSampler
from tickets.prac.stats import SampleStats


def _data(n: int = 50) -> TensorDataset:
    return TensorDataset(torch.arange(n).float().unsqueeze(1), torch.arange(n) % 3)


def test_every_index_of_the_set_is_yielded_once_per_epoch() -> None:
    sampler = PrACSampler(_data(50), seed=3)
    assert sorted(sampler) == list(range(50))
    sampler.update([4, 9, 9, 1, 30])
    assert len(sampler) == 4 and sorted(sampler) == [1, 4, 9, 30]
    assert sampler.fraction == pytest.approx(4 / 50)


def test_order_depends_on_seed_and_epoch_only() -> None:
    a, b = PrACSampler(_data(), seed=1), PrACSampler(_data(), seed=1)
    torch.manual_seed(123)
    first = list(a)
    torch.manual_seed(999)  # the global RNG does not matter
    assert list(b) == first
    a.set_epoch(1)
    assert list(a) != first
    assert list(PrACSampler(_data(), seed=2)) != first
    assert list(PrACSampler(_data(), shuffle=False)) == list(range(50))


def test_update_records_how_each_set_was_built() -> None:
    sampler = PrACSampler(_data())
    sampler.begin_round(0)
    sampler.update(torch.tensor([True] * 10 + [False] * 40), info={"hard": 7, "disagree": 3})
    entry = sampler.history[-1]
    assert entry["after_round"] == 0 and entry["size"] == 10 and entry["hard"] == 7
    assert torch.equal(sampler.indices, torch.arange(10))


def test_bad_sets_are_refused_with_the_bad_value() -> None:
    sampler = PrACSampler(_data(10))
    with pytest.raises(ValueError, match="index 10"):
        sampler.update([0, 10])
    with pytest.raises(ValueError, match="empty"):
        sampler.update([])
    with pytest.raises(ValueError, match="10 entries"):
        sampler.update(torch.ones(3, dtype=torch.bool))
    with pytest.raises(TypeError, match="seed"):
        PrACSampler(_data(10), seed="0")  # type: ignore[arg-type]


def test_replay_uses_the_given_set_of_each_round() -> None:
    sampler = PrACSampler.replay(_data(20), [list(range(20)), [1, 2, 3], [5]])
    assert not sampler.adaptive and len(sampler) == 20
    sampler.begin_round(1)
    assert sorted(sampler) == [1, 2, 3]
    sampler.begin_round(7)  # after the last set: keep the last
    assert list(sampler) == [5]


def test_state_dict_round_trip() -> None:
    sampler = PrACSampler(_data(), seed=5)
    sampler.begin_round(2)
    sampler.update([3, 4, 5], info={"hard": 3})
    sampler.set_epoch(4)
    other = PrACSampler(_data(), seed=5)
    other.load_state_dict(sampler.state_dict())
    assert list(other) == list(sampler) and other.history == sampler.history


def test_targets_of_reads_tensor_datasets_and_subsets() -> None:
    data = _data(9)
    assert torch.equal(targets_of(data), torch.arange(9) % 3)
    sub = torch.utils.data.Subset(data, [2, 4])
    assert targets_of(sub).tolist() == [2, 1]


class _SlowOddItems(Dataset):
    """Input = the sample's index; odd indices are slow, so workers finish out of order."""

    def __len__(self) -> int:
        return 64

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i % 2:
            time.sleep(0.002)
        return torch.tensor([float(i)]), i % 4


def test_two_workers_attribute_every_sample_to_its_own_index() -> None:
    data = _SlowOddItems()
    sampler = PrACSampler(data, seed=0)
    sampler.update(list(range(0, 64, 3)) + [1, 5])
    loader = DataLoader(IndexedDataset(data), batch_size=5, sampler=sampler, num_workers=2,
                        persistent_workers=True, prefetch_factor=3)
    stats = SampleStats(len(data))
    shown: list[int] = []
    for epoch in range(2):
        sampler.set_epoch(epoch)
        for x, y, idx in loader:
            assert torch.equal(x.squeeze(1).long(), idx)  # the index travelled with its sample
            assert torch.equal(y, idx % 4)
            # "prediction" right exactly for even indices in epoch 0, for none in epoch 1
            correct = (idx % 2 == 0) & torch.tensor(epoch == 0)
            stats.record(idx, correct)
            shown += idx.tolist()
    chosen = set(sampler.indices.tolist())
    assert sorted(shown) == sorted(list(chosen) * 2)
    forgot = set(stats.forgetting_counts.nonzero().flatten().tolist())
    assert forgot == {i for i in chosen if i % 2 == 0}
    assert set(stats.never_learned.nonzero().flatten().tolist()) == {i for i in chosen if i % 2}
    assert int(stats.times_seen.sum()) == 2 * len(chosen)
