"""One test per torch.nn.utils.prune trap that tickets fixes.

Each test first shows the trap on plain torch behaviour (so the test would fail if tickets
behaved like torch), then checks the fix.
"""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import prune

import tickets


def row(values: list[float]) -> nn.Linear:
    layer = nn.Linear(len(values), 1, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([values]))
    return layer


def removed(layer: nn.Linear, before: torch.Tensor) -> list[int]:
    """Flat indices that the last round removed."""
    return (before & ~layer.weight_mask.bool()).reshape(-1).nonzero().flatten().tolist()


# ---------------------------------------------------------------- 1. stale scores
def test_scores_come_from_current_weights_after_an_optimizer_step():
    x = torch.ones(1, 6)
    layers = {}
    for who in ("torch", "tickets"):
        layer = row([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
        prune.l1_unstructured(layer, "weight", amount=1) if who == "torch" else tickets.magnitude_prune(layer, "weight", 1)
        layer(x)  # caches layer.weight = [0, 2, 3, 4, 5, 6]
        optimizer = torch.optim.SGD([layer.weight_orig], lr=1.0)
        layer.weight_orig.grad = torch.tensor([[0.0, -5.0, -3.0, -1.0, 1.0, 3.0]])
        optimizer.step()  # now orig * mask = [0, 7, 6, 5, 4, 3]; no forward since
        layers[who] = layer
    before = layers["torch"].weight_mask.bool().clone()
    prune.l1_unstructured(layers["torch"], "weight", amount=1)
    assert removed(layers["torch"], before) == [1]  # torch ranks the stale cached 2.0
    before = layers["tickets"].weight_mask.clone()
    tickets.magnitude_prune(layers["tickets"], "weight", 1)
    assert removed(layers["tickets"], before) == [5]  # the current smallest, 3.0


def test_global_scores_come_from_current_weights_after_a_rewind():
    x = torch.ones(1, 4)
    init = [4.0, 3.0, 2.0, 1.0]
    models = {}
    for who in ("torch", "tickets"):
        layer = row([1.0, 2.0, 3.0, 4.0])
        layer(x)  # dense forward: torch has nothing cached yet
        if who == "torch":
            prune.global_unstructured([(layer, "weight")], pruning_method=prune.L1Unstructured, amount=1)
        else:
            tickets.global_magnitude_prune([(layer, "weight")], amount=1)
        layer(x)  # caches [0, 2, 3, 4]
        with torch.no_grad():  # rewind the survivors into <name>_orig, where they belong
            layer.weight_orig.copy_(torch.tensor([init]) * layer.weight_mask)
        models[who] = layer
    before = models["torch"].weight_mask.bool().clone()
    prune.global_unstructured([(models["torch"], "weight")], pruning_method=prune.L1Unstructured, amount=1)
    assert removed(models["torch"], before) == [1]  # stale: ranks the cached 2.0
    before = models["tickets"].weight_mask.clone()
    tickets.global_magnitude_prune([(models["tickets"], "weight")], amount=1)
    assert removed(models["tickets"], before) == [3]  # rewound: 1.0 is now the smallest


# ---------------------------------------------------------------- 2. pile-up
def held(model: nn.Module) -> tuple[int, int, int]:
    hooks = sum(len(m._forward_pre_hooks) for m in model.modules())
    buffers = sum(1 for _ in model.buffers())
    nbytes = sum(b.numel() * b.element_size() for b in model.buffers())
    return hooks, buffers, nbytes


def test_global_rounds_do_not_pile_up():
    torch.manual_seed(0)
    theirs = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 4))
    ours = copy.deepcopy(theirs)
    pairs_theirs = [(m, "weight") for m in theirs]
    for _ in range(5):
        prune.global_unstructured(pairs_theirs, pruning_method=prune.L1Unstructured, amount=0.2)
    container = theirs[0]._forward_pre_hooks[next(iter(theirs[0]._forward_pre_hooks))]
    assert isinstance(container, prune.PruningContainer) and len(container) == 5  # torch piles up
    assert theirs[0].weight_mask.dtype == torch.float32

    pairs = [(m, "weight") for m in ours]
    tickets.global_magnitude_prune(pairs, amount=0.2)
    first = held(ours)
    for _ in range(4):
        tickets.global_magnitude_prune(pairs, amount=0.2)
        assert held(ours) == first
    for module in ours:
        assert module.weight_mask.dtype == torch.bool
        (hook,) = module._forward_pre_hooks.values()
        assert not isinstance(hook, prune.PruningContainer)
    assert first[2] == sum(m.weight.numel() for m in ours)  # one byte per weight


# ---------------------------------------------------------------- 3. rewinding
class ConvBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.bn = nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_rewind_writes_orig_keeps_masks_and_restores_bn_stats():
    torch.manual_seed(0)
    model = ConvBN()
    init = tickets.snapshot(model)
    pairs = tickets.prunable_parameters(model, keep_dense=())
    tickets.global_magnitude_prune(pairs, amount=0.5)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    x = torch.randn(4, 2, 6, 6)
    for _ in range(3):
        optimizer.zero_grad()
        model(x).sum().backward()
        optimizer.step()
    mask = model.conv.weight_mask.clone()
    orig = model.conv.weight_orig

    # Plain torch: writing module.<name> is lost at the next forward, and the unpruned
    # snapshot does not load into the pruned model.
    with torch.no_grad():
        model.conv.weight.copy_(init["conv.weight"])
    model(x)
    assert not torch.equal(model.conv.weight.detach(), init["conv.weight"] * mask)
    with pytest.raises(RuntimeError):
        model.load_state_dict(init)

    tickets.rewind(model, init)
    assert model.conv.weight_orig is orig  # the optimizer's tensor, written in place
    assert torch.equal(model.conv.weight_mask, mask)
    assert torch.equal(orig.detach(), init["conv.weight"] * mask)
    assert torch.equal(model.bn.running_mean, init["bn.running_mean"])
    assert torch.equal(model.bn.running_var, init["bn.running_var"])
    assert torch.equal(model.bn.num_batches_tracked, init["bn.num_batches_tracked"])
    model.train()
    for _ in range(2):
        model(x)
        assert (model.conv.weight[~mask] == 0).all()
        assert (model.fc.weight[~model.fc.weight_mask] == 0).all()


# ---------------------------------------------------------------- 4. deepcopy / pickle
def test_deepcopy_and_pickle_after_a_forward_with_grad():
    torch.manual_seed(0)
    theirs = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    ours = copy.deepcopy(theirs)
    x = torch.randn(3, 4)
    prune.l1_unstructured(theirs[0], "weight", amount=0.5)
    theirs(x).sum().backward()
    with pytest.raises(RuntimeError, match="deepcopy"):
        copy.deepcopy(theirs)

    tickets.global_magnitude_prune(tickets.prunable_parameters(ours, keep_dense=()), amount=0.5)
    ours(x).sum().backward()
    for clone in (copy.deepcopy(ours), pickle.loads(pickle.dumps(ours))):
        assert torch.equal(clone(x), ours(x))
        assert torch.equal(clone[0].weight_mask, ours[0].weight_mask)
        with torch.no_grad():
            clone[0].weight_orig.add_(1.0)  # the clone's hook works on the clone's tensors
        clone(x)
        assert (clone[0].weight[~clone[0].weight_mask] == 0).all()
        assert not torch.equal(clone[0].weight_orig, ours[0].weight_orig)


# ---------------------------------------------------------------- 5. functional weight access
class FunctionalQKV(nn.Module):
    """Reads ``self.qkv.weight`` with F.linear, as timm attention blocks do."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(8, 24)
        self.proj = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = F.linear(x, self.qkv.weight, self.qkv.bias).chunk(3, dim=-1)
        return self.proj((q @ k.transpose(-1, -2)).softmax(-1) @ v).mean(1)


class MHA(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.attn(x, x, x, need_weights=False)[0].mean(1))


def functional_tensor(model: nn.Module) -> tuple[nn.Module, str]:
    return (model.qkv, "weight") if isinstance(model, FunctionalQKV) else (model.attn.out_proj, "weight")


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor) -> None:
    optimizer.zero_grad()
    model(x).pow(2).sum().backward()
    optimizer.step()


def dense_reference(model: nn.Module) -> nn.Module:
    """A plain copy of ``model`` whose weights are ``orig * mask`` now."""
    state = tickets.snapshot(model)
    plain = type(model)()
    plain.load_state_dict(state)
    return plain


@pytest.mark.parametrize("make", [MHA, FunctionalQKV], ids=["multihead-out-proj", "functional-qkv"])
def test_functional_weights_are_masked_in_every_forward(make):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    theirs = make()
    ours = copy.deepcopy(theirs)

    module, name = functional_tensor(theirs)
    prune.l1_unstructured(module, name, amount=0.5)
    optimizer = torch.optim.SGD(theirs.parameters(), lr=0.1)
    train_step(theirs, optimizer, x)
    with pytest.raises(RuntimeError, match="backward through the graph a second time"):
        train_step(theirs, optimizer, x)  # torch's hook never fired: the weight is stale

    tickets.global_magnitude_prune(tickets.prunable_parameters(ours, keep_dense=()), amount=0.5)
    module, name = functional_tensor(ours)
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=0.01)
    for _ in range(3):
        train_step(ours, optimizer, x)  # every backward works
        with torch.no_grad():
            # the current masked weights (summation order may differ in the last bits)
            torch.testing.assert_close(ours(x), dense_reference(ours)(x), rtol=1e-5, atol=1e-7)
        weight = getattr(module, name)
        assert torch.equal(weight, getattr(module, name + "_orig") * getattr(module, name + "_mask"))
        assert (weight[~getattr(module, name + "_mask")] == 0).all()


# ---------------------------------------------------------------- 6. zeros through training
@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=0.1),
    lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=0.1),
    lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=0.1),
], ids=["sgd-momentum-wd", "adam", "adamw"])
def test_pruned_weights_stay_zero_through_training(make_optimizer):
    torch.manual_seed(0)
    x = torch.randn(2, 5, 8)
    theirs = MHA()
    ours = copy.deepcopy(theirs)
    # Plain torch: with optimizer state from dense training, pruned entries of _orig drift
    # and the functional out_proj weight is never re-masked.
    optimizer = make_optimizer(theirs.parameters())
    train_step(theirs, optimizer, x)
    prune.l1_unstructured(theirs.head, "weight", amount=0.5)
    train_step(theirs, optimizer, x)
    assert (theirs.head.weight_orig[~theirs.head.weight_mask.bool()] != 0).any()

    optimizer = make_optimizer(ours.parameters())
    train_step(ours, optimizer, x)
    pairs = tickets.prunable_parameters(ours, keep_dense=())
    tickets.global_magnitude_prune(pairs, amount=0.5)
    for _ in range(3):
        train_step(ours, optimizer, x)
        ours(x)
        for module, name in pairs:
            assert (getattr(module, name)[~getattr(module, name + "_mask")] == 0).all()
        tickets.enforce_masks(ours)
        for module, name in pairs:
            assert (getattr(module, name + "_orig")[~getattr(module, name + "_mask")] == 0).all()


# ---------------------------------------------------------------- weight tying
class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Linear(6, 6, bias=False)
        self.decoder = nn.Linear(6, 6, bias=False)
        self.decoder.weight = self.encoder.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(torch.relu(self.encoder(x)))


def test_a_tied_weight_is_masked_in_every_owner():
    torch.manual_seed(0)
    x = torch.randn(3, 6)
    theirs = Tied()
    prune.l1_unstructured(theirs.encoder, "weight", amount=0.5)
    with torch.no_grad():
        theirs.encoder.weight_orig.add_(1.0)  # e.g. weight decay moving pruned entries
    theirs(x)
    assert (theirs.decoder.weight[~theirs.encoder.weight_mask.bool()] != 0).any()  # torch: unmasked

    ours = Tied()
    pairs = tickets.prunable_parameters(ours, keep_dense=())
    assert len(pairs) == 1  # one tensor, one mask
    tickets.global_magnitude_prune(pairs, amount=0.5)
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=0.1)
    assert len(optimizer.param_groups[0]["params"]) == 1
    for _ in range(2):
        train_step(ours, optimizer, x)
        with torch.no_grad():
            ours.encoder.weight_orig.add_(1.0)
        ours(x)
        mask = ours.encoder.weight_mask
        assert ours.decoder.weight_mask is mask  # one shared buffer
        assert (ours.decoder.weight[~mask] == 0).all()
        assert torch.equal(ours.decoder.weight, ours.encoder.weight)
    tickets.global_magnitude_prune(pairs, amount=0.5)  # a later round reaches both owners
    ours(x)
    assert int(ours.decoder.weight_mask.sum()) == 36 - 18 - 9
    assert (ours.decoder.weight[~ours.encoder.weight_mask] == 0).all()
    assert list(tickets.masks(ours)) == ["encoder.weight"]

    # state_dict round trip into a model pruned the same way, and a ticket into a fresh one
    init = tickets.snapshot(Tied())
    twin = Tied()
    tickets.Ticket.from_model(ours, rewind_state=init).apply(twin, rewind=False)
    twin.load_state_dict(ours.state_dict())
    assert twin.decoder.weight_mask is twin.encoder.weight_mask
    assert torch.equal(twin(x), ours(x))
    fresh = tickets.Ticket.from_model(ours, rewind_state=init).apply(Tied())
    assert torch.equal(fresh.decoder.weight_orig, init["encoder.weight"] * ours.encoder.weight_mask)
    assert (fresh.decoder.weight[~fresh.encoder.weight_mask] == 0).all()
