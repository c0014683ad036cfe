"""The run folder of a search (``checkpoint_dir``): the state file and its compact
encoding, the PrAC sets, round 0's file for ``start_from`` (stored with the same encoding).
Its lock (one search per folder) is :mod:`tickets.search.lock`.
"""

from __future__ import annotations

import json
import logging
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
import torch
from tickets.ticket.file import atomic_save, pack_mask, unpack_mask
from tickets.search.identity import _GROWABLE_KEYS, _config_diff, _describe_diff

__all__ = ['STATE_FORMAT', 'STATE_VERSION', 'METRICS_FILE', 'load_prac_sets', 'ROUND0_FORMAT', 'ROUND0_FILE']


log = logging.getLogger("tickets")


STATE_FORMAT = "torch-tickets/imp-run"


STATE_VERSION = 2  # 2: tensors stored compactly (see _Encoder); 1 still loads


METRICS_FILE = "metrics.jsonl"


# the files a search writes atomically into checkpoint_dir (their stale temporaries are removed on start)
_RUN_FILES = frozenset({"state.pt", "prac_sets.pt", "ticket.ticket", "round_0.pt"})


_ROUND_TICKET = re.compile(r"^round_\d+\.ticket$")


def load_prac_sets(checkpoint_dir: str | Path) -> list[torch.Tensor]:
    """The PrAC set of every round of a :func:`prune` run saved in ``checkpoint_dir``.

    ``sets[k]`` is the set round ``k`` trained on (``sets[0]`` = all samples). Pass them to
    :meth:`tickets.PrACSampler.replay` to reuse them for another architecture.
    """
    path = Path(checkpoint_dir) / "prac_sets.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no PrAC sets in {str(checkpoint_dir)!r} (expected {path.name} written by tickets.prune)")
    sets = torch.load(path, map_location="cpu", weights_only=True)
    return [sets[k] for k in sorted(sets)]


# ---------------------------------------------------------------------- the run
@dataclass
class _Run:
    """Mutable state of a search, checkpointed between epochs and rounds."""

    round: int = 0
    phase: Literal["start", "train", "done"] = "start"
    model: dict[str, torch.Tensor] | None = None
    masks: dict[str, torch.Tensor] | None = None
    trainer: dict[str, Any] | None = None
    rewind_state: dict[str, torch.Tensor] | None = None
    round_start: dict[str, torch.Tensor] | None = None
    dense_predictions: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    sampler: dict[str, Any] | None = None
    sampler_generator: torch.Tensor | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    sets: dict[int, torch.Tensor] = field(default_factory=dict)
    extra_wall: float = 0.0
    # the finished last round's per-sample statistics (PrAC), kept so that a later run with more
    # rounds can pick the next set as an uninterrupted run would have (see tickets.search.start.advance)
    stats: dict[str, torch.Tensor] | None = None
    # what round 0 started from (initial weights' digest, data order): checked by start_from
    origin: dict[str, Any] | None = None
    # the length of checkpoint_dir/metrics.jsonl when this state was saved (a resume cuts it back)
    metrics_bytes: int | None = None


# ---------------------------------------------------------------------- the state file
# state.pt (version 2) is the run's payload with every tensor stored compactly, losslessly:
# - bool tensors (masks) packed 8 entries per byte;
# - a floating tensor with at least 1/16 zeros (pruned weights, their momentum) as its nonzero
#   values, a packed bitmap of where they are and a packed bitmap of the zeros that are -0.0;
# - tensors with equal bits (the round's start in the run and as round_start, the current and
#   the best-validation weights, ...) stored once (torch.save writes a shared storage once).
# Version 1 files (plain tensors) still load.
_ENCODED = "__tickets_encoded__"


_BITWISE = {torch.float64: torch.int64, torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16}


_COMPACT_MIN_NUMEL = 256


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal dtype, shape and bits (so +0.0 and -0.0 differ, and equal NaNs match)."""
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    view = _BITWISE.get(a.dtype)
    return bool(torch.equal(a.view(view), b.view(view))) if view is not None else bool(torch.equal(a, b))


class _Encoder:
    """Encodes a payload for state.pt: compact forms, equal tensors stored once."""

    def __init__(self) -> None:
        self.seen: dict[tuple[Any, ...], list[tuple[torch.Tensor, Any]]] = {}

    def __call__(self, value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return self.tensor(value)
        if isinstance(value, dict):
            out: dict[Any, Any] = OrderedDict() if isinstance(value, OrderedDict) else {}
            out.update((k, self(v)) for k, v in value.items())
            if hasattr(value, "_metadata"):
                out._metadata = value._metadata  # type: ignore[attr-defined]
            return out
        if isinstance(value, list):
            return [self(v) for v in value]
        if isinstance(value, tuple):
            return tuple(self(v) for v in value)
        return value

    def tensor(self, t: torch.Tensor) -> Any:
        t = t.detach()
        if t.device.type != "cpu" or t.numel() < _COMPACT_MIN_NUMEL or t.is_sparse or t.layout != torch.strided:
            return t
        key = (t.dtype, tuple(t.shape))
        for other, encoded in self.seen.setdefault(key, []):
            if _bits_equal(t, other):
                return encoded
        encoded = self.compact(t, [other for other, stored in self.seen[key] if stored is other])
        self.seen[key].append((t, encoded))
        return encoded

    @staticmethod
    def compact(t: torch.Tensor, dense: Sequence[torch.Tensor] = ()) -> Any:
        """``t`` in its smallest lossless form; ``dense``: tensors of its shape stored as they
        are, of which ``t`` may be a masked copy (a rewound round's start: the rewind point
        with the pruned entries zeroed), then stored as that tensor and where it is zero."""
        shape = list(t.shape)
        if t.dtype == torch.bool:
            return {_ENCODED: "bits", "shape": shape, "bits": pack_mask(t)}
        if not t.dtype.is_floating_point:
            return t
        flat = t.reshape(-1)
        nonzero = flat != 0
        kept = int(nonzero.sum())
        if kept * t.element_size() + flat.numel() // 4 >= flat.numel() * t.element_size():
            return t
        negative_zero = ~nonzero & torch.signbit(flat)
        record = {_ENCODED: "nonzero", "shape": shape, "where": pack_mask(nonzero),
                  "negative_zero": pack_mask(negative_zero) if bool(negative_zero.any()) else None}
        values = flat[nonzero]
        bits = _BITWISE.get(t.dtype)
        for source in dense:
            picked = source.reshape(-1)[nonzero]
            if bits is not None and torch.equal(picked.view(bits), values.view(bits)):
                return {**record, _ENCODED: "masked", "source": source}
        return {**record, "values": values.clone()}


def _decode(value: Any, shared: set[int] | None = None) -> Any:
    """The payload of :class:`_Encoder` back (every tensor its own storage)."""
    shared = set() if shared is None else shared
    if isinstance(value, torch.Tensor):
        pointer = value.untyped_storage().data_ptr()
        if pointer in shared and value.numel():
            return value.clone()  # stored once for several entries: each gets its own copy
        shared.add(pointer)
        return value
    if isinstance(value, dict):
        kind = value.get(_ENCODED)
        if kind == "bits":
            return unpack_mask(value["bits"], value["shape"])
        if kind in ("nonzero", "masked"):
            where = unpack_mask(value["where"], value["shape"]).reshape(-1)
            values = value["values"] if kind == "nonzero" else value["source"].reshape(-1)[where]
            flat = torch.zeros(where.numel(), dtype=values.dtype)
            flat[where] = values
            if value["negative_zero"] is not None:
                flat[unpack_mask(value["negative_zero"], value["shape"]).reshape(-1)] = -0.0
            return flat.reshape(value["shape"])
        if kind is not None:
            raise ValueError(f"unknown tensor encoding {kind!r} in the checkpoint (written by a newer torch-tickets?)")
        out: dict[Any, Any] = OrderedDict() if isinstance(value, OrderedDict) else {}
        out.update((k, _decode(v, shared)) for k, v in value.items())
        if hasattr(value, "_metadata"):
            out._metadata = value._metadata  # type: ignore[attr-defined]
        return out
    if isinstance(value, list):
        return [_decode(v, shared) for v in value]
    if isinstance(value, tuple):
        return tuple(_decode(v, shared) for v in value)
    return value


def _save_run(run: _Run, fingerprint: str, directory: Path, *, fsync: bool = True) -> None:
    """Write the run to ``directory/state.pt`` (atomically, tensors stored compactly)."""
    payload = {"format": STATE_FORMAT, "version": STATE_VERSION, "fingerprint": fingerprint,
               **{k: getattr(run, k) for k in run.__dataclass_fields__}}
    payload["history"] = json.dumps(run.history)
    encoder = _Encoder()
    encoder(run.rewind_state)  # first: the round starts and rewound weights are masked copies of it
    atomic_save(encoder(payload), directory / "state.pt", fsync=fsync)


def _read_record(path: Path, format: str, version: int, what: str, upgrade: str) -> dict[str, Any]:
    """A file of the run folder (``state.pt``, ``round_0.pt``), decoded: tensors and plain data
    only (``weights_only``), its ``format`` tag checked, versions 1 to ``version`` read.

    Raises:
        ValueError: unreadable, another format, or a newer version (``upgrade`` says what to do).
    """
    try:
        record = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{str(path)!r} is not a readable {what}: {e}") from None
    if not isinstance(record, dict) or record.get("format") != format:
        raise ValueError(f"{str(path)!r} is not a {what} (no {format!r} format tag)")
    if record.get("version") not in (1, version):
        raise ValueError(
            f"{str(path)!r} is a {what} of version {record.get('version')!r}; this torch-tickets reads versions "
            f"1 and {version}: {upgrade}"
        )
    return _decode(record)


def _load_run(directory: Path, fingerprint: str) -> _Run | None:
    path = directory / "state.pt"
    if not path.is_file():
        return None
    payload = _read_record(path, STATE_FORMAT, STATE_VERSION, "checkpoint of tickets.prune",
                           "upgrade torch-tickets to resume it, or use another checkpoint_dir")
    if payload["fingerprint"] != fingerprint:
        diff = _config_diff(json.loads(payload["fingerprint"]), json.loads(fingerprint), ignore=_GROWABLE_KEYS)
        if diff:
            raise ValueError(
                f"checkpoint_dir {str(directory)!r} holds a run with other settings (differing: "
                f"{[key for key, _, _ in diff]}: {_describe_diff(diff)}); rerun with the same arguments to resume "
                f"(only rounds may change), or use another checkpoint_dir"
            )
    payload["history"] = json.loads(payload["history"])
    fields = _Run.__dataclass_fields__
    return _Run(**{k: payload[k] for k in fields if k in payload})  # fields added later keep their defaults


ROUND0_FORMAT = "torch-tickets/round-0"


ROUND0_FILE = "round_0.pt"


ROUND0_VERSION = 2  # 2: tensors stored compactly (see _Encoder); 1 (plain tensors) still loads


def _save_round_0(record: dict[str, Any], directory: Path) -> None:
    """Write round 0's record (``format``: :data:`ROUND0_FORMAT`) to ``directory/round_0.pt``,
    atomically, its tensors stored as state.pt stores them (:class:`_Encoder`; version 2)."""
    encoder = _Encoder()
    encoder(record.get("rewind_state"))  # first, as in state.pt: other tensors may be masked copies of it
    atomic_save(encoder({**record, "version": ROUND0_VERSION}), directory / ROUND0_FILE)


def _load_round_0(source: Path) -> dict[str, Any]:
    """The finished round 0 recorded in another search's checkpoint_dir (``round_0.pt``)."""
    if not source.is_dir():
        raise FileNotFoundError(f"start_from={str(source)!r} is not a folder: pass the checkpoint_dir of a search whose round 0 has finished")
    path = source / ROUND0_FILE
    if not path.is_file():
        raise ValueError(
            f"start_from={str(source)!r} holds no finished round 0 (no {ROUND0_FILE}): its search has not finished "
            f"round 0 yet, or was run by an older torch-tickets that did not record it; finish its round 0 first "
            f"(rerun it) or compute round 0 in this search (leave out start_from)"
        )
    return _read_record(path, ROUND0_FORMAT, ROUND0_VERSION, "round-0 record of torch-tickets",
                        "upgrade torch-tickets to start from it")


def _check_rounds(run: _Run, rounds: int, directory: Path | None) -> None:
    """``rounds`` may grow on a saved search, never fall below the rounds it has begun."""
    if run.phase == "done":
        least, what = len(run.history), f"finished {len(run.history)} round(s)"
    elif run.phase == "train" or run.history:
        least, what = run.round + 1, f"begun round {run.round} (rounds 0..{run.round})"
    else:
        return
    if rounds < least:
        raise ValueError(
            f"rounds={rounds} is fewer than the search in checkpoint_dir {str(directory)!r} has already {what}: "
            f"rounds may grow on a saved search, not shrink below that (pass rounds >= {least}); its round "
            f"tickets round_<k>.ticket hold the earlier sparsities"
        )
