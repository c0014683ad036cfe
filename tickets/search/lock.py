"""One search per run folder: the lock of a ``checkpoint_dir``.

Two searches writing the same folder would overwrite each other's checkpoints. A search
(rank 0 alone under ``torch.distributed``) therefore holds ``checkpoint_dir/.lock`` while it
works: a small JSON file ``{"pid", "host", "started"}`` created atomically (``O_CREAT |
O_EXCL``) and, where the platform has :mod:`fcntl`, kept ``flock``-ed, so that the operating
system releases a killed holder's lock even though its file stays behind.

- Another process opening the folder gets :class:`RunFolderLocked`, naming the folder and the
  holder's process id, host and start.
- A lock left by a process that is gone is *stale* and taken over, with a warning: its
  ``flock`` can be taken (the holder died, or closed it), or its holder ran on this host and
  its process id is no longer alive.
- Within one process a folder held by a search that is at work (one of its methods, or the
  :func:`tickets.prune` call driving it, is on a thread's stack: another thread, a callback)
  is refused too. A search that is idle (one a notebook or a test keeps in a variable or in
  the traceback of an exception after it stopped, or a finished one) gives the folder up to
  the new search; the older object must not be used to train on afterwards.
- The lock is released when its holder (the search) is garbage collected, e.g. when
  :func:`tickets.prune` returns or its exception is dropped, at interpreter exit, and by
  :meth:`RunFolderLock.release`; the file is removed then. A killed process leaves the file,
  which the next search takes over as stale.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import socket
import sys
import threading
import time
import weakref
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: process ids alone tell a stale lock
    fcntl = None  # type: ignore[assignment]

__all__ = ['LOCK_FILE', 'RunFolderLocked', 'RunFolderLock']


log = logging.getLogger("tickets")


LOCK_FILE = ".lock"


_YOUNG_S = 2.0  # a lock file this new and still empty is being written by its creator
_TRIES = 100  # attempts (20 ms apart) before giving up on a folder whose lock keeps changing


class RunFolderLocked(RuntimeError):
    """Another search holds the run folder (``checkpoint_dir``) this search was given.

    Attributes:
        directory: the folder.
        pid, host, started: the holder's process id, host name and start time (as its lock
            file records them; None where the file could not be read).
        same_process: the holder is another search of this process.
    """

    def __init__(self, directory: Path, pid: int | None, host: str | None, started: str | None, *,
                 same_process: bool = False) -> None:
        self.directory, self.pid, self.host, self.started = directory, pid, host, started
        self.same_process = same_process
        lock = directory / LOCK_FILE
        if same_process:
            text = (
                f"checkpoint_dir {str(directory)!r} is in use by another search of this process (pid {pid}) that is "
                f"at work: a prune() or a TicketSearch method on this folder is running (in another thread, or "
                f"this call comes from its callback). Two searches in one folder would overwrite each other's "
                f"checkpoints: let that one finish first, or use another checkpoint_dir"
            )
        else:
            text = (
                f"checkpoint_dir {str(directory)!r} is in use by another search: process {pid if pid is not None else '?'} "
                f"on host {host if host is not None else '?'!r}"
                f"{f' (started {started})' if started else ''} holds its lock {str(lock)!r}. Two searches in one "
                f"folder would overwrite each other's checkpoints: wait for that one to finish or stop it, or use "
                f"another checkpoint_dir. If that process is gone (say it ran on another machine that shares this "
                f"folder), delete {str(lock)!r}"
            )
        super().__init__(text)


_HELD: dict[str, RunFolderLock] = {}  # the folders this process holds, by real path
_GUARD = threading.RLock()  # re-entrant: a release by the garbage collector may run inside take()


class RunFolderLock:
    """The lock of one run folder, held by this process for one search (``holder``).

    Take it with :meth:`take`; it is released by :meth:`release`, when ``holder`` is garbage
    collected, and at interpreter exit.

    Attributes:
        directory: the folder; ``path``: its lock file.
    """

    def __init__(self, directory: Path, fd: int, holder: Any) -> None:
        self.directory, self.path = directory, directory / LOCK_FILE
        self._fd, self._pid, self._held = fd, os.getpid(), True
        self._holder = weakref.ref(holder)
        self._finalizer = weakref.finalize(holder, self.release)  # at garbage collection and at exit

    @property
    def held(self) -> bool:
        """The lock is still held (not released)."""
        return self._held

    @property
    def holder(self) -> Any:
        """The object holding the lock (the search), or None once it is gone."""
        return self._holder()

    @classmethod
    def take(cls, directory: str | Path, holder: Any) -> RunFolderLock:
        """Take the lock of ``directory`` (which exists) for ``holder`` (the search).

        Raises:
            RunFolderLocked: another process holds it, or a search of this process that is
                at work.
        """
        directory = Path(directory)
        key = os.path.realpath(directory)
        with _GUARD:
            mine = _HELD.get(key)
            if mine is not None and mine.held:
                previous = mine.holder
                if previous is not None and _running(previous):
                    raise RunFolderLocked(directory, os.getpid(), socket.gethostname(), None, same_process=True)
                del previous
                mine.release()
                log.info("%s: taken over from an earlier search of this process that is no longer running", directory)
            fd = _acquire(directory, directory / LOCK_FILE)
            lock = cls(directory, fd, holder)
            _HELD[key] = lock
            return lock

    def release(self) -> None:
        """Give the folder up: remove the lock file and its ``flock`` (no-op once released,
        and in a forked child, whose parent still holds it)."""
        with _GUARD:
            if not self._held:
                return
            self._held = False
            self._finalizer.detach()
            key = os.path.realpath(self.directory)
            if _HELD.get(key) is self:
                del _HELD[key]
            if os.getpid() != self._pid:
                return
            try:
                if os.path.samestat(os.stat(self.path), os.fstat(self._fd)):
                    os.unlink(self.path)  # before the flock goes: a contender then finds no file
            except OSError:
                pass
            try:
                os.close(self._fd)  # releases the flock
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"RunFolderLock({str(self.directory)!r}, {'held' if self._held else 'released'})"


def _acquire(directory: Path, path: Path) -> int:
    """Create ``path`` exclusively and lock it, taking over a stale one; its descriptor."""
    for _ in range(_TRIES):
        fd = _create(path)
        if fd is not None:
            return fd
        verdict, record, fd = _inspect(path)
        if verdict == "live":
            raise RunFolderLocked(directory, record.get("pid"), record.get("host"), record.get("started"))
        if verdict == "stale":
            try:
                if os.path.samestat(os.stat(path), os.fstat(fd)):
                    os.unlink(path)
                    who = (f"process {record.get('pid')} on host {record.get('host')!r} (started {record.get('started')})"
                           if record else "a process that died while creating it")
                    log.warning("%s: taking over the lock %s of %s: that process is gone (killed or crashed) and left "
                                "its lock file behind", directory, str(path), who)
            except FileNotFoundError:
                pass  # another contender took it over first
            finally:
                os.close(fd)
            continue
        time.sleep(0.02)  # "gone" (retry at once after this pause) or "busy" (being written or taken over)
    raise RunFolderLocked(directory, None, None, None)


def _create(path: Path) -> int | None:
    """``path`` created exclusively, ``flock``-ed and holding this process's record; None if it exists."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return None
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks only while a contender looks at the empty file (it waits for us)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    os.write(fd, (json.dumps(record) + "\n").encode())
    return fd


def _inspect(path: Path) -> tuple[str, dict[str, Any], int]:
    """Whether the lock file at ``path`` is ``"live"``, ``"stale"`` (the returned descriptor
    then holds its ``flock``, where there is one), ``"busy"`` (being written or taken over: look
    again) or ``"gone"``; with its record."""
    try:
        fd = os.open(path, os.O_RDWR)  # (an exclusive flock over NFS needs a writable descriptor)
    except FileNotFoundError:
        return "gone", {}, -1
    flocked: bool | None = None
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            flocked = True
        except OSError:
            flocked = False
    try:
        raw = os.read(fd, 4096)
        record = json.loads(raw.decode()) if raw.strip() else None
        stat = os.fstat(fd)
        same_file = os.path.samestat(os.stat(path), stat)
    except FileNotFoundError:
        os.close(fd)
        return "gone", {}, -1
    except (ValueError, UnicodeDecodeError):
        record, stat, same_file = None, os.fstat(fd), True
    if not same_file:
        os.close(fd)
        return "gone", {}, -1
    if not isinstance(record, dict):  # empty or torn: its creator is writing it, or died doing so
        young = time.time() - stat.st_mtime < _YOUNG_S
        verdict = "busy" if young or flocked is False else "stale"
    elif flocked:
        verdict = "stale"  # nobody holds the file's flock: its holder is gone
    elif _dead_here(record):
        # a dead holder whose flock is still held (an orphaned child kept the descriptor) or no flock at
        # all: take it over, but give a contender holding the flock a moment to do so first
        verdict = "stale" if flocked is None or time.time() - stat.st_mtime > _YOUNG_S else "busy"
    else:
        verdict = "live"
    if verdict != "stale":
        os.close(fd)
        fd = -1
    return verdict, record or {}, fd


def _dead_here(record: dict[str, Any]) -> bool:
    """The record's holder ran on this host and its process is gone (or is this process,
    which does not hold the folder: the record is another's, with a reused process id)."""
    pid = record.get("pid")
    if record.get("host") != socket.gethostname() or not isinstance(pid, int):
        return False
    if pid == os.getpid():
        return True
    if sys.platform == "win32":  # os.kill(pid, 0) is no probe there
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # PermissionError: alive, another user's
        return False
    return False


def _running(holder: Any) -> bool:
    """Whether ``holder`` is at work: the library's code has it (or an object holding it in an
    attribute, such as the search that owns it) as a local variable in a frame on some
    thread's stack: a method of the search runs, or the :func:`tickets.prune` call driving it.
    A variable of the user's code (a search kept after an exception, a finished one) is idle."""
    for top in sys._current_frames().values():
        frame = top
        while frame is not None:
            module = frame.f_globals.get("__name__") or ""
            if (module == "tickets" or module.startswith("tickets.")) and module != __name__ \
                    and frame.f_code.co_flags & inspect.CO_OPTIMIZED:
                for value in list(frame.f_locals.values()):
                    if value is holder or any(v is holder for v in _attributes(value)):
                        return True
            frame = frame.f_back
    return False


def _attributes(value: Any) -> list[Any]:
    try:
        return list(vars(value).values())
    except TypeError:
        return []
