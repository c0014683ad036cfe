"""Where and how the engine computes: device, precision (bf16/fp16/fp32 autocast) and
memory format.
"""

from __future__ import annotations

from typing import Any, Literal
import torch
from torch import nn

__all__ = ['Precision', 'resolve_precision', 'resolve_channels_last', 'resolve_device']


Precision = Literal["auto", "bf16", "fp16", "fp32"]


_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX), so autocast pays."""
    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # pragma: no cover - a probe missing on some builds
            continue
    return False


def resolve_precision(device: torch.device | str, precision: str | None = "auto", amp: bool | None = None) -> str:
    """The numeric precision a run on ``device`` uses: ``"bf16"``, ``"fp16"`` or ``"fp32"``.

    ``"auto"`` (the default) is the fastest safe choice: bf16 autocast on CPUs with native bf16
    (AVX-512 BF16 or AMX) and on CUDA GPUs that support bf16, fp16 autocast with a gradient
    scaler on older CUDA GPUs, fp32 everywhere else. Weights, optimizer state, pruning scores
    and masks stay fp32 in every case; only the forward and backward passes run in the
    reduced type.

    Args:
        device: where the run trains.
        precision: ``"auto"``, ``"bf16"``, ``"fp16"``, ``"fp32"`` or None (= ``"auto"``).
        amp: the older switch: True = mixed precision (bf16 where supported, else fp16 on
            CUDA), False = fp32; ignored when ``precision`` is given explicitly.

    Raises:
        ValueError: an unknown precision, or fp16 on a CPU (no gradient scaler there: use bf16).
    """
    device = torch.device(device)
    if precision is not None and precision not in ("auto", "bf16", "fp16", "fp32"):
        raise ValueError(f"precision must be 'auto', 'bf16', 'fp16' or 'fp32'; got {precision!r}")
    if precision in (None, "auto") and amp is not None:
        if not amp:
            return "fp32"
        precision = "auto"
        mixed_only = True
    else:
        mixed_only = False
    if precision in (None, "auto"):
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu":
            return "bf16" if (_native_bf16_cpu() or mixed_only) else "fp32"
        return "bf16" if mixed_only else "fp32"
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("precision='fp16' is not supported on the CPU (no gradient scaler there); use 'bf16' or 'fp32'")
    return str(precision)


def resolve_channels_last(model: nn.Module, channels_last: bool | None = None) -> bool:
    """Whether to train ``model`` in the channels_last memory format.

    ``None`` (the default) applies the rule: channels_last when 2-d convolutions hold at least
    half of the weights of the model's convolutions and linear layers (ResNets, VGGs,
    EfficientNets, ConvNeXts: oneDNN and cuDNN run NHWC convolutions faster), the default
    contiguous format otherwise (transformers and MLPs, where only a patch embedding is a
    convolution). True or False overrides the rule.
    """
    if channels_last is not None:
        return bool(channels_last)
    conv = dense = 0
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(weight, torch.Tensor):
            continue
        if isinstance(module, nn.Conv2d):
            conv += weight.numel()
        elif isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv3d)):
            dense += weight.numel()
    return conv > 0 and conv >= dense


# ---------------------------------------------------------------------- helpers
_DEVICE_CHOICES = '"cpu", "cuda", "cuda:0" (a GPU by index), "mps" (Apple GPUs), "xpu", or a torch.device'


def resolve_device(device: torch.device | str | int) -> torch.device:
    """The ``torch.device`` for a device argument, checked before anything runs.

    Args:
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, ``"xpu"``..., an int (a CUDA
            GPU index) or a ``torch.device``.

    Raises:
        ValueError: a string that names no device type (``"gpu"``, ``"cuda0"``...), naming the
            value and the valid choices; or a CUDA / MPS device this machine does not have.
        TypeError: neither a string, an int nor a ``torch.device``.
    """
    if isinstance(device, torch.device):
        dev = device
    elif isinstance(device, (str, int)) and not isinstance(device, bool):
        try:
            dev = torch.device(device)
        except (RuntimeError, ValueError):
            hint = ' (for a GPU use "cuda" or "cuda:0")' if isinstance(device, str) and device.strip().lower().startswith("gpu") else ""
            raise ValueError(f"device={device!r} is not a device{hint}; valid: {_DEVICE_CHOICES}") from None
    else:
        raise TypeError(f"device must be a string, an int or a torch.device; got {type(device).__name__}: {device!r}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device={device!r}: CUDA is not available on this machine (torch.cuda.is_available() is "
                             f"False); use device='cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device={device!r}: this machine has {torch.cuda.device_count()} CUDA device(s) "
                             f"(cuda:0..cuda:{torch.cuda.device_count() - 1})")
    if dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r}: MPS (Apple GPU) is not available on this machine; use device='cpu'")
    return dev


def _device_of(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return resolve_device(device)
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _autocast(device: torch.device, precision: str) -> Any:
    """The autocast context of a resolved precision (disabled for fp32)."""
    return torch.autocast(device.type, dtype=_AUTOCAST_DTYPES.get(precision), enabled=precision in _AUTOCAST_DTYPES)


def _eval_precision(device: torch.device, precision: str | None, amp: bool | None) -> str:
    """Evaluation keeps fp32 unless asked: ``precision`` wins, then ``amp``."""
    if precision is None and amp is None:
        return "fp32"
    return resolve_precision(device, precision, amp)
