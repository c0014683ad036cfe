"""tickets.sparsify: sparse CPU inference equals the masked dense model, per-layer choices."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

import tickets
from tickets.sparse import RULE, SparseLinear, bake, kernel_report, sparsify

torch.set_num_threads(1)
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")


class Net(nn.Module):
    """A conv stem, two big linear layers (one without bias) and a small classifier."""

    def __init__(self, width: int = 320) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc1 = nn.Linear(4 * 6 * 6, width)
        self.fc2 = nn.Linear(width, width, bias=False)
        self.head = nn.Linear(width, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv(x)).flatten(1)
        return self.head(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


def pruned_net(sparsity: float = 0.95, seed: int = 0) -> Net:
    torch.manual_seed(seed)
    model = Net()
    tickets.global_magnitude_prune(tickets.prunable_parameters(model, keep_dense=()), amount=sparsity)
    return model


def masked_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(x)


def state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


X = torch.randn(3, 3, 8, 8)


# ---------------------------------------------------------------------- outputs
@settings(max_examples=25, deadline=None)
@given(
    rows=st.integers(1, 700),
    out_features=st.integers(1, 40),
    in_features=st.integers(1, 40),
    sparsity=st.floats(0.0, 1.0),
    bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_sparse_linear_equals_masked_dense(rows, out_features, in_features, sparsity, bias, seed):
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(out_features, in_features, generator=g)
    weight[torch.rand(weight.shape, generator=g) < sparsity] = 0
    b = torch.randn(out_features, generator=g) if bias else None
    x = torch.randn(rows, in_features, generator=g)
    layer = SparseLinear(weight, b, chunk_rows=16)  # 700 rows > 4 * 16: the chunked path too
    expected = nn.functional.linear(x, weight, b)
    torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(layer(x.reshape(1, rows, in_features)), expected.reshape(1, rows, -1), rtol=1e-5, atol=1e-5)
    assert torch.equal(layer.weight, weight)
    assert layer.nnz == int(torch.count_nonzero(weight))


@settings(max_examples=8, deadline=None)
@given(sparsity=st.sampled_from([0.5, 0.8, 0.9, 0.95, 0.99]), seed=st.integers(0, 1000), mode=st.sampled_from(["rule", "measure"]))
def test_sparsified_model_equals_masked_dense_model(sparsity, seed, mode):
    model = pruned_net(sparsity, seed)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(seed))
    sparse = sparsify(model, example_input=x, mode=mode, repeats=1, margin=0.0)
    torch.testing.assert_close(masked_output(sparse, x), masked_output(model, x), rtol=1e-4, atol=1e-5)


def test_every_linear_on_csr_still_equals_dense(monkeypatch):
    model = pruned_net(0.9)
    monkeypatch.setitem(RULE, "min_weights", 0)
    monkeypatch.setitem(RULE, "vector_sparsity", 0.0)
    monkeypatch.setitem(RULE, "matrix_sparsity", 0.0)
    sparse = sparsify(model, example_input=X, mode="rule")
    assert kernel_report(sparse).csr_layers == ["fc1", "fc2", "head"]
    torch.testing.assert_close(masked_output(sparse, X), masked_output(model, X), rtol=1e-4, atol=1e-5)


def test_model_after_prune_remove_and_torch_methods():
    torch.manual_seed(1)
    model = Net()
    prune.l1_unstructured(model.fc2, "weight", amount=0.95)  # torch's own method: float mask, no guard
    prune.l1_unstructured(model.fc2, "weight", amount=0.5)  # a PruningContainer
    expected = masked_output(model, X)
    torch.testing.assert_close(masked_output(sparsify(model, mode="rule"), X), expected, rtol=1e-4, atol=1e-5)
    prune.remove(model.fc2, "weight")
    sparse = sparsify(model, mode="rule")
    assert kernel_report(sparse).csr_layers == ["fc2"]  # 97.5% zeros in the weights themselves
    torch.testing.assert_close(masked_output(sparse, X), expected, rtol=1e-4, atol=1e-5)


def test_ticket_applied_to_a_fresh_model():
    model = pruned_net(0.95)
    ticket = tickets.Ticket.from_model(model, tickets.snapshot(model))
    torch.manual_seed(7)
    fresh = ticket.apply(Net())
    sparse = sparsify(fresh, example_input=X, mode="rule")
    assert "fc2" in kernel_report(sparse).csr_layers
    torch.testing.assert_close(masked_output(sparse, X), masked_output(model, X), rtol=1e-4, atol=1e-5)


def test_functional_use_of_a_replaced_layer_stays_right(monkeypatch):
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.attn = nn.MultiheadAttention(64, 4, batch_first=True)  # reads out_proj.weight functionally

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x, x, x, need_weights=False)[0]

    torch.manual_seed(0)
    model = Functional()
    tickets.global_magnitude_prune(tickets.prunable_parameters(model, keep_dense=()), amount=0.97)
    x = torch.randn(2, 7, 64)
    monkeypatch.setitem(RULE, "min_weights", 0)
    by_rule = sparsify(model, mode="rule")  # no example: out_proj is replaced, and still right
    assert isinstance(by_rule.attn.out_proj, SparseLinear)
    torch.testing.assert_close(masked_output(by_rule, x), masked_output(model, x), rtol=1e-4, atol=1e-5)
    seen = sparsify(model, example_input=x, mode="rule")
    choice = {c.name: c for c in kernel_report(seen).layers}["attn.out_proj"]
    assert choice.kernel == "dense" and "did not run" in choice.reason
    torch.testing.assert_close(masked_output(seen, x), masked_output(model, x), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- no mutation
def test_sparsify_never_mutates_the_model():
    model = pruned_net(0.95)
    model.train()
    before = state_copy(model)
    hooks = {n: dict(m._forward_pre_hooks) for n, m in model.named_modules()}
    out = masked_output(model, X)
    model.train()
    sparse = sparsify(model, example_input=X, mode="measure", repeats=1)
    assert sparse is not model and model.training
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], v) for k, v in before.items())
    assert {n: dict(m._forward_pre_hooks) for n, m in model.named_modules()} == hooks
    assert tickets.is_pruned_tensor(model.fc1, "weight") and isinstance(model.fc1, nn.Linear)
    torch.testing.assert_close(masked_output(model, X), out)


def test_result_is_an_inference_model_without_prune_state():
    sparse = sparsify(pruned_net(0.99), example_input=X, mode="rule")
    assert not sparse.training
    assert not any(p.requires_grad for p in sparse.parameters())
    assert not any(k.endswith(("_orig", "_mask")) for k in sparse.state_dict())
    assert not any(m._forward_pre_hooks for m in sparse.modules())
    assert isinstance(sparse.fc2, SparseLinear) and isinstance(sparse.conv, nn.Conv2d)
    clone = copy.deepcopy(sparse)
    torch.testing.assert_close(masked_output(clone, X), masked_output(sparse, X))
    fresh = sparsify(pruned_net(0.99, seed=3), example_input=X, mode="rule")
    fresh.load_state_dict(sparse.state_dict())
    torch.testing.assert_close(masked_output(fresh, X), masked_output(sparse, X))


# ---------------------------------------------------------------------- per-layer choice
def test_rule_chooses_by_sparsity_size_and_rows(monkeypatch):
    model = pruned_net(0.95)
    report = kernel_report(sparsify(model, mode="rule"))  # no example: the stricter threshold
    kernels = {c.name: c.kernel for c in report.layers}
    assert report.mode == "rule"
    assert kernels["conv"] == "dense"  # convolutions stay dense
    assert kernels["head"] == "dense"  # 1,600 weights < min_weights
    # fc1 has 46,080 weights: below the rule's size floor too, so move the floor
    monkeypatch.setitem(RULE, "min_weights", 1000)
    forced = {c.name: c for c in kernel_report(sparsify(model, mode="rule")).layers}
    for name in ("fc1", "fc2"):
        layer = forced[name]
        expected = "csr" if layer.sparsity >= max(RULE["vector_sparsity"], RULE["matrix_sparsity"]) else "dense"
        assert layer.kernel == expected, layer
    monkeypatch.setitem(RULE, "vector_sparsity", 1.01)
    monkeypatch.setitem(RULE, "matrix_sparsity", 0.0)
    few = kernel_report(sparsify(model, example_input=X[:1], mode="rule"))  # 1 row per call: vector regime
    assert few.csr_layers == []
    assert all(c.rows == 1 for c in few.layers if c.layer == "Linear")
    many = kernel_report(sparsify(model, example_input=torch.randn(40, 3, 8, 8), mode="rule"))
    assert many.csr_layers == ["fc1", "fc2", "head"]


def test_measure_follows_the_margin():
    model = pruned_net(0.99)
    never = kernel_report(sparsify(model, example_input=X, mode="measure", repeats=1, margin=0.999))
    assert never.mode == "measure" and never.csr_layers == []
    for c in never.layers:
        if c.layer == "Linear":
            assert c.dense_ms is not None and c.csr_ms is not None and "measured" in c.reason
    assert "measure" in str(never) and "fc1" in str(never)


def test_auto_measures_only_with_an_example():
    model = pruned_net(0.95)
    assert kernel_report(sparsify(model)).mode == "rule"
    assert kernel_report(sparsify(model, example_input=X, repeats=1)).mode == "measure"


def test_dense_layers_with_no_zeros_stay_dense():
    torch.manual_seed(0)
    report = kernel_report(sparsify(Net(), example_input=X, mode="measure", repeats=1, margin=0.0))
    assert report.csr_layers == []
    assert all(c.reason in ("no zero weights",) or c.layer == "Conv2d" for c in report.layers)


# ---------------------------------------------------------------------- errors
def test_errors_name_the_bad_value():
    model = pruned_net(0.9)
    with pytest.raises(ValueError, match="mode must be one of .*'fast'"):
        sparsify(model, mode="fast")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="example_input"):
        sparsify(model, mode="measure")
    with pytest.raises(TypeError, match="nn.Module; got dict"):
        sparsify({})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="example_input .* got str"):
        sparsify(model, example_input="x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="margin .* got 1.5"):
        sparsify(model, margin=1.5)
    with pytest.raises(ValueError, match="repeats .* got 0"):
        sparsify(model, repeats=0)
    with pytest.raises(ValueError, match="chunk_rows .* got -1"):
        sparsify(model, chunk_rows=-1)
    with pytest.raises(ValueError, match="not made by tickets.sparsify"):
        kernel_report(model)
    with pytest.raises(ValueError, match="float32 or float64 .* torch.float16"):
        SparseLinear(torch.zeros(3, 3, dtype=torch.float16))
    with pytest.raises(ValueError, match="2-D"):
        SparseLinear(torch.zeros(3))
    with pytest.raises(ValueError, match="5 features"):
        SparseLinear(torch.eye(3))(torch.randn(2, 5))
    model.fc1.register_buffer("extra", torch.zeros(1, device="meta"))
    with pytest.raises(ValueError, match="'fc1.extra' is on meta"):
        sparsify(model)


def test_half_precision_layers_stay_dense():
    model = bake(pruned_net(0.99)).to(torch.float64)
    model.fc2.to(torch.bfloat16)
    report = {c.name: c for c in kernel_report(sparsify(model, mode="rule")).layers}
    assert report["fc2"].kernel == "dense" and "bfloat16" in report["fc2"].reason
