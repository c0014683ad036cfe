"""The ticket file: safetensors, bit-packed masks, exact round trips, old files, no code."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

import tickets
from tickets.ticket.file import FORMAT, pack_mask, unpack_mask
from tickets.ticket.ticket import Ticket

torch.set_num_threads(1)


def net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 6 * 6, 10), nn.Linear(10, 4))


def found_ticket(sparsity: float = 0.9, seed: int = 0) -> Ticket:
    model = net(seed)
    init = tickets.snapshot(model)
    tickets.global_magnitude_prune(tickets.prunable_parameters(model, keep_dense=()), amount=sparsity)
    history = [{"round": 0, "accuracy": 0.5, "note": "dense"}, {"round": 1, "accuracy": None, "sizes": [1, 2]}]
    return Ticket.from_model(model, init, history=history, meta={"arch": "net", "seed": seed, "nested": {"a": [1.5]}})


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bytes, for bit-exact comparison."""
    return t.reshape(-1).contiguous().view(torch.uint8)


def assert_same_ticket(a: Ticket, b: Ticket) -> None:
    assert list(a.masks) == list(b.masks)
    for key, mask in a.masks.items():
        assert b.masks[key].dtype == torch.bool and torch.equal(b.masks[key], mask)
    assert (a.rewind_state is None) == (b.rewind_state is None)
    if a.rewind_state is not None:
        assert b.rewind_state is not None and list(a.rewind_state) == list(b.rewind_state)
        for key, value in a.rewind_state.items():
            got = b.rewind_state[key]
            assert got.dtype == value.dtype and got.shape == value.shape, key
            if key in a.masks:  # pruned entries load as +0.0 (a -0.0 from masking loses its sign)
                keep = a.masks[key]
                assert torch.equal(bits(got[keep]), bits(value[keep])), key
                assert bool((got[~keep] == 0).all()) and not bool(got[~keep].signbit().any()), key
            else:
                assert torch.equal(bits(got), bits(value)), key
    assert a.history == b.history and a.meta == b.meta


# ---------------------------------------------------------------------- round trips
def test_round_trip_is_bit_exact(tmp_path):
    ticket = found_ticket()
    path = ticket.save(tmp_path / "t.ticket")
    assert path == tmp_path / "t.ticket"
    loaded = Ticket.load(path)
    assert_same_ticket(ticket, loaded)
    # applied to a fresh model, it gives the same model as the original ticket
    a, b = ticket.apply(net(5)), loaded.apply(net(6))
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka


def test_masks_only_and_unusual_tensors_round_trip(tmp_path):
    masks = {
        "a.weight": torch.rand(3, 5, 7) > 0.5,
        "b.weight": torch.tensor(True),  # a scalar
        "c.weight": torch.zeros(0, 4, dtype=torch.bool),  # empty
    }
    ticket = Ticket(masks, None, [], {})
    assert_same_ticket(ticket, Ticket.load(ticket.save(tmp_path / "m.ticket")))
    value = torch.randn(3, 5, 7)
    value[0, 0, 0] = float("nan")  # a pruned entry that is not zero: the tensor is stored whole
    masks["a.weight"][0, 0, 0] = False
    state = {"a.weight": value, "b.weight": torch.tensor(2.5), "c.weight": torch.zeros(0, 4),
             "steps": torch.tensor(7, dtype=torch.int64), "half": torch.randn(4).half()}
    ticket = Ticket(masks, state, [], {})
    loaded = Ticket.load(ticket.save(tmp_path / "s.ticket"))
    assert torch.equal(bits(loaded.rewind_state["a.weight"]), bits(value))  # NaN and all, bit for bit
    assert loaded.rewind_state["steps"].dtype == torch.int64 and int(loaded.rewind_state["steps"]) == 7
    assert torch.equal(loaded.rewind_state["half"], state["half"])


def test_tied_rewind_tensors_save(tmp_path):
    ticket = found_ticket()
    shared = torch.randn(4)
    ticket.rewind_state["x"] = shared  # type: ignore[index]
    ticket.rewind_state["y"] = shared  # type: ignore[index]  # same memory: safetensors would refuse
    loaded = Ticket.load(ticket.save(tmp_path / "tied.ticket"))
    assert torch.equal(loaded.rewind_state["x"], shared) and torch.equal(loaded.rewind_state["y"], shared)


@settings(max_examples=40, deadline=None)
@given(shape=st.lists(st.integers(0, 9), min_size=0, max_size=3), p=st.floats(0, 1), seed=st.integers(0, 2**16))
def test_pack_unpack_round_trip_and_size(shape, p, seed):
    mask = torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < p
    packed = pack_mask(mask)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == (mask.numel() + 7) // 8
    assert torch.equal(unpack_mask(packed, shape), mask)


def test_packing_is_lsb_first():
    mask = torch.tensor([True, False, False, False, False, False, False, True, False, True])
    assert pack_mask(mask).tolist() == [0b10000001, 0b00000010]


def test_file_holds_packed_masks_and_surviving_weights_only(tmp_path):
    ticket = found_ticket(0.9)
    path = ticket.save(tmp_path / "t.ticket")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        assert meta["format"] == FORMAT and meta["version"] == "2"
        assert json.loads(meta["history"]) == ticket.history and json.loads(meta["meta"]) == ticket.meta
        shapes = dict((name, shape) for name, shape in json.loads(meta["masks"]))
        for name, mask in ticket.masks.items():
            packed = f.get_tensor("mask/" + name)
            assert shapes[name] == list(mask.shape) and packed.numel() == (mask.numel() + 7) // 8
            assert f.get_tensor("rewind/" + name).numel() == int(mask.sum())
    weights = sum(m.numel() for m in ticket.masks.values())
    dense = sum(v.numel() * v.element_size() for v in ticket.rewind_state.values())  # type: ignore[union-attr]
    assert path.stat().st_size < dense * 0.1 + weights / 8 + 4096


# ---------------------------------------------------------------------- old files
def test_old_torch_save_files_still_load(tmp_path):
    ticket = found_ticket()
    # exactly what Ticket.save wrote in torch-tickets 0.1
    payload = {"format": FORMAT, "version": 1, "masks": ticket.masks, "rewind_state": ticket.rewind_state,
               "history": json.dumps(ticket.history), "meta": json.dumps(ticket.meta)}
    torch.save(payload, tmp_path / "old.ticket")
    old = Ticket.load(tmp_path / "old.ticket")
    assert list(old.masks) == list(ticket.masks) and all(torch.equal(old.masks[k], m) for k, m in ticket.masks.items())
    assert list(old.rewind_state) == list(ticket.rewind_state)  # type: ignore[arg-type]
    for key, value in ticket.rewind_state.items():  # type: ignore[union-attr]
        assert torch.equal(bits(old.rewind_state[key]), bits(value))  # type: ignore[index]
    assert old.history == ticket.history and old.meta == ticket.meta
    payload["rewind_state"] = None
    torch.save(payload, tmp_path / "old-masks.ticket")
    assert Ticket.load(tmp_path / "old-masks.ticket").rewind_state is None


# ---------------------------------------------------------------------- untrusted files
class Payload:
    """Its pickle calls a function at load time: here it would create a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_with_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "ran"
    torch.save({"format": FORMAT, "version": 1, "masks": Payload(marker)}, tmp_path / "evil.ticket")
    with pytest.raises(ValueError, match="refused"):
        Ticket.load(tmp_path / "evil.ticket")
    assert not marker.exists()


def _write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    save_file(tensors, str(path), metadata=metadata)
    return path


def _good_metadata(ticket: Ticket) -> dict[str, str]:
    return {"format": FORMAT, "version": "2", "masks": json.dumps([[k, list(m.shape)] for k, m in ticket.masks.items()]),
            "rewind": "null", "history": "[]", "meta": "{}"}


def test_crafted_safetensors_files_are_refused(tmp_path):
    ticket = Ticket({"w": torch.rand(4, 5) > 0.5})
    good = {"mask/w": pack_mask(ticket.masks["w"])}
    meta = _good_metadata(ticket)
    assert torch.equal(Ticket.load(_write_safetensors(tmp_path / "ok", good, meta)).masks["w"], ticket.masks["w"])
    cases = {
        "not a ticket file": (good, {**meta, "format": "something else"}),
        "version '9'": (good, {**meta, "version": "9"}),
        "no 'history'": (good, {k: v for k, v in meta.items() if k != "history"}),
        "'meta' is not JSON": (good, {**meta, "meta": "{oops"}),
        "packs into 3 bytes; got 2": ({"mask/w": good["mask/w"][:2].clone()}, meta),
        "padding bits": ({"mask/w": torch.tensor([0, 0, 0xF0], dtype=torch.uint8)}, meta),
        "uint8": ({"mask/w": good["mask/w"].float()}, meta),
        "holds no tensor 'mask/w'": ({}, meta),
        "does not list": ({**good, "evil": torch.zeros(1)}, meta),
        "\\[name, shape\\] pairs": (good, {**meta, "masks": json.dumps({"w": [4, 5]})}),
        "non-negative ints": (good, {**meta, "masks": json.dumps([["w", [-4, -5]]])}),
        "3 surviving values": ({**good, "rewind/w": torch.zeros(3)}, {**meta, "rewind": json.dumps([["w", "survivors"]])}),
        "'survivors' or 'tensor'": ({**good, "rewind/w": torch.zeros(3)}, {**meta, "rewind": json.dumps([["w", "code"]])}),
    }
    for i, (message, (tensors, metadata)) in enumerate(cases.items()):
        path = _write_safetensors(tmp_path / f"bad{i}", tensors, metadata)
        with pytest.raises(ValueError, match=message):
            Ticket.load(path)


def test_a_corrupt_header_is_refused(tmp_path):
    header = b'{"mask/w": {"dtype": "U8", "shape": [1000000], "data_offsets": [0, 1000000]}}'
    path = tmp_path / "lying.ticket"
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)  # claims more data than it has
    with pytest.raises(ValueError, match="not a readable ticket file"):
        Ticket.load(path)
    path.write_bytes(b"just some text, not a ticket")
    with pytest.raises(ValueError, match="not a readable ticket file"):
        Ticket.load(path)
    with pytest.raises(FileNotFoundError, match="missing.ticket"):
        Ticket.load(tmp_path / "missing.ticket")


def test_save_is_atomic(tmp_path, monkeypatch):
    ticket = found_ticket()
    path = ticket.save(tmp_path / "t.ticket")
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr("safetensors.torch.save_file", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        found_ticket(0.5).save(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.ticket"]  # no temporary file left
