"""What a search records as it goes: :class:`Journal`, the writer of its run folder.

:mod:`tickets.search.run_folder` defines the files of a ``checkpoint_dir`` (the state file and
its encoding, round 0's record); the journal decides when they are written and what they
hold: the checkpoint (``state.pt``), ``metrics.jsonl``, ``prac_sets.pt``, ``round_0.pt``, the
round tickets and the final ``ticket.ticket``, and the progress lines of the search (the
"resuming ..." line, the note on a Ctrl-C). Only rank 0 writes; every rank reads.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
import torch
from torch import nn
from torch.utils.data import Sampler
from tickets.prac.sampler import PrACSampler
from tickets.ticket.ticket import Ticket
from tickets.ticket.file import atomic_save, remove_stale_temporaries
from tickets.search.checks import _state
from tickets.search.options import Runtime, parse_checkpoint_every
from tickets.search.run_folder import (
    METRICS_FILE, ROUND0_FORMAT, _ROUND_TICKET, _RUN_FILES, _check_rounds, _load_run, _Run, _save_round_0, _save_run,
)
from tickets.search.lock import RunFolderLock

__all__: list[str] = []


log = logging.getLogger("tickets")


class Journal:
    """The run folder of one search as the search writes it, and its progress lines.

    Opening it creates ``directory`` (rank 0), loads a saved run whose fingerprint matches
    (:attr:`run`, else a fresh one) and checks that ``rounds`` does not fall below the rounds
    it has begun. Without a directory it keeps the run in memory and writes nothing.

    Attributes:
        directory: the ``checkpoint_dir`` (None: nothing is saved).
        run: the search's mutable state (:class:`tickets.search.run_folder._Run`).
        resumed: the folder held a saved run when the search started.
        meta: the base ``meta`` of the search's tickets (set by the search once it is known).
        saved_at: where the last checkpoint stands, for the Ctrl-C line (None before any).
    """

    def __init__(self, directory: Path | None, fingerprint: str, rounds: int, sampler: Sampler[int], *,
                 runtime: Runtime, rank: int) -> None:
        self.directory, self.fingerprint, self.sampler = directory, fingerprint, sampler
        self.runtime, self.rank = runtime, rank
        self.writer = rank == 0  # only rank 0 writes; every rank reads
        self._lock: RunFolderLock | None = None
        if directory is not None and self.writer:
            directory.mkdir(parents=True, exist_ok=True)
            self._lock = RunFolderLock.take(directory, self)  # one search per folder (tickets.search.lock)
        self.resumed = directory is not None and (directory / "state.pt").is_file()
        try:
            self.run: _Run = (_load_run(directory, fingerprint) if directory is not None else None) or _Run()
            _check_rounds(self.run, rounds, directory)
        except BaseException:
            self.release()  # a refused folder stays free (a traceback may keep this journal alive)
            raise
        self.meta: dict[str, Any] = {}
        self.saved_at: str | None = None
        self._since_checkpoint: tuple[float, int] | None = None  # (time of the last save, epochs since)

    def release(self) -> None:
        """Give up the run folder's lock (no-op without one, or once released)."""
        if self._lock is not None:
            self._lock.release()

    # ------------------------------------------------------------------ the state file
    def checkpoint(self, trainer: dict[str, Any] | None = None, *, fsync: bool = True) -> None:
        """Save the run to ``checkpoint_dir/state.pt`` (rank 0; nothing without a folder).

        ``trainer`` is the engine's state at an epoch's end (None at round boundaries). The file
        is flushed to the disk (``fsync``) unless ``fsync=False``: an unflushed rename can leave
        an empty file after a power loss, so the state a resume reads is always flushed (the
        ``checkpoint_every`` default keeps that to round ends and one save per 5 minutes)."""
        run = self.run
        run.trainer = trainer
        self._since_checkpoint = (time.monotonic(), 0)
        if self.directory is None or not self.writer:
            return
        run.sampler = self.sampler.state_dict() if isinstance(self.sampler, PrACSampler) else None
        generator = getattr(self.sampler, "generator", None)
        run.sampler_generator = generator.get_state() if isinstance(generator, torch.Generator) else None
        metrics = self.directory / METRICS_FILE
        run.metrics_bytes = metrics.stat().st_size if metrics.is_file() else 0
        _save_run(run, self.fingerprint, self.directory, fsync=fsync)
        if trainer is not None and trainer.get("log"):
            self.saved_at = f"round {run.round}, epoch {trainer['log'][-1]['epoch']}"
        else:
            self.saved_at = f"the start of round {run.round}" if run.phase != "done" else "the end of the search"

    def checkpoint_due(self) -> bool:
        """Whether an epoch's end should save the run (``Runtime.checkpoint_every``); counts the epoch."""
        since, epochs = self._since_checkpoint or (time.monotonic(), 0)
        epochs += 1
        self._since_checkpoint = (since, epochs)
        if self.directory is None:
            return False
        kind, every = parse_checkpoint_every(self.runtime.checkpoint_every)
        if kind == "epochs":
            return epochs >= every
        if kind == "seconds":
            return time.monotonic() - since >= every
        return False

    def engine_epoch(self, index: int, entry: Mapping[str, Any], trainer: Any, *, force: bool = False) -> bool:
        """The engine's end of an epoch of round ``index``: its ``metrics.jsonl`` line, then a
        checkpoint with the ``trainer``'s state when one is due (``force``: now, e.g. before a
        callback stops the run). Returns whether the run was saved."""
        if not force:
            self.metrics({"kind": "epoch", "round": index, **entry, "epochs": trainer.schedule.epochs,
                          "steps_trained": trainer.steps_taken, "schedule_steps": trainer.total_steps})
        due = self.checkpoint_due()
        if (force or due) and self.directory is not None and self.writer:  # (no collective: rank 0 alone)
            self.checkpoint({**trainer.state_dict(), "round_epochs": trainer.schedule.epochs})
            return True
        return False

    # ------------------------------------------------------------------ the other files
    def metrics(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``checkpoint_dir/metrics.jsonl`` (rank 0; no folder: nothing)."""
        if self.directory is None or not self.writer:
            return
        def plain(value: Any) -> Any:  # numbers a loop reports as tensors or numpy scalars; anything else by repr
            try:
                return float(value)
            except (TypeError, ValueError):
                return repr(value)

        line = json.dumps({**record, "time": round(time.time(), 3)}, default=plain)
        with open(self.directory / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def save_sets(self, *, fsync: bool = True) -> None:
        """Write the PrAC set of every round begun so far to ``prac_sets.pt`` (rank 0)."""
        if self.directory is not None and self.writer:
            atomic_save(dict(self.run.sets), self.directory / "prac_sets.pt", fsync=fsync)

    def save_round_ticket(self, masks: dict[str, torch.Tensor], k: int) -> None:
        """Write ``round_<k>.ticket``, the ticket of the last finished round ``k``
        (unless ``Runtime.keep_round_tickets`` is off)."""
        if self.directory is not None and self.writer and self.runtime.keep_round_tickets:
            self.ticket(masks).save(self.directory / f"round_{k}.ticket")

    def save_round_0(self, entry: Mapping[str, Any], stats: dict[str, torch.Tensor] | None, model: nn.Module,
                     num_samples: int) -> None:
        """Record the finished round 0 in ``round_0.pt`` (the model is at its kept weights), so
        that another search can start from it (``start_from``)."""
        if self.directory is None or not self.writer:
            return
        run = self.run
        generator = getattr(self.sampler, "generator", None)
        first = run.sets.get(0)
        record = {
            "format": ROUND0_FORMAT, "config": self.fingerprint,
            "entry": json.dumps({key: v for key, v in entry.items() if key != "next_set"}),
            "model": _state(model), "rewind_state": run.rewind_state, "stats": stats,
            "set": first if first is not None else torch.arange(num_samples),
            "origin": json.dumps(run.origin) if run.origin is not None else None,
            "sampler_generator": generator.get_state() if isinstance(generator, torch.Generator) else None,
        }
        _save_round_0(record, self.directory)  # compact, as state.pt

    def ticket(self, masks: dict[str, torch.Tensor]) -> Ticket:
        """The ticket of the last finished round with ``masks`` (see :func:`_ticket`)."""
        return _ticket(masks, self.run, self.meta)

    def finish(self) -> Ticket:
        """The final ticket, saved as ``ticket.ticket`` if not there yet (rank 0)."""
        return _finish(self.run, self.meta, self.directory if self.writer else None)

    # ------------------------------------------------------------------ progress lines
    def note(self, text: str) -> None:
        """A progress line: logged at INFO, and printed to stderr unless quiet (rank 0)."""
        log.info(text)
        if not self.runtime.quiet and self.rank == 0:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)

    def open_folder(self, done: bool, rounds: int) -> None:
        """At the start of a search in ``checkpoint_dir``: remove the temporary files of a killed
        write, cut ``metrics.jsonl`` back to the checkpoint (epochs after it run again), and say
        what the folder held (``done``: the search is finished; ``rounds``: of the search now)."""
        directory, run, resumed = self.directory, self.run, self.resumed
        if directory is None or not self.writer:
            return
        stale = remove_stale_temporaries(directory, lambda name: name in _RUN_FILES or _ROUND_TICKET.match(name) is not None)
        if stale:
            self.note(f"note: removed {len(stale)} temporary file(s) left in {str(directory)!r} by an interrupted "
                      f"write ({', '.join(p.name for p in stale)}; only tickets' own '<file>.<8 characters>.tmp' files)")
        metrics = directory / METRICS_FILE
        if metrics.is_file():
            keep = run.metrics_bytes if resumed and run.metrics_bytes is not None else (None if resumed else 0)
            if keep is not None and metrics.stat().st_size > keep:
                with open(metrics, "r+b") as f:
                    f.truncate(keep)
        if not resumed:
            return
        trained = run.trainer is not None and bool(run.trainer.get("log"))
        self.saved_at = (f"round {run.round}, epoch {run.trainer['log'][-1]['epoch']}" if trained  # type: ignore[index]
                         else "the end of the search" if done else f"the start of round {run.round}")
        if done:
            self.note(f"{directory} is finished ({len(run.history)} rounds); returning its ticket "
                      f"({directory / 'ticket.ticket'}); pass a larger rounds to continue it, or use another checkpoint_dir "
                      f"to search again")
        elif trained:
            finished, epochs = run.trainer["log"][-1]["epoch"], run.trainer.get("round_epochs")  # type: ignore[index]
            self.note(f"resuming {directory} at round {run.round}, epoch {finished + 1}"
                      f"{f' of {epochs}' if epochs else ''} (epochs up to {finished} are in its checkpoint)")
        else:
            self.note(f"resuming {directory} at the start of round {run.round} of {rounds}")

    def interrupted_message(self) -> str:
        """The line for a Ctrl-C: where the run is safe and how to resume it."""
        if self.directory is None:
            return "interrupted: nothing was saved (no checkpoint_dir); pass checkpoint_dir= to make a run resumable"
        where = self.saved_at
        if where is None:
            return f"interrupted before the first checkpoint in {str(self.directory)!r}: rerunning the same call starts the run"
        return (f"interrupted: the run in {str(self.directory)!r} is safe at its last checkpoint ({where}); "
                f"rerun the same call with checkpoint_dir={str(self.directory)!r} to resume from there")


def _finish(run: _Run, base_meta: Mapping[str, Any], directory: Path | None) -> Ticket:
    """The final ticket, saved as ``ticket.ticket`` in ``directory`` if not there yet."""
    ticket = _ticket(run.masks, run, base_meta)  # type: ignore[arg-type]
    if directory is not None and not (directory / "ticket.ticket").is_file():
        ticket.save(directory / "ticket.ticket")
    return ticket


def _ticket(found: dict[str, torch.Tensor], run: _Run, base_meta: Mapping[str, Any]) -> Ticket:
    """The ticket of the last finished round: its masks, the weights it started from
    (round 0: the rewind point), the history so far."""
    k = run.history[-1]["round"]
    start = run.rewind_state if k == 0 else run.round_start
    state = None
    if start is not None:
        state = {key: (v * found[key].to(v.dtype) if key in found else v) for key, v in start.items()}
    return Ticket(dict(found), state, list(run.history), {**base_meta, "round": k})
