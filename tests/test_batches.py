"""The batching rule (tickets.data.batching): no train-mode batch of one sample anywhere (engine, DataLoader
path, search.loader(), own loops, Lightning, per process under torch.distributed), the step counts
equal to the schedule's, drop_last refused with its reason, an epoch of one sample refused."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import tickets
from tickets import PrACSampler, Schedule, TicketSearch
from tickets.data.batching import EpochBatchSampler, batch_sizes, num_batches, split_batches
from tickets.data.images import ImageDataset
from tickets.data.transforms import Normalize
from tickets.parallel import ShardSampler


def blobs(n: int, classes: int = 3, dim: int = 8, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 1.5
    y = torch.arange(n) % classes
    return TensorDataset(centers[y] + torch.randn(n, dim, generator=g), y)


def bn_mlp(seed: int = 0, dim: int = 8, classes: int = 3) -> nn.Module:
    """BatchNorm1d raises on a train-mode batch of one sample."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 16), nn.BatchNorm1d(16),
                         nn.ReLU(), nn.Linear(16, classes))


def bn_convnet(seed: int = 0, classes: int = 3) -> nn.Module:
    """A conv net whose BatchNorm sees one value per channel per sample (like resnet18's layer4 at 1x1)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(8), nn.Flatten(), nn.ReLU(), nn.Linear(8, classes))


def images(n: int, classes: int = 3, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
    return ImageDataset(pixels, (torch.arange(n) % classes).tolist(), transform=Normalize((0.5,) * 3, (0.25,) * 3))


def test_a_batch_of_one_sample_fails_in_batchnorm_so_the_tests_mean_something() -> None:
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        bn_mlp().train()(torch.randn(1, 8))


# ---------------------------------------------------------------------- the rule
@settings(max_examples=300, deadline=None)
@given(n=st.integers(2, 3000), batch=st.integers(2, 300))
def test_batches_partition_the_epoch_none_of_one_sample_and_count_the_schedules_steps(n: int, batch: int) -> None:
    sizes = batch_sizes(n, batch)
    assert sum(sizes) == n and min(sizes) >= 2 and max(sizes) <= batch + 1
    assert len(sizes) == num_batches(n, batch) == Schedule(batch_size=batch).steps_per_epoch(n)
    expected = n // batch if n % batch == 1 and n > batch else math.ceil(n / batch)
    assert len(sizes) == expected
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n * 7 + batch))
    chunks = split_batches(order, batch)
    assert [len(c) for c in chunks] == sizes
    assert torch.equal(torch.cat(chunks), order)  # consecutive slices of the order: a partition
    sampler_batches = list(EpochBatchSampler(order.tolist(), batch))
    assert [list(b) for b in sampler_batches] == [c.tolist() for c in chunks]
    assert len(EpochBatchSampler(order.tolist(), batch)) == len(sizes)


@settings(max_examples=150, deadline=None)
@given(n=st.integers(2, 600), per_rank=st.integers(2, 40), world=st.sampled_from([1, 2, 3, 4]))
def test_per_process_batches_under_torchrun_follow_the_rule(n: int, per_rank: int, world: int) -> None:
    """ShardSampler shares of every epoch, cut with the per-process batch: the same count on every
    rank (= Schedule.steps_per_epoch(n, world)), no per-process batch of one, every sample trained."""
    batch = per_rank * world
    base = list(torch.randperm(n, generator=torch.Generator().manual_seed(n)).tolist())
    if math.ceil(n / world) < 2:
        with pytest.raises(ValueError, match="at least 2 samples per process"):
            Schedule(batch_size=batch).steps_per_epoch(n, world)
        return
    steps = Schedule(batch_size=batch).steps_per_epoch(n, world)
    seen: set[int] = set()
    for rank in range(world):
        shard = ShardSampler(base, rank, world)  # type: ignore[arg-type]
        rank_batches = list(EpochBatchSampler(shard, per_rank))
        assert len(rank_batches) == steps == len(EpochBatchSampler(shard, per_rank))
        assert min(len(b) for b in rank_batches) >= 2
        seen.update(i for b in rank_batches for i in b)
    assert seen == set(base)
    if world == 1:
        assert steps == num_batches(n, batch)


def test_an_epoch_of_one_sample_is_refused_with_the_set_named() -> None:
    with pytest.raises(ValueError, match="1 sample.*at least 2 samples"):
        Schedule(batch_size=8).steps_per_epoch(1)
    with pytest.raises(ValueError, match="the training set has 1 sample"):
        TicketSearch(bn_mlp(), blobs(1), rounds=2, epochs=1, batch_size=8, quiet=True)
    with pytest.raises(ValueError, match="training epoch.*1 sample"):
        tickets.train(bn_mlp(), blobs(1), epochs=1, batch_size=8)
    # a PrAC set of one sample in a later round: refused when the round begins, naming it
    train = blobs(20)
    search = TicketSearch(bn_mlp(), PrACSampler.replay(train, [torch.arange(20), torch.tensor([3])]), rounds=2,
                          epochs=1, batch_size=8, precision="fp32", quiet=True)
    rnd = search.begin_round()
    optimizer = torch.optim.SGD(search.model.parameters(), lr=0.05)
    for _ in rnd:
        for x, y, idx in rnd.batches(search.loader()):
            logits = search.model(x)
            optimizer.zero_grad()
            F.cross_entropy(logits, y).backward()
            optimizer.step()
            rnd.report(idx, logits, y)
    search.end_round()
    with pytest.raises(ValueError, match="round 1's PrAC set has 1 sample"):
        search.begin_round()
    # evaluation of one sample is fine (no train mode)
    assert tickets.evaluate(bn_mlp(), blobs(1)).samples == 1
    assert num_batches(1, 8) == 1 and batch_sizes(1, 8) == [1] and num_batches(0, 8) == 0


# ---------------------------------------------------------------------- the engine
@pytest.mark.parametrize("path", ["dataloader", "batchloader"])
def test_prune_trains_a_batchnorm_model_whose_sets_leave_one_sample(path: str) -> None:
    """41 samples and a PrAC set of 17 with batch_size 8 each leave one sample in the last batch
    (the issue's 257 / 32); both rounds train and count the schedule's steps and every sample."""
    n, batch, epochs = 41, 8, 3
    train = blobs(n) if path == "dataloader" else images(n)
    model = bn_mlp() if path == "dataloader" else bn_convnet()
    prac_set = torch.arange(0, 34, 2)  # 17 samples
    sampler = PrACSampler.replay(train, [torch.arange(n), prac_set])
    ticket = tickets.prune(model, sampler, rounds=2, epochs=epochs, batch_size=batch, amount=0.3,
                           precision="fp32", quiet=True, scale_schedule=False)
    sched = Schedule(epochs=epochs, batch_size=batch)
    for entry, size in zip(ticket.history, (n, 17)):
        assert entry["set_size"] == size
        assert entry["steps"] == sched.total_steps(size) == epochs * (size // batch)
        assert entry["samples"] == epochs * size  # the single sample trained in the batch before, not dropped


def test_train_counts_the_rule_and_every_sample() -> None:
    result = tickets.train(bn_mlp(), blobs(33), epochs=2, batch_size=8, precision="fp32")
    assert result.steps == 2 * 4 == Schedule(epochs=2, batch_size=8).total_steps(33)
    assert result.samples == 66 and [e["step"] for e in result.log] == [4, 8]


def test_a_prac_search_with_adaptive_sets_never_sees_a_batch_of_one() -> None:
    """Adaptive PrAC sets of whatever size: a forward hook fails the test on any train-mode batch of one."""
    model = bn_mlp()
    sizes: list[int] = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if module.training:
            sizes.append(inputs[0].shape[0])

    model[0].register_forward_pre_hook(hook)
    train = blobs(97)
    ticket = tickets.prune(model, PrACSampler(train), rounds=3, epochs=4, batch_size=8, amount=0.3,
                           precision="fp32", quiet=True, train_eval_data=train)
    assert min(sizes) >= 2
    for entry in ticket.history:
        per_epoch = Schedule(batch_size=8).steps_per_epoch(entry["set_size"])
        assert entry["steps"] == entry["end_step"] - entry["start_step"]
        assert entry["end_step"] == entry["epochs"] * per_epoch


# ---------------------------------------------------------------------- own loops
def _own_round(search: TicketSearch, loader, sizes: list[int]) -> None:
    rnd = search.begin_round()
    optimizer = torch.optim.SGD(search.model.parameters(), lr=0.05, momentum=0.9)
    scheduler = rnd.lr_scheduler(optimizer)
    for _ in rnd:
        search.model.train()
        for x, y, idx in rnd.batches(loader):
            sizes.append(len(idx))
            logits = search.model(x)
            optimizer.zero_grad()
            F.cross_entropy(logits, y).backward()
            optimizer.step()
            scheduler.step()
            rnd.report(idx, logits, y)
        rnd.end_epoch()
    assert rnd.steps == rnd.total_steps - rnd.start_step
    search.end_round()


def test_own_loop_with_search_loader_on_a_set_that_leaves_one_sample() -> None:
    n, batch = 41, 8
    train = blobs(n)
    search = TicketSearch(bn_mlp(), PrACSampler.replay(train, [torch.arange(n), torch.arange(17)]), rounds=2,
                          epochs=3, batch_size=batch, amount=0.3, rewind_to=2, precision="fp32", quiet=True,
                          scale_schedule=False)
    loader = search.loader()
    sizes: list[int] = []
    _own_round(search, loader, sizes)
    assert len(sizes) == 3 * 5 and sum(sizes) == 3 * n and min(sizes) >= 2  # 41 = 8+8+8+8+9
    sizes.clear()
    # rewound to 2 of 5 steps of an epoch = 0.4 epochs = step 1 of 2 in the 17-sample epochs (17 = 8 + 9)
    _own_round(search, loader, sizes)
    assert sizes == [8, 8, 9, 8, 9]
    assert search.history[1]["start_step"] == 1
    steps = [h["steps"] for h in search.history]
    assert steps == [Schedule(epochs=3, batch_size=batch).total_steps(n), 3 * 2 - 1]
    with pytest.raises(RuntimeError, match="finished"):
        search.begin_round()


def test_own_dataloader_over_the_search_sampler_keeps_the_schedule() -> None:
    """A hand-built DataLoader(batch_size=b, sampler=search.sampler) has a last batch of one; the
    round's epoch ends before it (it is counted in the schedule's previous batch); with drop_last the
    loader runs out early and the round says so instead of cutting the epoch in two."""
    train = blobs(33)
    search = TicketSearch(bn_mlp(), RandomSampler(train), rounds=2, epochs=2, batch_size=8, precision="fp32",
                          quiet=True)
    sizes: list[int] = []
    _own_round(search, DataLoader(tickets.IndexedDataset(train), batch_size=8, sampler=search.sampler), sizes)
    assert sizes == [8] * 8 and search.history[0]["steps"] == 8
    with pytest.raises(RuntimeError, match="the loader gave 3 batches, but the epoch has 4"):
        _own_round(search, DataLoader(tickets.IndexedDataset(train), batch_size=10, sampler=search.sampler,
                                      drop_last=True), sizes)


def test_search_loader_length_is_the_epochs_steps() -> None:
    train = blobs(41)
    search = TicketSearch(bn_mlp(), PrACSampler(train), rounds=1, epochs=2, batch_size=8, precision="fp32", quiet=True)
    loader = search.loader()
    rnd = search.begin_round()
    assert len(loader) == rnd.steps_per_epoch == 5
    assert [len(b[2]) for b in loader] == [8, 8, 8, 8, 9]


# ---------------------------------------------------------------------- drop_last
def test_drop_last_is_refused_with_the_reason_everywhere() -> None:
    train = blobs(33)
    with pytest.raises(ValueError, match="drop_last=True is not supported.*never forms a batch of one"):
        tickets.prune(bn_mlp(), PrACSampler(train), rounds=2, epochs=1, batch_size=8, quiet=True,
                      loader_kwargs=dict(drop_last=True))
    with pytest.raises(ValueError, match="drop_last"):
        tickets.Runtime(loader_kwargs={"drop_last": False})
    with pytest.raises(ValueError, match="drop_last"):
        tickets.train(bn_mlp(), train, epochs=1, batch_size=8, loader_kwargs=dict(drop_last=True))
    search = TicketSearch(bn_mlp(), PrACSampler(train), rounds=2, epochs=1, batch_size=8, quiet=True)
    with pytest.raises(ValueError, match=r"search.loader\(\): drop_last=True is not supported"):
        search.loader(drop_last=True)
    with pytest.raises(TypeError, match="'batch_size', which the library sets itself"):
        search.loader(batch_size=4)
    with pytest.raises(TypeError, match="'shuffle'"):
        tickets.prune(bn_mlp(), PrACSampler(train), rounds=2, epochs=1, batch_size=8, quiet=True,
                      loader_kwargs=dict(shuffle=True))


def test_loader_kwargs_still_reach_the_dataloader_and_follow_the_rule() -> None:
    train = blobs(33)
    result = tickets.train(bn_mlp(), train, epochs=2, batch_size=8, precision="fp32",
                           loader_kwargs=dict(pin_memory=False, num_workers=0))
    assert result.steps == 8 and result.samples == 66


# ---------------------------------------------------------------------- Lightning
def test_lightning_callback_on_a_set_that_leaves_one_sample() -> None:
    L = pytest.importorskip("lightning.pytorch")
    from tickets.integrations.lightning import TicketCallback

    class Module(L.LightningModule):
        def __init__(self, model: nn.Module, search: TicketSearch) -> None:
            super().__init__()
            self.model, self.search = model, search

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            x, y, idx = batch
            assert len(idx) >= 2
            logits = self.model(x)
            return {"loss": F.cross_entropy(logits, y), "logits": logits}

        def train_dataloader(self):  # type: ignore[no-untyped-def]
            return self.search.loader()

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)

    train = blobs(41)
    model = bn_mlp()
    search = TicketSearch(model, PrACSampler.replay(train, [torch.arange(41), torch.arange(17)]), rounds=2,
                          epochs=2, batch_size=8, amount=0.3, precision="fp32", quiet=True, scale_schedule=False)
    trainer = L.Trainer(max_epochs=-1, reload_dataloaders_every_n_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[TicketCallback(search)])
    trainer.fit(Module(model, search))
    assert search.done
    assert [h["steps"] for h in search.history] == [2 * 5, 2 * 2]
    assert [h["samples"] for h in search.history] == [2 * 41, 2 * 17]


# ---------------------------------------------------------------------- a selection too small to train
def _one_sample_rule(**kw: object) -> tickets.SelectionRule:
    """Keeps the single highest-scored sample: a set no batching can train without a batch of one."""
    return tickets.SelectionRule(top_fraction=0.025, use_disagreement=False, **kw)  # type: ignore[arg-type]


def test_a_selection_too_small_to_train_keeps_the_current_set_and_the_search_goes_on() -> None:
    data = blobs(40)
    sampler = PrACSampler(data, seed=0)
    ticket = tickets.prune(bn_mlp(), sampler, rounds=3, epochs=2, batch_size=8, lr=0.05, quiet=True,
                           precision="fp32", selection=_one_sample_rule())
    first = ticket.history[0]["next_set"]
    assert first["fallback"] == "kept (too small)" and first["selected"] == 1
    assert first["size"] == ticket.history[1]["set_size"] == 40  # round 1 trained the kept set
    assert len(ticket.history) == 3


def test_a_selection_too_small_to_train_under_empty_error_stops_with_the_reason() -> None:
    with pytest.raises(tickets.EmptySelectionError, match="too few to train"):
        tickets.prune(bn_mlp(), PrACSampler(blobs(40), seed=0), rounds=2, epochs=2, batch_size=8, lr=0.05, quiet=True,
                      precision="fp32", selection=_one_sample_rule(empty="error"))
