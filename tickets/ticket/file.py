"""The ticket file: atomic writes with the umask's mode, packed masks, and the format's
constants.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
import torch

__all__ = ['FORMAT', 'VERSION', 'FILE_VERSION', 'atomic_save', 'remove_stale_temporaries', 'pack_mask', 'unpack_mask', 'read_ticket', 'write_ticket']


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


def write_ticket(path: str | os.PathLike[str], masks: Mapping[str, torch.Tensor],
                 rewind_state: Mapping[str, torch.Tensor] | None, history: list[Any], meta: Mapping[str, Any]) -> Path:
    """Write a ticket's parts to ``path`` in the safetensors ticket format (see :meth:`tickets.Ticket.save`)."""
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

    for name, mask in masks.items():
        tensors["mask/" + name] = pack_mask(mask)
    rewind = None
    if rewind_state is not None:
        rewind = []
        for key, value in rewind_state.items():
            mask = masks.get(key)
            if mask is not None and value.shape == mask.shape and not bool(value[~mask].any()):
                tensors["rewind/" + key] = value[mask]  # surviving values only
                rewind.append([key, "survivors"])
            else:
                tensors["rewind/" + key] = own(value)
                rewind.append([key, "tensor"])
    metadata = {
        "format": FORMAT,
        "version": str(FILE_VERSION),
        "masks": json.dumps([[name, list(mask.shape)] for name, mask in masks.items()]),
        "rewind": json.dumps(rewind),
        "history": json.dumps(history),
        "meta": json.dumps(meta),
    }
    try:
        return _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    except (ValueError, TypeError) as e:  # e.g. a dtype safetensors cannot store
        raise ValueError(f"could not write the ticket to {str(path)!r}: {e}") from None


TicketParts = tuple[dict[str, torch.Tensor], "dict[str, torch.Tensor] | None", list[Any], dict[str, Any]]


def read_ticket(path: str | os.PathLike[str]) -> TicketParts:
    """The parts of a ticket file (masks, rewind state, history, meta), from the safetensors
    format of :meth:`tickets.Ticket.save` or the torch.save format of torch-tickets 0.1."""
    path = Path(path)
    if _is_safetensors(path):
        return _read_safetensors(path)
    return _read_torch(path)


def _read_safetensors(path: Path) -> TicketParts:
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
    return masks, rewind_state, history, meta

def _read_torch(path: Path) -> TicketParts:
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
    return (
        payload["masks"],
        payload["rewind_state"],
        json.loads(payload["history"]),
        json.loads(payload["meta"]),
    )
