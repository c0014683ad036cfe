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


# ---------------------------------------------------------------------- issue 17, item 10
def _blobs(n: int = 24) -> torch.utils.data.TensorDataset:
    g = torch.Generator().manual_seed(0)
    return torch.utils.data.TensorDataset(torch.randn(n, 4, generator=g), torch.arange(n) % 3)


def test_a_dataloader_passed_as_the_sampler_fails_at_once_saying_what_to_pass():
    from torch.utils.data import DataLoader

    loader = DataLoader(_blobs(), batch_size=8, shuffle=True)
    model = mlp()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    for call in (lambda: tickets.prune(model, loader, rounds=2, epochs=1, quiet=True),
                 lambda: tickets.TicketSearch(model, loader, rounds=2, epochs=1)):
        with pytest.raises(TypeError, match="DataLoader .*over a TensorDataset.*pass a sampler or the data set") as info:
            call()
        assert "PrACSampler(train_set)" in str(info.value) and "RandomSampler(train_set)" in str(info.value)
        assert "batch_size=" in str(info.value)
    assert not calls and not tickets.masks(model)  # nothing ran
    with pytest.raises(TypeError, match="sampler is a DataLoader"):
        tickets.train(mlp(), _blobs(), epochs=1, sampler=loader)


@pytest.mark.parametrize("device", ["gpu", "GPU:0", "cuda0", "tpu"])
def test_an_invalid_device_string_names_the_value_and_the_choices(device):
    model = mlp()
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    pattern = rf"device='{device}' is not a device.*valid: \"cpu\", \"cuda\", \"cuda:0\".*\"mps\""
    with pytest.raises(ValueError, match=pattern):
        tickets.prune(model, _blobs(), rounds=2, epochs=1, device=device, quiet=True)
    with pytest.raises(ValueError, match=pattern):
        tickets.Runtime(device=device)
    with pytest.raises(ValueError, match=pattern):
        tickets.train(model, _blobs(), epochs=1, device=device)
    with pytest.raises(ValueError, match=pattern):
        tickets.evaluate(model, _blobs(), device=device)
    assert not calls  # refused before anything ran
    if device.lower().startswith("gpu"):
        with pytest.raises(ValueError, match='for a GPU use "cuda"'):
            tickets.Runtime(device=device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_a_cuda_device_on_a_machine_without_one_is_refused_before_anything_runs():
    with pytest.raises(ValueError, match="device='cuda': CUDA is not available on this machine"):
        tickets.prune(mlp(), _blobs(), rounds=2, epochs=1, device="cuda", quiet=True)
    with pytest.raises(TypeError, match="device must be a string"):
        tickets.Runtime(device=1.5)  # type: ignore[arg-type]


class _Images(torch.utils.data.Dataset):
    """A torchvision-style data set: uint8 images through ``self.transform``."""

    def __init__(self, transform, n: int = 24):
        g = torch.Generator().manual_seed(0)
        self.images = torch.randint(0, 256, (n, 3, 8, 8), dtype=torch.uint8, generator=g)
        self.targets = (torch.arange(n) % 3).tolist()
        self.transform = transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i]
        return (self.transform(x) if self.transform is not None else x).float(), self.targets[i]


def _flat_mlp() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(192, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


def _augment_warnings(record) -> list:
    return [w for w in record if "train_eval_data=" in str(w.message)]


def _augmenting_transforms():
    from torchvision import transforms as T
    from torchvision.transforms import v2

    from tickets.data.transforms import Augment, Normalize, _Compose

    return {
        "v1-compose-flip": T.Compose([T.RandomHorizontalFlip(), T.ConvertImageDtype(torch.float)]),
        "v1-randaugment": T.RandAugment(),
        "v1-trivialaugment": T.Compose([T.TrivialAugmentWide()]),
        "v2-compose-crop": v2.Compose([v2.RandomResizedCrop(8, antialias=True), v2.ToDtype(torch.float32)]),
        "v2-autoaugment": v2.Compose([v2.Compose([v2.AutoAugment()])]),
        "tickets-augment": _Compose(Augment(8, 2), Normalize((0.5,) * 3, (0.25,) * 3)),
    }


@pytest.mark.parametrize("name", ["v1-compose-flip", "v1-randaugment", "v1-trivialaugment", "v2-compose-crop",
                                  "v2-autoaugment", "tickets-augment"])
def test_a_prac_search_on_augmented_data_without_train_eval_data_warns_once(name):
    pytest.importorskip("torchvision")
    train = _Images(_augmenting_transforms()[name])
    with pytest.warns(UserWarning) as record:
        tickets.TicketSearch(_flat_mlp(), tickets.PrACSampler(train), rounds=2, epochs=1, batch_size=8)
    found = _augment_warnings(record)
    assert len(found) == 1
    assert "disagreement pass" in str(found[0].message) and "augmented images" in str(found[0].message)


def test_no_augmentation_warning_where_it_does_not_apply(recwarn):
    pytest.importorskip("torchvision")
    from torch.utils.data import RandomSampler, Subset
    from torchvision import transforms as T

    plain = _Images(T.Compose([T.ConvertImageDtype(torch.float), T.Normalize((0.5,) * 3, (0.25,) * 3)]))
    augmented = _Images(T.Compose([T.RandomCrop(8, padding=2)]))
    tickets.TicketSearch(_flat_mlp(), tickets.PrACSampler(plain), rounds=2, epochs=1, batch_size=8)  # no random transform
    tickets.TicketSearch(_flat_mlp(), tickets.PrACSampler(augmented), rounds=2, epochs=1, batch_size=8,
                         train_eval_data=plain)  # train_eval_data given
    tickets.TicketSearch(_flat_mlp(), RandomSampler(augmented), rounds=2, epochs=1, batch_size=8)  # vanilla IMP
    tickets.TicketSearch(_flat_mlp(), tickets.PrACSampler(augmented), rounds=1, epochs=1, batch_size=8)  # no 2nd round
    tickets.TicketSearch(_flat_mlp(), tickets.PrACSampler.replay(augmented, [torch.arange(24)]), rounds=2, epochs=1,
                         batch_size=8)  # replayed sets: no disagreement pass
    assert not _augment_warnings(recwarn)
    wrapped = Subset(augmented, list(range(24)))  # found through wrappers too
    with pytest.warns(UserWarning, match="RandomCrop in its transform"):
        tickets.TicketSearch(_flat_mlp(), tickets.PrACSampler(wrapped), rounds=2, epochs=1, batch_size=8)
