"""Tickets: masks plus the weights to rewind to, saved and applied portably."""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from tickets import methods
from tickets.guard import install_guard
from tickets.rewind import rewind as _rewind

__all__ = ["Ticket", "SparsityReport", "sparsity_report", "atomic_save", "remove_stale_temporaries", "pack_mask",
           "unpack_mask"]

FORMAT = "torch-tickets/ticket"
VERSION = 1  # torch.save of a dict of tensors and JSON text: read, no longer written
FILE_VERSION = 2  # safetensors: bit-packed masks, surviving rewind weights, JSON metadata


def atomic_save(obj: Any, path: str | os.PathLike[str], *, fsync: bool = True) -> Path:
    """``torch.save`` to a temporary file beside ``path``, then rename it into place.

    A crash or an interrupt (Ctrl-C) mid-write leaves the previous file intact instead of a
    truncated one, and removes the temporary file. The file gets the mode ``torch.save``
    would give it (``0o666`` less the process's umask).

    Args:
        obj: what ``torch.save`` writes.
        path: the destination file.
        fsync: flush the file to the disk before the rename (survives a power loss, not only
            a killed process); False leaves it to the operating system (cheaper).
    """
    return _atomic_write(path, lambda tmp: torch.save(obj, tmp), fsync=fsync)


# temporary files of _atomic_write: "<target name>.<8 characters of tempfile>.tmp"
_TEMP_PATTERN = re.compile(r"^(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


def _umask() -> int:
    """The process's umask (read from /proc where possible: setting it is not thread-safe)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic_write(path: str | os.PathLike[str], write: Callable[[str], None], *, fsync: bool = True) -> Path:
    """Call ``write(temporary path)`` beside ``path``, optionally flush it to disk, give it the
    umask's mode and rename it into place; on any exception, KeyboardInterrupt included, the
    temporary file is removed and ``path`` is left as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        os.close(fd)
        write(tmp)
        # mkstemp creates 0600 (and some writers, safetensors among them, recreate the file 0600):
        # give it the mode torch.save and open() give a new file, 0o666 less the umask
        os.chmod(tmp, 0o666 & ~_umask())
        if fsync:
            with open(tmp, "rb+") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def remove_stale_temporaries(directory: str | os.PathLike[str], targets: Callable[[str], bool] | None = None) -> list[Path]:
    """Remove the temporary files that an atomic write of a killed process left in ``directory``.

    Only files named as :func:`atomic_save` names its temporaries (``<target>.<8 random
    characters>.tmp``) are removed, and with ``targets`` only those whose target name it
    accepts. Do not call it while another process writes into ``directory``.

    Args:
        directory: the folder to clean (a missing folder is fine: nothing is removed).
        targets: ``fn(target file name) -> bool``; None = any target.

    Returns:
        The paths removed.
    """
    folder = Path(directory)
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_PATTERN.match(entry.name)
        if match is None or not entry.is_file() or (targets is not None and not targets(match["target"])):
            continue
        try:
            entry.unlink()
        except FileNotFoundError:
            continue
        removed.append(entry)
    return removed


def _is_safetensors(path: Path) -> bool:
    """A safetensors file starts with its header's length (8 bytes, little-endian), then ``{``."""
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        return False
    return int.from_bytes(head[:8], "little") <= path.stat().st_size - 8


_BIT_VALUES = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    """Pack a binary mask 8 entries per byte: a 1-D uint8 tensor of ``ceil(numel / 8)`` bytes.

    Entry ``i`` of the flattened (row-major) mask is bit ``i % 8`` of byte ``i // 8``, least
    significant bit first (``numpy.packbits(..., bitorder="little")``); the unused high bits
    of the last byte are zero. :func:`unpack_mask` reverses it given the shape.

    Raises:
        TypeError: ``mask`` is not a tensor.
        ValueError: ``mask`` holds values other than 0/1.
    """
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a tensor; got {type(mask).__name__}")
    if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
        raise ValueError("mask must be binary (bool or 0/1) to be packed")
    flat = mask.detach().reshape(-1).cpu().bool()
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return (flat.view(-1, 8).to(torch.uint8) * _BIT_VALUES).sum(1, dtype=torch.uint8)


def unpack_mask(packed: torch.Tensor, shape: tuple[int, ...] | list[int] | torch.Size) -> torch.Tensor:
    """The bool mask of ``shape`` packed by :func:`pack_mask`.

    Raises:
        ValueError: ``packed`` is not a 1-D uint8 tensor of ``ceil(prod(shape) / 8)`` bytes,
            a dimension of ``shape`` is negative, or a padding bit is set.
    """
    shape = tuple(shape)
    if any(not isinstance(d, int) or isinstance(d, bool) or d < 0 for d in shape):
        raise ValueError(f"shape must be a sequence of non-negative ints; got {list(shape)!r}")
    numel = math.prod(shape)
    expected = (numel + 7) // 8
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 1:
        what = f"{packed.dtype} tensor of shape {tuple(packed.shape)}" if isinstance(packed, torch.Tensor) else type(packed).__name__
        raise ValueError(f"a packed mask must be a 1-D uint8 tensor; got a {what}")
    if packed.numel() != expected:
        raise ValueError(
            f"a mask of shape {list(shape)} packs into {expected} bytes; got {packed.numel()}"
        )
    bits = (packed.unsqueeze(1) & _BIT_VALUES).ne(0).reshape(-1)
    if bool(bits[numel:].any()):
        raise ValueError(f"the packed mask of shape {list(shape)} has padding bits set: it is corrupt")
    return bits[:numel].reshape(shape).clone()


def _check_json(value: Any, what: str) -> None:
    try:
        json.dumps(value)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{what} must hold only JSON values (numbers, strings, lists, dicts): {e}") from None


@dataclass
class Ticket:
    """A lottery ticket: which weights survive, and the weights to start them from.

    Attributes:
        masks: ``{qualified name: bool tensor}``, e.g. ``{"layer1.0.conv1.weight": ...}``,
            one per pruned tensor (True = the weight survives).
        rewind_state: the weights to train the ticket from, as an unpruned state_dict
            (pruned entries zero), or None for masks only.
        history: one JSON-able dict per round of the search that found the ticket.
        meta: JSON-able facts about the run (architecture, data, settings).
    """

    masks: dict[str, torch.Tensor]
    rewind_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.masks, Mapping) or not self.masks:
            raise ValueError("masks must be a non-empty mapping of qualified names to bool tensors")
        clean = {}
        for key, mask in self.masks.items():
            if not isinstance(mask, torch.Tensor):
                raise TypeError(f"masks[{key!r}] must be a tensor; got {type(mask).__name__}")
            if mask.dtype != torch.bool and not ((mask == 0) | (mask == 1)).all():
                raise ValueError(f"masks[{key!r}] must be binary (bool or 0/1)")
            clean[str(key)] = mask.detach().bool().cpu()
        self.masks = clean
        if self.rewind_state is not None:
            self.rewind_state = {k: v.detach().cpu() for k, v in self.rewind_state.items()}
            for key, mask in self.masks.items():
                w = self.rewind_state.get(key)
                if w is not None and w.shape != mask.shape:
                    raise ValueError(
                        f"rewind_state[{key!r}] has shape {tuple(w.shape)} but its mask has "
                        f"shape {tuple(mask.shape)}"
                    )
        self.history = list(self.history)
        self.meta = dict(self.meta)
        _check_json(self.history, "history")
        _check_json(self.meta, "meta")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_model(
        cls,
        model: nn.Module,
        rewind_state: Mapping[str, torch.Tensor] | None = None,
        history: list[dict[str, Any]] | None = None,
        meta: dict[str, Any] | None = None,
        *,
        weights: bool = True,
    ) -> Ticket:
        """The ticket of a pruned ``model``: its masks, and the weights to rewind to.

        ``Ticket.from_model(model).save(path)`` then ``Ticket.load(path).apply(fresh)`` gives
        ``fresh`` the model's masks and its current (masked) weights.

        Args:
            model: a model pruned with this library or torch's methods.
            rewind_state: weights to rewind to (e.g. :func:`tickets.snapshot` taken at
                iteration k), unpruned or pruned key form; None = the model's current
                weights (``weights=True``) or none.
            history: per-round records; meta: facts about the run.
            weights: with ``rewind_state=None``, keep the model's current weights (default)
                or masks only (False; apply such a ticket with ``apply(model, rewind=False)``).
        """
        if not isinstance(weights, bool):
            raise TypeError(f"weights must be True (keep the model's weights) or False (masks only); got {weights!r}")
        if rewind_state is None and weights:
            rewind_state = model.state_dict()
        found = methods.masks(model)
        if not found:
            raise ValueError(f"{type(model).__name__} has no pruned tensor: prune it before making a Ticket")
        state = None
        if rewind_state is not None:
            state = {}
            for key, value in rewind_state.items():
                if key.endswith("_mask") and key[: -len("_mask")] in found:
                    continue
                if key.endswith("_orig") and key[: -len("_orig")] in found:
                    key = key[: -len("_orig")]
                state[key] = value.detach().cpu().clone()
            for key in found:
                if key not in state:
                    raise KeyError(f"rewind_state has no entry for pruned tensor {key!r}")
            for key, module, name in methods.pruned_parameters(model):  # tied owners too
                if key in state:
                    mask = module._buffers[name + "_mask"].detach().cpu().bool()
                    state[key] = torch.where(mask, state[key], torch.zeros((), dtype=state[key].dtype))
        return cls(found, state, history or [], meta or {})

    # ------------------------------------------------------------------ facts
    @property
    def layer_sparsity(self) -> dict[str, float]:
        """Fraction of pruned weights per tensor."""
        return {k: 1.0 - float(m.sum()) / m.numel() for k, m in self.masks.items()}

    @property
    def sparsity(self) -> float:
        """Fraction of pruned weights over all pruned tensors together."""
        total = sum(m.numel() for m in self.masks.values())
        return 1.0 - sum(int(m.sum()) for m in self.masks.values()) / total

    def __repr__(self) -> str:
        rewind = "with rewind state" if self.rewind_state is not None else "masks only"
        return (
            f"Ticket({len(self.masks)} tensors, sparsity {self.sparsity:.2%}, {rewind}, "
            f"{len(self.history)} rounds)"
        )

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the ticket to ``path`` as a safetensors file (atomically); returns the path.

        The file holds only tensors and text, so reading it cannot run code, and any
        safetensors reader opens it (layout in ``docs/deploy.md``):

        - ``mask/<name>``: each mask packed 8 entries per byte (:func:`pack_mask`);
        - ``rewind/<name>``: each rewind tensor; a pruned tensor whose pruned entries are
          zero (the case for every ticket this library makes) is stored as its surviving
          values only, in row-major order, and read back with zeros (``+0.0``) elsewhere;
        - header metadata: ``format``, ``version``, the masks' names and shapes, how each
          rewind tensor is stored, and ``history`` and ``meta`` as JSON text.

        A crash mid-write leaves the previous file intact. :meth:`load` also reads the
        torch-pickle files written by torch-tickets 0.1.
        """
        from safetensors.torch import save_file

        tensors: dict[str, torch.Tensor] = {}
        storages: set[int] = set()

        def own(t: torch.Tensor) -> torch.Tensor:  # safetensors refuses tensors sharing memory
            t = t.detach().contiguous()
            ptr = t.untyped_storage().data_ptr()
            if ptr in storages and t.numel():
                t = t.clone()
            storages.add(t.untyped_storage().data_ptr())
            return t

        for name, mask in self.masks.items():
            tensors["mask/" + name] = pack_mask(mask)
        rewind = None
        if self.rewind_state is not None:
            rewind = []
            for key, value in self.rewind_state.items():
                mask = self.masks.get(key)
                if mask is not None and value.shape == mask.shape and not bool(value[~mask].any()):
                    tensors["rewind/" + key] = value[mask]  # surviving values only
                    rewind.append([key, "survivors"])
                else:
                    tensors["rewind/" + key] = own(value)
                    rewind.append([key, "tensor"])
        metadata = {
            "format": FORMAT,
            "version": str(FILE_VERSION),
            "masks": json.dumps([[name, list(mask.shape)] for name, mask in self.masks.items()]),
            "rewind": json.dumps(rewind),
            "history": json.dumps(self.history),
            "meta": json.dumps(self.meta),
        }
        try:
            return _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
        except (ValueError, TypeError) as e:  # e.g. a dtype safetensors cannot store
            raise ValueError(f"could not write the ticket to {str(path)!r}: {e}") from None

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ticket:
        """Read a ticket written by :meth:`save` (safetensors) or by torch-tickets 0.1 (torch.save).

        Neither path can run code from the file: the safetensors file is tensors and JSON
        text, and an old torch file is read with ``torch.load(weights_only=True)``, which
        refuses any pickled object other than tensors and plain containers.

        Raises:
            FileNotFoundError: no file at ``path``.
            ValueError: the file is not a ticket, is corrupt or incomplete, or holds code;
                the message names the file and what is wrong.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no ticket file at {str(path)!r}")
        if _is_safetensors(path):
            return cls._load_safetensors(path)
        return cls._load_torch(path)

    @classmethod
    def _load_safetensors(cls, path: Path) -> Ticket:
        from safetensors import safe_open

        where = repr(str(path))
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                metadata = f.metadata() or {}
                if metadata.get("format") != FORMAT:
                    raise ValueError(f"{where} is not a ticket file written by Ticket.save")
                tensors = {key: f.get_tensor(key) for key in f.keys()}
        except ValueError as e:
            if "not a ticket file" in str(e):
                raise
            raise ValueError(f"{where} is not a readable ticket file: {e}") from None
        except Exception as e:  # safetensors' own error type for malformed headers
            raise ValueError(f"{where} is not a readable ticket file (neither safetensors nor torch.save): {e}") from None
        if metadata.get("version") != str(FILE_VERSION):
            raise ValueError(
                f"{where} has ticket format version {metadata.get('version')!r}; "
                f"this version of torch-tickets reads versions {VERSION} and {FILE_VERSION}"
            )

        def field(key: str) -> Any:
            if key not in metadata:
                raise ValueError(f"{where} is an incomplete ticket file: it has no {key!r}")
            try:
                return json.loads(metadata[key])
            except ValueError:
                raise ValueError(f"{where} is corrupt: its {key!r} is not JSON") from None

        mask_list, rewind_list, history, meta = field("masks"), field("rewind"), field("history"), field("meta")
        if not isinstance(history, list) or not isinstance(meta, dict):
            raise ValueError(f"{where} is corrupt: history must be a JSON list and meta a JSON object")
        if not isinstance(mask_list, list) or not all(
            isinstance(m, list) and len(m) == 2 and isinstance(m[0], str) and isinstance(m[1], list) for m in mask_list
        ):
            raise ValueError(f"{where} is corrupt: 'masks' must list [name, shape] pairs")
        used = set()
        masks: dict[str, torch.Tensor] = {}
        for name, shape in mask_list:
            key = "mask/" + name
            if key not in tensors:
                raise ValueError(f"{where} is incomplete: it lists mask {name!r} but holds no tensor {key!r}")
            try:
                masks[name] = unpack_mask(tensors[key], shape)
            except ValueError as e:
                raise ValueError(f"{where} is corrupt: mask {name!r}: {e}") from None
            used.add(key)
        rewind_state = None
        if rewind_list is not None:
            if not isinstance(rewind_list, list) or not all(
                isinstance(r, list) and len(r) == 2 and isinstance(r[0], str) and r[1] in ("survivors", "tensor")
                for r in rewind_list
            ):
                raise ValueError(f"{where} is corrupt: 'rewind' must list [name, 'survivors' or 'tensor'] pairs")
            rewind_state = {}
            for name, how in rewind_list:
                key = "rewind/" + name
                if key not in tensors:
                    raise ValueError(f"{where} is incomplete: it lists rewind tensor {name!r} but holds no {key!r}")
                value = tensors[key]
                if how == "survivors":
                    mask = masks.get(name)
                    if mask is None or value.dim() != 1 or value.numel() != int(mask.sum()):
                        raise ValueError(
                            f"{where} is corrupt: rewind tensor {name!r} holds {value.numel()} surviving "
                            f"values, but its mask keeps "
                            f"{'none (no mask)' if mask is None else int(mask.sum())}"
                        )
                    full = value.new_zeros(mask.shape)
                    full[mask] = value
                    value = full
                rewind_state[name] = value
                used.add(key)
        extra = sorted(set(tensors) - used)
        if extra:
            raise ValueError(f"{where} is corrupt: it holds tensor {extra[0]!r}, which its metadata does not list")
        return cls(masks, rewind_state, history, meta)

    @classmethod
    def _load_torch(cls, path: Path) -> Ticket:
        """The torch.save format of torch-tickets 0.1 (version 1), read with ``weights_only=True``."""
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ValueError(
                f"{str(path)!r} was refused: it holds objects other than tensors and plain data "
                f"(possibly code), so it is not a ticket file written by Ticket.save ({e})"
            ) from None
        except Exception as e:
            raise ValueError(f"{str(path)!r} is not a readable ticket file: {e}") from None
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ValueError(f"{str(path)!r} is not a ticket file written by Ticket.save")
        if payload.get("version") != VERSION:
            raise ValueError(
                f"{str(path)!r} has ticket format version {payload.get('version')!r}; "
                f"this version of torch-tickets reads versions {VERSION} and {FILE_VERSION}"
            )
        missing = [k for k in ("masks", "rewind_state", "history", "meta") if k not in payload]
        if missing:
            raise ValueError(f"{str(path)!r} is an incomplete ticket file: it has no {missing[0]!r}")
        return cls(
            payload["masks"],
            payload["rewind_state"],
            json.loads(payload["history"]),
            json.loads(payload["meta"]),
        )

    # ------------------------------------------------------------------ application
    def apply(self, model: nn.Module, *, rewind: bool = True) -> nn.Module:
        """Prune a fresh, unpruned ``model`` of the same architecture with this ticket.

        Afterwards the model is in the standard ``torch.nn.utils.prune`` state
        (``<name>_orig``, bool ``<name>_mask``, a pre-hook; ``prune.remove`` works) and,
        with ``rewind=True`` and a rewind state, holds the ticket's starting weights
        (normalization statistics included), ready to train.

        Args:
            model: an unpruned model with a tensor of the same shape for every mask.
            rewind: load the rewind state too (needs one); False applies masks only, to
                the model's own weights.

        Raises:
            ValueError: a tensor is missing, has another shape, or is already pruned; the
                message names the first such tensor. Nothing is changed then.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
        if rewind and self.rewind_state is None:
            raise ValueError("this ticket has no rewind state; call apply(model, rewind=False)")
        modules = dict(model.named_modules())
        targets = []
        for key, mask in self.masks.items():
            module_name, _, name = key.rpartition(".")
            module = modules.get(module_name)
            if module is None:
                raise ValueError(f"model has no module {module_name!r} for ticket tensor {key!r}: another architecture?")
            if methods.is_pruned_tensor(module, name):
                raise ValueError(f"{key!r} of the model is already pruned; apply a ticket to an unpruned model")
            tensor = module._parameters.get(name)
            if tensor is None:
                raise ValueError(f"model has no parameter {key!r}: another architecture?")
            if tensor.shape != mask.shape:
                raise ValueError(
                    f"{key!r} has shape {tuple(tensor.shape)} in the model but {tuple(mask.shape)} "
                    f"in the ticket: another architecture or configuration"
                )
            targets.append((module, name, mask))
        if rewind:
            assert self.rewind_state is not None
            own = model.state_dict()
            for key, value in own.items():
                if key not in self.rewind_state:
                    raise ValueError(f"the ticket's rewind state has no entry for {key!r}: another architecture?")
                if self.rewind_state[key].shape != value.shape:
                    raise ValueError(
                        f"{key!r} has shape {tuple(value.shape)} in the model but "
                        f"{tuple(self.rewind_state[key].shape)} in the ticket's rewind state"
                    )
        for module, name, mask in targets:
            methods.FixedMask.apply(module, name, mask)
        if rewind:
            _rewind(model, self.rewind_state)  # type: ignore[arg-type]
        install_guard(model)
        return model


    def retrain(
        self,
        model: nn.Module | Callable[[], nn.Module],
        train_data: Any,
        schedule: Any = None,
        **kwargs: Any,
    ) -> Any:
        """Train this ticket on the full data from its rewind state, to measure it.

        The method form of :func:`tickets.retrain`; see it for the arguments. ``model`` (a
        fresh, unpruned model) is pruned and trained in place: afterwards it is the trained
        ticket. Returns the :class:`tickets.TrainResult` (accuracies, steps, wall time).
        """
        from tickets.imp import retrain  # imp builds on this module

        return retrain(self, model, train_data, schedule, **kwargs)


@dataclass(frozen=True)
class SparsityReport:
    """Per-tensor and global sparsity of a pruned model or ticket.

    Attributes:
        rows: ``(qualified name, shape, total, surviving)`` per pruned tensor.
    """

    rows: tuple[tuple[str, tuple[int, ...], int, int], ...]

    @property
    def total(self) -> int:
        return sum(r[2] for r in self.rows)

    @property
    def surviving(self) -> int:
        return sum(r[3] for r in self.rows)

    @property
    def global_sparsity(self) -> float:
        """Fraction pruned over all pruned tensors (0.0 for a model with none)."""
        return 1.0 - self.surviving / self.total if self.total else 0.0

    def __str__(self) -> str:
        header = ("tensor", "shape", "weights", "surviving", "sparsity")
        lines = [
            (q, "x".join(map(str, shape)) or "scalar", f"{t:,}", f"{s:,}", f"{1 - s / t:.2%}")
            for q, shape, t, s in self.rows
        ]
        lines.append(("global", "", f"{self.total:,}", f"{self.surviving:,}", f"{self.global_sparsity:.2%}"))
        widths = [max(len(str(r[i])) for r in [header, *lines]) for i in range(5)]
        fmt = "  ".join(["{:<%d}" % widths[0], "{:<%d}" % widths[1]] + ["{:>%d}" % w for w in widths[2:]])
        rule = "-" * (sum(widths) + 8)
        out = [fmt.format(*header), rule, *(fmt.format(*r) for r in lines[:-1]), rule, fmt.format(*lines[-1])]
        return "\n".join(out)


def sparsity_report(model_or_ticket: nn.Module | Ticket) -> SparsityReport:
    """Per-layer and global sparsity of a pruned model or a :class:`Ticket`.

    ``print(tickets.sparsity_report(model))`` shows a table; the returned object also
    holds the numbers (``.rows``, ``.global_sparsity``). Only pruned tensors count.
    """
    if isinstance(model_or_ticket, Ticket):
        found = model_or_ticket.masks
    elif isinstance(model_or_ticket, nn.Module):
        found = methods.masks(model_or_ticket)
    else:
        raise TypeError(f"expected an nn.Module or a Ticket; got {type(model_or_ticket).__name__}")
    rows = tuple((q, tuple(m.shape), m.numel(), int(m.sum())) for q, m in found.items())
    return SparsityReport(rows)
