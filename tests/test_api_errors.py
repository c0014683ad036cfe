"""Bad input gives a clear error that names the value and what would be valid."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tickets


def mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))


@pytest.mark.parametrize("call", [
    lambda m, a: tickets.magnitude_prune(m[0], "weight", a),
    lambda m, a: tickets.random_prune(m[0], "weight", a),
    lambda m, a: tickets.global_magnitude_prune([(m[0], "weight"), (m[2], "weight")], a),
    lambda m, a: tickets.global_random_prune([(m[0], "weight")], a),
    lambda m, a: tickets.MagnitudePruning(a),
], ids=["magnitude", "random", "global-magnitude", "global-random", "class"])
@pytest.mark.parametrize("amount, error, text", [
    (-0.1, ValueError, "-0.1"),
    (1.5, ValueError, "1.5"),
    (-3, ValueError, "-3"),
    (True, TypeError, "True"),
    ("0.2", TypeError, "'0.2'"),
], ids=["negative-float", "above-one", "negative-int", "bool", "str"])
def test_bad_amount_is_refused_naming_the_value(call, amount, error, text):
    model = mlp()
    with pytest.raises(error, match="amount") as info:
        call(model, amount)
    assert text in str(info.value)
    assert not tickets.masks(model)  # nothing changed


def test_int_amount_larger_than_the_tensor_names_both_numbers():
    model = mlp()
    with pytest.raises(ValueError, match=r"amount=25 is larger than the 24 surviving"):
        tickets.magnitude_prune(model[0], "weight", 25)
    with pytest.raises(ValueError, match=r"amount=43 is larger than the 42 surviving"):
        tickets.global_magnitude_prune([(model[0], "weight"), (model[2], "weight")], 43)
    tickets.magnitude_prune(model[0], "weight", 20)
    with pytest.raises(ValueError, match=r"larger than the 4 surviving"):  # counts survivors
        tickets.magnitude_prune(model[0], "weight", 5)


def test_unknown_parameter_name_lists_the_valid_ones():
    model = mlp()
    with pytest.raises(ValueError, match=r"no parameter named 'wieght'.*\['bias', 'weight'\]"):
        tickets.magnitude_prune(model[0], "wieght", 0.2)
    with pytest.raises(ValueError, match="'wieght'"):
        tickets.global_magnitude_prune([(model[0], "wieght")], 0.2)


def test_a_shared_tensor_listed_twice_is_refused():
    model = mlp()
    with pytest.raises(ValueError, match=r"parameters\[1\].*same tensor as parameters\[0\]"):
        tickets.global_magnitude_prune([(model[0], "weight"), (model[0], "weight")], 0.2)


def test_empty_or_malformed_parameters():
    with pytest.raises(ValueError, match="empty"):
        tickets.global_magnitude_prune([], 0.2)
    with pytest.raises(TypeError, match=r"parameters\[0\] must be a \(module, name\) pair"):
        tickets.global_magnitude_prune([mlp()[0]], 0.2)


def test_model_with_nothing_prunable():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.ReLU())
    with pytest.raises(ValueError, match="nothing to prune in Sequential"):
        tickets.prunable_parameters(model)
    with pytest.raises(ValueError, match="nothing to prune"):  # everything excluded
        tickets.prunable_parameters(mlp(), exclude="*")
    with pytest.raises(ValueError, match=r"keep_dense has 'head'; valid values: \['classifier', 'stem'\]"):
        tickets.prunable_parameters(mlp(), keep_dense=("head",))
    with pytest.raises(ValueError, match=r"kinds has 'attention'"):
        tickets.prunable_parameters(mlp(), kinds=("attention",))


def test_nan_scores_are_refused():
    model = mlp()
    with torch.no_grad():
        model[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        tickets.global_magnitude_prune([(model[0], "weight")], 0.2)


class Payload:
    """An arbitrary object: its pickle calls a function (here a harmless print) at load time."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


def test_ticket_load_refuses_a_file_with_code(tmp_path):
    path = tmp_path / "evil.ticket"
    torch.save({"format": "torch-tickets/ticket", "version": 1, "masks": Payload()}, path)
    with pytest.raises(ValueError, match="refused"):
        tickets.Ticket.load(path)
    torch.save({"format": "torch-tickets/ticket", "version": 1}, tmp_path / "partial.ticket")
    with pytest.raises(ValueError, match="incomplete ticket file: it has no 'masks'"):
        tickets.Ticket.load(tmp_path / "partial.ticket")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a ticket file"):
        tickets.Ticket.load(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.ticket"):
        tickets.Ticket.load(tmp_path / "missing.ticket")


def pruned_ticket() -> tickets.Ticket:
    model = mlp()
    init = tickets.snapshot(model)
    tickets.global_magnitude_prune(tickets.prunable_parameters(model, keep_dense=()), 0.5)
    return tickets.Ticket.from_model(model, rewind_state=init)


def test_ticket_apply_to_another_architecture_names_the_first_mismatch():
    ticket = pruned_ticket()
    wider = nn.Sequential(nn.Linear(4, 7), nn.ReLU(), nn.Linear(7, 3))
    with pytest.raises(ValueError, match=r"'0.weight' has shape \(7, 4\) in the model but \(6, 4\)"):
        ticket.apply(wider)
    assert not tickets.masks(wider)  # nothing changed
    other = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3))
    with pytest.raises(ValueError, match=r"no module '2' for ticket tensor '2.weight'"):
        ticket.apply(other)
    assert not tickets.masks(other)


def test_ticket_apply_to_an_already_pruned_model():
    ticket = pruned_ticket()
    model = mlp()
    tickets.magnitude_prune(model[2], "weight", 0.1)
    with pytest.raises(ValueError, match=r"'2.weight' of the model is already pruned"):
        ticket.apply(model)


def test_ticket_without_rewind_state_asks_for_rewind_false():
    model = mlp()
    tickets.magnitude_prune(model[0], "weight", 0.5)
    ticket = tickets.Ticket.from_model(model, weights=False)
    with pytest.raises(ValueError, match=r"apply\(model, rewind=False\)"):
        ticket.apply(mlp())
    assert tickets.masks(ticket.apply(mlp(), rewind=False)).keys() == {"0.weight"}


def test_bad_masks_and_importance_scores():
    with pytest.raises(ValueError, match="non-empty"):
        tickets.Ticket({})
    with pytest.raises(ValueError, match=r"masks\['a.weight'\] must be binary"):
        tickets.Ticket({"a.weight": torch.tensor([0.0, 0.5])})
    model = mlp()
    with pytest.raises(ValueError, match=r"shape \(2, 2\); expected \(6, 4\)"):
        tickets.global_magnitude_prune([(model[0], "weight")], 0.2,
                                       importance_scores={(model[0], "weight"): torch.ones(2, 2)})
    with pytest.raises(ValueError, match="not in parameters"):
        tickets.global_magnitude_prune([(model[0], "weight")], 0.2,
                                       importance_scores={(model[2], "weight"): torch.ones(3, 6)})
