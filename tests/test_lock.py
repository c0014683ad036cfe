"""One search per run folder (issue 18): the lock of a ``checkpoint_dir``. A second process is
refused with the holder's process id; a killed holder's lock is taken over with a warning; the
lock goes when a search finishes or fails; within one process an idle search gives the folder
up and a search at work does not. Tiny models, seconds."""

from __future__ import annotations

import gc
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from tickets.prac.sampler import PrACSampler
from tickets.search import RunFolderLocked
from tickets.search.driver import prune
from tickets.search.lock import LOCK_FILE, RunFolderLock
from tickets.search.options import RunInterrupted
from tickets.search.ticket_search import TicketSearch

torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]


def _data(n: int = 48) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, (x[:, 0] > 0).long())


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))


COMMON: dict[str, Any] = dict(rounds=2, epochs=1, batch_size=16, seed=0, precision="fp32", quiet=True)
TRAIN = _data()


def _search(folder: Path) -> TicketSearch:
    return TicketSearch(_model(), PrACSampler(TRAIN), checkpoint_dir=folder, **COMMON)


def _own_loop(search: TicketSearch) -> None:
    model = search.model
    for rnd in search:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        for _ in rnd:
            for x, y, idx in search.loader():
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                rnd.report(idx, logits, y)
            rnd.end_epoch()


def _prune(folder: Path, **kwargs: Any) -> Any:
    return prune(_model(), PrACSampler(TRAIN), checkpoint_dir=folder, **{**COMMON, **kwargs})


# a process that opens a search on the folder (argv[1]) with the settings above, says so and waits
HOLDER = textwrap.dedent("""
    import sys, time, torch
    sys.path.insert(0, {tests!r})
    from test_lock import _search
    search = _search(__import__("pathlib").Path(sys.argv[1]))
    print("ready", flush=True)
    if sys.argv[2] == "raise":
        raise RuntimeError("the search failed")
    time.sleep(120)
""").format(tests=str(ROOT / "tests"))


def _holder(folder: Path, mode: str = "wait") -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), mode], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # type: ignore[union-attr]
    if line.strip() != "ready":
        proc.kill()
        proc.wait()
        raise AssertionError(f"the holder process did not start: {proc.stderr.read()}")  # type: ignore[union-attr]
    return proc


def test_a_second_process_is_refused_and_a_killed_holders_lock_is_taken_over(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "run"
    proc = _holder(folder)
    try:
        record = json.loads((folder / LOCK_FILE).read_text())
        assert record["pid"] == proc.pid and record["host"] == socket.gethostname() and record["started"]
        with pytest.raises(RunFolderLocked, match=rf"process {proc.pid} on host") as refused:
            _search(folder)
        error = refused.value
        assert isinstance(error, RuntimeError) and not error.same_process
        assert (error.directory, error.pid, error.host) == (folder, proc.pid, socket.gethostname())
        assert str(folder) in str(error) and "use another checkpoint_dir" in str(error)
        with pytest.raises(RunFolderLocked, match=str(proc.pid)):  # prune() too, before any training
            _prune(folder)
        assert not (folder / "state.pt").exists()
    finally:
        proc.kill()  # SIGKILL: no clean-up runs; the lock file stays behind
        proc.wait()
    assert (folder / LOCK_FILE).is_file()
    with caplog.at_level(logging.WARNING, logger="tickets"):
        ticket = _prune(folder)
    assert len(ticket.history) == 2
    taken = [r.getMessage() for r in caplog.records if "taking over the lock" in r.getMessage()]
    assert len(taken) == 1 and f"process {proc.pid} on host" in taken[0], caplog.text
    assert not (folder / LOCK_FILE).exists()  # released when prune() returned


def test_a_lock_of_a_dead_process_without_its_flock_is_stale(tmp_path: Path) -> None:
    """A lock file whose holder ran on this host and is gone (say the folder was copied with it)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / LOCK_FILE).write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "then"}))
    search = _search(folder)
    assert json.loads((folder / LOCK_FILE).read_text())["pid"] == os.getpid()
    del search
    gc.collect()
    assert not (folder / LOCK_FILE).exists()


def test_the_lock_goes_after_a_normal_finish_and_after_an_exception(tmp_path: Path) -> None:
    _prune(tmp_path / "done")
    assert not (tmp_path / "done" / LOCK_FILE).exists()  # prune() returned: released
    search = _search(tmp_path / "own")
    _own_loop(search)
    assert search.done and (tmp_path / "own" / "ticket.ticket").is_file()
    del search  # an own loop's search holds the folder while it lives
    gc.collect()
    assert not (tmp_path / "own" / LOCK_FILE).exists()
    finished = _search(tmp_path / "own")  # a finished run opened again holds the lock too
    assert finished.done and (tmp_path / "own" / LOCK_FILE).is_file()
    del finished
    gc.collect()
    assert not (tmp_path / "own" / LOCK_FILE).exists()

    def fail(k: int, entry: dict[str, Any]) -> None:
        raise RunInterrupted("stop")

    with pytest.raises(RunInterrupted) as failed:
        _prune(tmp_path / "failed", on_epoch=fail)
    del failed  # the traceback held the search
    gc.collect()
    assert not (tmp_path / "failed" / LOCK_FILE).exists()
    # a process whose search raised leaves no lock behind (released at interpreter exit)
    proc = _holder(tmp_path / "raised", mode="raise")
    assert proc.wait() != 0 and "the search failed" in proc.stderr.read()  # type: ignore[union-attr]
    assert not (tmp_path / "raised" / LOCK_FILE).exists()


def test_in_one_process_an_idle_search_gives_the_folder_up_and_a_search_at_work_does_not(tmp_path: Path) -> None:
    folder = tmp_path / "run"

    def fail(k: int, entry: dict[str, Any]) -> None:
        raise RunInterrupted("stop")

    # a notebook reruns prune after an exception while the failed search still lives in the traceback
    with pytest.raises(RunInterrupted) as first:
        _prune(folder, on_epoch=fail)
    kept = _search(tmp_path / "own")  # a search kept in a variable while another opens its folder: idle too
    other = _search(tmp_path / "own")
    assert json.loads((tmp_path / "own" / LOCK_FILE).read_text())["pid"] == os.getpid()
    del other
    gc.collect()
    assert not (tmp_path / "own" / LOCK_FILE).exists() and kept.round == 0
    seen: list[BaseException] = []

    def reopen(k: int, entry: dict[str, Any]) -> None:  # a callback of the running prune() opens its folder
        try:
            _search(folder)
        except RunFolderLocked as e:
            seen.append(e)
        raise RunInterrupted("stop")

    with pytest.raises(RunInterrupted):
        _prune(folder, on_epoch=reopen)
    assert len(seen) == 1 and seen[0].same_process and "this process" in str(seen[0])  # type: ignore[attr-defined]
    assert seen[0].pid == os.getpid()  # type: ignore[attr-defined]
    ticket = _prune(folder)  # resumes: the earlier searches are idle
    assert len(ticket.history) == 2 and first.value is not None and kept is not None
    assert not (folder / LOCK_FILE).exists()


def test_release_is_idempotent_and_ignores_a_forked_copy(tmp_path: Path) -> None:
    class Holder:
        pass

    holder = Holder()
    lock = RunFolderLock.take(tmp_path, holder)
    assert lock.held and lock.holder is holder and (tmp_path / LOCK_FILE).is_file()
    lock._pid = -1  # as in a forked child (a DataLoader worker): the parent's file stays
    lock.release()
    assert not lock.held and (tmp_path / LOCK_FILE).is_file()
    os.close(lock._fd)
    os.unlink(tmp_path / LOCK_FILE)
    again = RunFolderLock.take(tmp_path, holder)
    again.release()
    again.release()
    assert not (tmp_path / LOCK_FILE).exists() and "released" in repr(again)
