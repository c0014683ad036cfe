"""Evaluation: accuracy and loss of a model on data, and predictions on a whole split.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
from tickets.data.images import batch_loader
from tickets.training.precision import Precision, _autocast, _device_of, _eval_precision
from tickets.training.results import EvalResult
from tickets.training.schedule import LossFn

__all__ = ['evaluate', 'predict']


def _batches(data: Any, batch_size: int, num_workers: int, argument: str) -> Iterable[Any]:
    if isinstance(data, DataLoader) or (not isinstance(data, Dataset) and isinstance(data, Iterable)):
        return data
    if isinstance(data, Dataset):
        fast = batch_loader(data, batch_size)
        if fast is not None:
            return fast
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    raise TypeError(f"{argument} must be a Dataset, a DataLoader or an iterable of (inputs, targets) batches; got {type(data).__name__}")


def _split(batch: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(
            f"a batch must be (inputs, targets) or (inputs, targets, indices); got {type(batch).__name__}: "
            "the data set has no labels"
        )
    indices = batch[2] if len(batch) >= 3 and isinstance(batch[2], torch.Tensor) and batch[2].dtype == torch.int64 else None
    return batch[0], batch[1], indices


@torch.no_grad()
def evaluate(
    model: nn.Module,
    data: Dataset | DataLoader | Iterable[Any],
    *,
    device: torch.device | str | None = None,
    batch_size: int = 256,
    num_workers: int = 0,
    loss_fn: LossFn | None = None,
    amp: bool | None = None,
    channels_last: bool = False,
    max_batches: int | None = None,
    precision: Precision | None = None,
) -> EvalResult:
    """Accuracy and mean loss of ``model`` on ``data`` (eval mode, no gradients).

    The model's train/eval mode is restored afterwards.

    Args:
        model: a classifier returning logits ``[batch, classes]``.
        data: a data set of ``(input, target)`` items, a ``DataLoader`` or an iterable of
            ``(inputs, targets)`` batches.
        device: where to run; None = the model's device.
        batch_size, num_workers: of the loader built for a data set.
        loss_fn: ``(logits, targets) -> mean loss``; default cross-entropy.
        amp, channels_last: autocast and memory format, as in training.
        max_batches: evaluate only the first batches (None = all).
        precision: ``"auto"``, ``"bf16"``, ``"fp16"`` or ``"fp32"`` (see
            :func:`resolve_precision`); with neither this nor ``amp``, fp32.

    Returns:
        :class:`EvalResult` (``accuracy`` in [0, 1], ``loss``, ``samples``).
    """
    device = _device_of(model, device)
    prec = _eval_precision(device, precision, amp)
    loss_fn = loss_fn or F.cross_entropy
    was_training = model.training
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=device)
    total_loss = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    try:
        for i, batch in enumerate(_batches(data, batch_size, num_workers, "data")):
            if max_batches is not None and i >= max_batches:
                break
            x, y, _ = _split(batch)
            x, y = x.to(device, non_blocking=True), torch.as_tensor(y).to(device, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, prec):
                logits = model(x)
            logits = logits.float()
            total_loss += loss_fn(logits, y).double() * y.shape[0]
            correct += logits.argmax(1).eq(y).sum()
            n += int(y.shape[0])
    finally:
        model.train(was_training)
    if n == 0:
        raise ValueError("data is empty: nothing to evaluate")
    return EvalResult(accuracy=int(correct) / n, loss=float(total_loss) / n, samples=n)


# ---------------------------------------------------------------------- disagreement
def _loader(data: Any, batch_size: int, num_workers: int) -> Iterable[Any]:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset):
        fast = None if num_workers else batch_loader(data, batch_size)
        if fast is not None:
            return fast
        return DataLoader(data, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    return data


@torch.no_grad()
def predict(
    model: nn.Module,
    data: Dataset | DataLoader | Iterable[Any],
    *,
    batch_size: int = 256,
    num_workers: int = 0,
    device: torch.device | str | None = None,
    amp: bool | None = None,
    channels_last: bool = False,
    precision: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax predictions and labels of ``model`` on every sample of ``data``, in order.

    Runs in eval mode without gradients and puts the model's mode back afterwards. Pass the
    training split *without augmentation* for the pruning-aware disagreement.

    Args:
        model: the classifier.
        data: a data set of ``(input, target)`` items (read in index order), or an unshuffled
            ``DataLoader`` / iterable of ``(inputs, targets)`` batches.
        batch_size, num_workers: of the loader built for a data set.
        device: where to run; None = the model's device.
        amp, channels_last, precision: as in :func:`tickets.training.evaluate` (fp32 unless
            ``precision`` or ``amp`` say otherwise).

    Returns:
        ``(predictions, targets)``, two ``LongTensor`` on CPU, one entry per sample.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    prec = _eval_precision(device, precision, amp)
    was_training = model.training
    model.eval()
    preds, labels = [], []
    try:
        for batch in _loader(data, batch_size, num_workers):
            x, y = batch[0], batch[1]
            x = x.to(device, non_blocking=True)
            if channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            with _autocast(device, prec):
                logits = model(x)
            preds.append(logits.argmax(dim=1).cpu())
            labels.append(torch.as_tensor(y).cpu().long())
    finally:
        model.train(was_training)
    if not preds:
        raise ValueError("data is empty: nothing to predict")
    return torch.cat(preds), torch.cat(labels)
