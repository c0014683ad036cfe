"""The run folder of tickets.prune: file modes, stale temporary files, Ctrl-C, the compact
state.pt, checkpoint frequency, round tickets, metrics.jsonl, progress streams and lines."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import tickets.ticket.file as ticket_module
from tickets.search.options import RunInterrupted
from tickets.search.driver import prune
from tickets.prac.sampler import PrACSampler
from tickets.search.run_folder import STATE_VERSION, _decode, _Encoder
from tickets.search.options import Runtime, parse_checkpoint_every
from tickets.ticket.file import atomic_save, remove_stale_temporaries

torch.set_num_threads(1)


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    w = torch.randn(12, 3, generator=torch.Generator().manual_seed(42))
    return TensorDataset(x, (x @ w).argmax(1))


def _model(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


TRAIN, VAL = _data(96, 0), _data(32, 1)
COMMON: dict[str, Any] = dict(rounds=3, epochs=3, lr=0.05, batch_size=16, eval_data=VAL, seed=0, precision="fp32")


def _strip(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if "wall_time" not in k} for h in history]


def _run(folder: Path | None, **kwargs: Any) -> Any:
    options = {**COMMON, "quiet": True, **kwargs}
    return prune(_model(), PrACSampler(TRAIN, seed=3), checkpoint_dir=folder, **options)


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


# ---------------------------------------------------------------------- modes and temporary files
def test_run_folder_files_get_the_umask_mode(tmp_path: Path, umask_022: None) -> None:
    _run(tmp_path / "run")
    files = sorted(p for p in (tmp_path / "run").iterdir())
    assert {"state.pt", "ticket.ticket", "round_0.ticket", "prac_sets.pt", "metrics.jsonl"} <= {p.name for p in files}
    for path in files:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path.name
    os.umask(0o002)  # group-writable, as on a shared project folder
    atomic_save({"x": torch.zeros(2)}, tmp_path / "shared.pt")
    assert stat.S_IMODE((tmp_path / "shared.pt").stat().st_mode) == 0o664


def test_stale_temporary_files_are_removed_on_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "run"
    folder.mkdir()
    stale = [folder / "state.pt.k2x_9abc.tmp", folder / "round_1.ticket.abcdefgh.tmp", folder / "ticket.ticket.00000000.tmp"]
    kept = [folder / "notes.txt.abcdefgh.tmp", folder / "state.pt.tmp", folder / "mine.tmp"]  # not ours
    for path in stale + kept:
        path.write_bytes(b"partial")
    _run(folder, rounds=1, epochs=1, quiet=False)
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)
    err = capsys.readouterr().err
    assert "removed 3 temporary file(s)" in err and "state.pt.k2x_9abc.tmp" in err
    assert remove_stale_temporaries(tmp_path / "missing") == []


def test_an_interrupted_atomic_write_keeps_the_old_file_and_no_temporary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "state.pt"
    atomic_save({"v": torch.arange(4)}, path)
    real_save = torch.save

    def interrupted(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        with open(f, "wb") as handle:
            handle.write(b"half a checkpoint")
        raise KeyboardInterrupt

    monkeypatch.setattr(ticket_module.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({"v": torch.arange(8)}, path)
    monkeypatch.setattr(ticket_module.torch, "save", real_save)
    assert torch.equal(torch.load(path, weights_only=True)["v"], torch.arange(4))
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_ctrl_c_says_where_the_run_is_safe_and_the_rerun_resumes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole = _run(tmp_path / "whole")

    def ctrl_c(round_index: int, entry: dict[str, Any]) -> None:
        if round_index == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt, match=r"safe at its last checkpoint \(the start of round 1\); rerun the same call"):
        _run(tmp_path / "run", on_epoch=ctrl_c, quiet=False)
    err = capsys.readouterr().err
    assert f"rerun the same call with checkpoint_dir={str(tmp_path / 'run')!r} to resume" in err
    resumed = _run(tmp_path / "run", quiet=False)
    assert "resuming" in capsys.readouterr().err
    assert _strip(resumed.history) == _strip(whole.history)
    with pytest.raises(KeyboardInterrupt, match="nothing was saved"):
        _run(None, on_epoch=ctrl_c)


def test_ctrl_c_inside_a_checkpoint_write_leaves_the_last_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    whole = _run(tmp_path / "whole")
    real_save = torch.save
    calls = {"state": 0}

    def save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        if str(f).startswith(str(tmp_path / "run" / "state.pt")):
            calls["state"] += 1
            if calls["state"] == 3:  # the end of round 1: interrupted half-way through the write
                with open(f, "wb") as handle:
                    handle.write(b"half")
                raise KeyboardInterrupt
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(ticket_module.torch, "save", save)
    with pytest.raises(KeyboardInterrupt, match=r"safe at its last checkpoint \(the start of round 1\)") as stop:
        _run(tmp_path / "run")
    assert stop.value.__cause__ is None and stop.value.__suppress_context__  # one message, not a write's traceback
    monkeypatch.setattr(ticket_module.torch, "save", real_save)
    assert not list((tmp_path / "run").glob("*.tmp"))
    assert _strip(_run(tmp_path / "run").history) == _strip(whole.history)


def test_resume_and_finished_runs_say_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    def stop(round_index: int, entry: dict[str, Any]) -> None:
        if round_index == 0 and entry["epoch"] == 2:
            raise RunInterrupted("stop")

    with pytest.raises(RunInterrupted):
        _run(tmp_path, on_epoch=stop)  # saved at that epoch although checkpoint_every is 5 minutes
    capsys.readouterr()
    _run(tmp_path, quiet=False)
    err = capsys.readouterr().err
    assert f"resuming {tmp_path} at round 0, epoch 3 of 3" in err
    _run(tmp_path, quiet=False)
    out, err = capsys.readouterr()
    assert f"{tmp_path} is finished (3 rounds); returning its ticket" in err and out == ""
    _run(tmp_path, quiet=True)
    assert capsys.readouterr() == ("", "")


# ---------------------------------------------------------------------- state.pt
def test_the_compact_encoding_is_lossless_and_stores_equal_tensors_once() -> None:
    weights = torch.randn(64, 64)
    weights[:, :20] = 0.0
    weights[:5, :5] = -0.0
    weights[0, 30] = float("nan")
    mask = weights != 0
    payload = {
        "a": {"w_orig": weights, "w_mask": mask, "bias": torch.zeros(300)},
        "b": {"w": weights.clone(), "dense": torch.randn(32, 32), "half": torch.randn(40, 40).to(torch.bfloat16)},
        "c": [torch.arange(5), (1, "x", torch.ones(3))],
        "n": 3, "s": "text",
    }
    encoded = _Encoder()(payload)
    assert encoded["a"]["w_orig"] is encoded["b"]["w"]  # equal bits: one entry
    back = _decode(encoded)
    for got, want in ((back["a"]["w_orig"], weights), (back["b"]["w"], weights)):
        assert got.dtype == want.dtype and torch.equal(got.view(torch.int32), want.view(torch.int32))  # -0.0 and NaN kept
    assert back["a"]["w_mask"].dtype == torch.bool and torch.equal(back["a"]["w_mask"], mask)
    assert torch.equal(back["b"]["half"], payload["b"]["half"]) and torch.equal(back["a"]["bias"], payload["a"]["bias"])
    assert back["c"][1][:2] == (1, "x") and back["n"] == 3 and back["s"] == "text"
    back["b"]["dense"].add_(1)  # decoded tensors never alias each other
    assert not torch.equal(back["b"]["dense"], payload["b"]["dense"] + 2)


def _sizes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in folder.iterdir()}


def test_state_pt_holds_each_tensor_once_and_compactly(tmp_path: Path) -> None:
    """Mid-round (every epoch saved) state.pt stays within about twice the fp32 model plus the
    optimizer's momentum and the best-validation copy; the old format wrote 6-7 times."""
    torch.manual_seed(0)  # big enough that the weights, not the RNG states and the sets, make the size
    model = nn.Sequential(nn.Linear(12, 192), nn.ReLU(), nn.Linear(192, 192), nn.ReLU(), nn.Linear(192, 3))
    fp32 = sum(p.numel() * 4 for p in model.parameters())
    seen: list[int] = []

    def size(round_index: int, entry: dict[str, Any]) -> None:
        seen.append((tmp_path / "state.pt").stat().st_size)

    prune(model, PrACSampler(TRAIN, seed=3), checkpoint_dir=tmp_path, checkpoint_every=1, on_epoch=size, quiet=True,
          **COMMON)
    assert len(seen) >= 5
    # the old format: 7x; now: rewind point + weights + best copy + momentum, the pruned ones sparse
    assert max(seen) < 4.3 * fp32
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert state["version"] == STATE_VERSION
    assert _sizes(tmp_path)["state.pt"] < 2.2 * fp32  # between rounds: the rewind point and the weights


def test_an_old_format_checkpoint_still_resumes(tmp_path: Path) -> None:
    whole = _run(tmp_path / "whole")

    def stop(round_index: int, entry: dict[str, Any]) -> None:
        if round_index == 1:
            raise RunInterrupted("stop")

    with pytest.raises(RunInterrupted):
        _run(tmp_path / "old", on_epoch=stop)
    path = tmp_path / "old" / "state.pt"
    payload = _decode(torch.load(path, weights_only=True))  # rewritten as version 1 wrote it: plain tensors
    payload["version"] = 1
    payload.pop("metrics_bytes", None)
    torch.save(payload, path)
    assert _strip(_run(tmp_path / "old").history) == _strip(whole.history)
    payload["version"] = STATE_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(ValueError, match=rf"version {STATE_VERSION + 1}.*upgrade torch-tickets"):
        _run(tmp_path / "old")


# ---------------------------------------------------------------------- options
def test_checkpoint_every_and_keep_round_tickets(tmp_path: Path) -> None:
    assert parse_checkpoint_every("5min") == ("seconds", 300.0)
    assert parse_checkpoint_every("90s") == ("seconds", 90.0)
    assert parse_checkpoint_every(2) == ("epochs", 2.0)
    assert parse_checkpoint_every("round") == ("round", 0.0)
    for bad in (0, "5 parsecs", "min", -1, 1.5, True):
        with pytest.raises((ValueError, TypeError), match="checkpoint_every must be"):
            Runtime(checkpoint_every=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="keep_round_tickets must be True or False"):
        Runtime(keep_round_tickets="no")  # type: ignore[arg-type]

    trainer_saved: list[bool] = []

    def look(round_index: int, entry: dict[str, Any]) -> None:
        state = torch.load(tmp_path / "every" / "state.pt", weights_only=True)
        trainer_saved.append(state["trainer"] is not None)

    _run(tmp_path / "every", checkpoint_every=1, on_epoch=look)
    assert all(trainer_saved)
    trainer_saved.clear()
    _run(tmp_path / "rounds", checkpoint_every="round", keep_round_tickets=False,
         on_epoch=lambda k, e: trainer_saved.append(torch.load(tmp_path / "rounds" / "state.pt", weights_only=True)["trainer"] is not None))
    assert trainer_saved and not any(trainer_saved)
    names = set(_sizes(tmp_path / "rounds"))
    assert "ticket.ticket" in names and not any(n.startswith("round_") and n.endswith(".ticket") for n in names)


# ---------------------------------------------------------------------- metrics and progress
def _metrics(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_metrics_jsonl_has_a_line_per_epoch_and_round_and_none_twice_after_a_resume(tmp_path: Path) -> None:
    whole = _run(tmp_path / "whole")
    lines = _metrics(tmp_path / "whole")
    rounds = [m for m in lines if m["kind"] == "round"]
    epochs = [m for m in lines if m["kind"] == "epoch"]
    assert [m["round"] for m in rounds] == [0, 1, 2]
    assert _strip([{k: v for k, v in m.items() if k not in ("kind", "time")} for m in rounds]) == _strip(whole.history)
    assert len(epochs) == sum(h["epochs"] for h in whole.history)
    assert {"round", "epoch", "step", "lr", "train_loss", "train_acc", "val_acc", "seconds", "time"} <= set(epochs[0])

    def kill(round_index: int, entry: dict[str, Any]) -> None:
        if round_index == 0 and entry["epoch"] == 2:
            raise RuntimeError("killed")  # not saved: the rerun repeats epochs 1 and 2 of round 0

    with pytest.raises(RuntimeError):
        _run(tmp_path / "run", on_epoch=kill)
    assert len(_metrics(tmp_path / "run")) == 2
    _run(tmp_path / "run")
    again = _metrics(tmp_path / "run")
    strip = lambda ms: [{k: v for k, v in m.items() if k not in ("time", "seconds") and "wall_time" not in k} for m in ms]  # noqa: E731
    assert strip(again) == strip(lines)


def test_progress_goes_to_stderr_and_counts_agree(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ticket = _run(tmp_path, quiet=False, rewind_to="1ep")
    out, err = capsys.readouterr()
    assert out == ""  # nothing but the caller's own prints on stdout
    entry = ticket.history[1]
    assert f"{entry['steps']} steps trained (schedule step {entry['start_step']} to {entry['end_step']};" in err
    last_epoch = [line for line in err.splitlines() if line.startswith("round 1: epoch")][-1]
    assert f"schedule step {entry['end_step']}/{entry['end_step']} ({entry['steps']} trained)" in last_epoch


def test_an_own_loop_writes_metrics_and_a_cut_round_leaves_no_lines(tmp_path: Path) -> None:
    from test_own_loop import COMMON as LOOP, blobs, mlp, own_loop

    from tickets import TicketSearch

    train, val = blobs(96, seed=0), blobs(48, seed=1)
    whole = tmp_path / "whole"
    model = mlp()
    own_loop(TicketSearch(model, PrACSampler(train, seed=0), checkpoint_dir=whole, **LOOP), model, val)
    lines = _metrics(whole)
    assert [m["round"] for m in lines if m["kind"] == "round"] == [0, 1, 2]
    assert all("val_acc" in m and "steps_trained" in m for m in lines if m["kind"] == "epoch")

    cut = tmp_path / "cut"
    model = mlp()
    with pytest.raises(KeyboardInterrupt):
        own_loop(TicketSearch(model, PrACSampler(train, seed=0), checkpoint_dir=cut, **LOOP), model, val,
                 stop_in_round=1)
    model = mlp()
    own_loop(TicketSearch(model, PrACSampler(train, seed=0), checkpoint_dir=cut, **LOOP), model, val)
    strip = lambda ms: [(m["kind"], m["round"], m.get("epoch"), m.get("step")) for m in ms]  # noqa: E731
    assert strip(_metrics(cut)) == strip(lines)


def test_round_0_pt_is_stored_compactly_and_an_old_one_still_starts_a_search(tmp_path: Path) -> None:
    from tickets.search.run_folder import ROUND0_FORMAT, ROUND0_VERSION, _load_round_0, _save_round_0

    seen = torch.rand(4096) > 0.5
    weights = torch.randn(64, 64)
    weights[:, ::2] = 0.0
    (tmp_path / "made").mkdir()
    _save_round_0({"format": ROUND0_FORMAT, "version": 1, "rewind_state": {"w": weights}, "model": {"w": weights.clone()},
                   "stats": {"ever_correct": seen}}, tmp_path / "made")
    raw = torch.load(tmp_path / "made" / "round_0.pt", weights_only=True)
    assert raw["version"] == ROUND0_VERSION == 2
    assert raw["stats"]["ever_correct"]["__tickets_encoded__"] == "bits"  # packed 8 per byte
    assert raw["rewind_state"]["w"]["__tickets_encoded__"] == "nonzero"  # its nonzero values and where they are
    back = _load_round_0(tmp_path / "made")
    assert torch.equal(back["stats"]["ever_correct"], seen) and torch.equal(back["model"]["w"], weights)
    assert back["model"]["w"].untyped_storage().data_ptr() != back["rewind_state"]["w"].untyped_storage().data_ptr()

    _run(tmp_path / "source", rounds=1)
    assert torch.load(tmp_path / "source" / "round_0.pt", weights_only=True)["version"] == 2
    record = _load_round_0(tmp_path / "source")
    started = _run(tmp_path / "started", start_from=tmp_path / "source")
    atomic_save({**record, "version": 1}, tmp_path / "source" / "round_0.pt")  # as version 1 wrote it: plain tensors
    old = _run(tmp_path / "old", start_from=tmp_path / "source")
    assert _strip(old.history) == _strip(started.history)
    for key in started.masks:
        assert torch.equal(old.masks[key], started.masks[key])
