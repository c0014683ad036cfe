"""Properties of the pruning methods and masks, checked by hypothesis on tiny tensors."""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import tickets

FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
DTYPES = [torch.float32, torch.float64, torch.bfloat16]

shapes = st.lists(st.integers(1, 6), min_size=1, max_size=3).map(tuple)
fractions = st.floats(0.0, 1.0, allow_nan=False)


def holder(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> nn.Module:
    """A module whose only parameter ``weight`` has ``shape`` and ``dtype``."""
    module = nn.Module()
    g = torch.Generator().manual_seed(seed)
    module.weight = nn.Parameter(torch.randn(shape, generator=g).to(dtype))
    return module


def survivors_after(amount: int | float, total: int, rounds: int) -> int:
    surviving = total
    for _ in range(rounds):
        surviving -= amount if isinstance(amount, int) else round(amount * surviving)
    return surviving


def mlp(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 3))


def linear_pairs(model: nn.Module) -> list[tuple[nn.Module, str]]:
    return [(m, "weight") for m in model.modules() if isinstance(m, nn.Linear)]


@FAST
@given(shape=shapes, dtype=st.sampled_from(DTYPES), amount=fractions,
       rounds=st.integers(1, 4), seed=st.integers(0, 2**16))
def test_float_amount_removes_that_fraction_of_survivors_each_round(shape, dtype, amount, rounds, seed):
    module = holder(shape, dtype, seed)
    previous = None
    for _ in range(rounds):
        before = module.weight_orig.detach() * module.weight_mask if previous is not None else module.weight.detach()
        tickets.magnitude_prune(module, "weight", amount)
        mask = module.weight_mask
        assert mask.dtype == torch.bool  # binary by construction
        if previous is not None:
            assert not (mask & ~previous).any()  # masks only shrink
            removed = previous & ~mask
        else:
            removed = ~mask
        if removed.any() and mask.any():  # magnitude: nothing kept is smaller than what went
            assert before[removed].abs().float().max() <= before[mask].abs().float().min()
        previous = mask.clone()
    total = module.weight_mask.numel()
    assert int(module.weight_mask.sum()) == survivors_after(float(amount), total, rounds)


@FAST
@given(shape=shapes, dtype=st.sampled_from(DTYPES), rounds=st.integers(1, 4),
       seed=st.integers(0, 2**16), data=st.data())
def test_int_amount_removes_that_count_each_round(shape, dtype, rounds, seed, data):
    module = holder(shape, dtype, seed)
    total = module.weight.numel()
    count = data.draw(st.integers(0, total // rounds))
    for _ in range(rounds):
        tickets.magnitude_prune(module, "weight", count)
    assert int(module.weight_mask.sum()) == survivors_after(count, total, rounds)
    assert module.weight_mask.dtype == torch.bool


@FAST
@given(sizes=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 5)), min_size=1, max_size=4),
       amount=st.one_of(fractions, st.integers(0, 4)), rounds=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_global_amount_distributes_exactly_over_tensors(sizes, amount, rounds, seed):
    torch.manual_seed(seed)
    layers = [nn.Linear(i, o) for i, o in sizes]
    pairs = [(layer, "weight") for layer in layers]
    total = sum(layer.weight.numel() for layer in layers)
    if isinstance(amount, int):
        amount = min(amount, total // rounds)
    for _ in range(rounds):
        before = torch.cat([tickets.pruning.methods._original(m, n).detach().reshape(-1).abs() for m, n in pairs])
        keep_before = torch.cat([tickets.pruning.methods._current_mask(m, n).reshape(-1) for m, n in pairs])
        tickets.global_magnitude_prune(pairs, amount)
        keep = torch.cat([layer.weight_mask.reshape(-1) for layer in layers])
        removed = keep_before & ~keep
        if removed.any() and keep.any():  # one global threshold over every tensor
            assert before[removed].max() <= before[keep].min()
    surviving = sum(int(layer.weight_mask.sum()) for layer in layers)
    assert surviving == survivors_after(amount, total, rounds)


@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.05),
    lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.05),
    lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.05),
], ids=["sgd-momentum-wd", "adam", "adamw"])
@settings(max_examples=5, deadline=None)
@given(amount=st.floats(0.1, 0.9), seed=st.integers(0, 2**16))
def test_pruned_weights_stay_zero_through_optimizer_steps(make_optimizer, amount, seed):
    model = mlp(seed)
    optimizer = make_optimizer(model.parameters())
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    step = lambda: (optimizer.zero_grad(), nn.functional.cross_entropy(model(x), y).backward(), optimizer.step())
    step()  # optimizer state (momentum, moments) built while dense
    pairs = tickets.prunable_parameters(model, keep_dense=())
    tickets.global_magnitude_prune(pairs, amount)
    for _ in range(3):
        step()
        model(x)
        for module, _ in pairs:
            assert (module.weight[~module.weight_mask] == 0).all()  # the weight used in the forward
    tickets.enforce_masks(model)
    for module, _ in pairs:
        assert (module.weight_orig[~module.weight_mask] == 0).all()


@FAST
@given(amount=fractions, seed=st.integers(0, 2**16))
def test_remove_leaves_plain_zeros(amount, seed):
    model = mlp(seed)
    pairs = linear_pairs(model)
    tickets.global_magnitude_prune(pairs, amount)
    keeps = {id(m): m.weight_mask.clone() for m, _ in pairs}
    for module, name in pairs:
        prune.remove(module, name)
        assert type(module.weight) is nn.Parameter
        assert (module.weight[~keeps[id(module)]] == 0).all()
        assert not module._forward_pre_hooks or not any(
            isinstance(h, prune.BasePruningMethod) for h in module._forward_pre_hooks.values())
    assert not prune.is_pruned(model)
    assert all(not k.endswith(("_orig", "_mask")) for k in model.state_dict())


@FAST
@given(amount=fractions, rounds=st.integers(1, 3), seed=st.integers(0, 2**16))
def test_save_load_apply_round_trip_is_bit_identical(amount, rounds, seed):
    model = mlp(seed)
    init = tickets.snapshot(model)
    pairs = tickets.prunable_parameters(model, keep_dense=())
    for _ in range(rounds):
        tickets.global_magnitude_prune(pairs, amount)
    ticket = tickets.Ticket.from_model(model, rewind_state=init, history=[{"round": rounds}])
    with tempfile.TemporaryDirectory() as tmp:
        loaded = tickets.Ticket.load(ticket.save(Path(tmp) / "t.ticket"))
    assert loaded.masks.keys() == ticket.masks.keys()
    assert all(torch.equal(loaded.masks[k], ticket.masks[k]) for k in ticket.masks)
    assert all(torch.equal(loaded.rewind_state[k], ticket.rewind_state[k]) for k in ticket.rewind_state)
    assert loaded.history == ticket.history
    fresh = loaded.apply(mlp(seed + 1))
    tickets.rewind(model, init)
    assert tickets.masks(fresh).keys() == tickets.masks(model).keys()
    for key, mask in tickets.masks(model).items():
        assert torch.equal(tickets.masks(fresh)[key], mask)
    assert all(torch.equal(a, b) for a, b in zip(tickets.snapshot(fresh).values(), tickets.snapshot(model).values()))
    x = torch.randn(4, 6)
    assert torch.equal(fresh(x), model(x))


@FAST
@given(shape=shapes, amount=st.floats(0.05, 0.95), seed=st.integers(0, 2**16))
def test_same_seed_same_random_masks(shape, amount, seed):
    a, b = holder(shape, torch.float32, 0), holder(shape, torch.float32, 1)  # weights don't matter
    tickets.random_prune(a, "weight", amount, seed=seed)
    tickets.RandomPruning.apply(b, "weight", amount, seed=seed)
    assert torch.equal(a.weight_mask, b.weight_mask)
    m1, m2 = mlp(0), mlp(1)
    tickets.global_random_prune(linear_pairs(m1), amount, seed=seed)
    tickets.global_random_prune(linear_pairs(m2), amount, seed=seed)
    assert all(torch.equal(x, y) for x, y in zip(tickets.masks(m1).values(), tickets.masks(m2).values()))


@FAST
@given(shape=shapes, ours=fractions, theirs=st.one_of(fractions, st.integers(0, 3)), seed=st.integers(0, 2**16))
def test_torch_l1_unstructured_composes_on_top(shape, ours, theirs, seed):
    module = holder(shape, torch.float32, seed)
    total = module.weight.numel()
    tickets.magnitude_prune(module, "weight", ours)
    surviving = int(module.weight_mask.sum())
    if isinstance(theirs, int):
        theirs = min(theirs, surviving)
    prune.l1_unstructured(module, "weight", amount=theirs)
    expected = surviving - (theirs if isinstance(theirs, int) else round(theirs * surviving))
    assert int(module.weight_mask.sum()) == expected
    assert prune.is_pruned(module)
    tickets.magnitude_prune(module, "weight", ours)  # and ours again on top of torch's container
    assert int(module.weight_mask.sum()) == expected - round(ours * expected)
    assert module.weight_mask.dtype == torch.bool
    assert int(module.weight_mask.sum()) <= total


def test_global_unstructured_accepts_our_methods():
    model = mlp()
    pairs = linear_pairs(model)
    total = sum(m.weight.numel() for m, _ in pairs)
    prune.global_unstructured(pairs, pruning_method=tickets.MagnitudePruning, amount=0.3)
    assert sum(int(m.weight_mask.sum()) for m, _ in pairs) == total - round(0.3 * total)
    model2 = copy.deepcopy(mlp())
    prune.global_unstructured(linear_pairs(model2), pruning_method=tickets.RandomPruning, amount=7)
    assert sum(int(m.weight_mask.sum()) for m, _ in linear_pairs(model2)) == total - 7


def test_large_inputs_take_the_sampled_path_and_stay_exact():
    """Over 2**20 entries the threshold is bracketed from a sample; counts and order stay exact."""
    torch.manual_seed(0)
    scores = [torch.randn(1200, 1000).abs(), torch.randint(0, 50, (400, 1000)).float()]  # ties
    keeps = [torch.rand(s.shape) > 0.3 for s in scores]
    surviving = sum(int(k.sum()) for k in keeps)
    for k in (1, 54321, surviving // 5, surviving):
        new = tickets.pruning.methods._drop_lowest([s.clone() for s in scores], keeps, k)
        assert sum(int(n.sum()) for n in new) == surviving - k
        assert all(not (n & ~keep).any() for n, keep in zip(new, keeps))
        gone = torch.cat([s[keep & ~n] for s, keep, n in zip(scores, keeps, new)])
        kept = torch.cat([s[n] for s, n in zip(scores, new)])
        if gone.numel() and kept.numel():
            assert gone.max() <= kept.min()
