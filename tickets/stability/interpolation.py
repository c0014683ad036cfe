"""Stability analysis (linear mode connectivity) of dense networks and lottery tickets.

Two networks are *linearly connected* when the error does not rise along the straight line
between their weights. Frankle et al. ("Linear Mode Connectivity and the Lottery Ticket
Hypothesis", ICML 2020) train two copies of a network from the same starting weights with
different SGD noise (data order and augmentation) and measure the *error barrier*: the
highest error on the line minus the mean error of the two end points. A network is *stable*
at a starting point when the barrier is about zero (below 2 points in the paper); IMP with
rewinding finds matching tickets from the points where the sparse network is stable.

* :func:`interpolate`: error and loss at evenly spaced points of the line between two
  models of the same architecture (and, for tickets, the same masks).
* :func:`error_barrier`: the barrier on training and test data.
* :func:`~tickets.stability.instability.instability` (its own module): train two copies
  from the same starting weights, measure both and the barrier between them.

Normalization statistics
    The running statistics of batch normalization do not interpolate: the mean of two
    networks' activations is not the activation of the mean network. By default
    (``recompute_bn=True``) every point of the line, the two end points included, gets its
    statistics recomputed: they are reset and estimated as a plain average (``momentum=None``)
    over ``bn_batches`` training batches in training mode, without gradients. The end points
    are treated like every other point so the barrier compares like with like. With
    ``recompute_bn=False`` the running statistics are interpolated linearly with the weights
    (cheaper, and biased upwards: the barrier then includes the mismatch of the statistics).
    Normalizations without running statistics (LayerNorm, GroupNorm) need nothing.

Pruned models
    A ticket is interpolated in its effective weights ``<name>_orig * <name>_mask``; the masks
    must be identical in both models and the interpolated model keeps them (it is in the
    standard ``torch.nn.utils.prune`` state, with the same masks).
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset
import tickets.pruning.methods as methods
from tickets.pruning.rewind import rewind, snapshot
from tickets.training.precision import resolve_device

__all__ = ['STABLE_BARRIER', 'Batches', 'LossFn', 'Interpolation', 'ErrorBarrier', 'recompute_bn_statistics', 'interpolated_model', 'interpolate', 'error_barrier']


#: The paper calls a network stable when its error barrier is below 2 points.
STABLE_BARRIER = 0.02


Batches = Iterable[Any]


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class Interpolation:
    """Error and loss along the line ``(1 - alpha) * model_a + alpha * model_b``.

    Attributes:
        alphas: the interpolation coefficients, ascending; 0 is ``model_a``, 1 is ``model_b``.
        errors: top-1 error (a fraction in [0, 1]) at each alpha.
        losses: mean loss per sample at each alpha.
        samples: how many samples each point was measured on.
        recompute_bn: whether normalization statistics were recomputed at each point.
    """

    alphas: tuple[float, ...]
    errors: tuple[float, ...]
    losses: tuple[float, ...]
    samples: int
    recompute_bn: bool

    def _endpoint(self, value: float) -> int:
        for i, a in enumerate(self.alphas):
            if a == value:
                return i
        raise ValueError(
            f"the barrier needs both end points; alphas {list(self.alphas)} do not contain {value}"
        )

    @property
    def barrier(self) -> float:
        """Highest error on the line minus the mean error of the two end points."""
        ends = (self.errors[self._endpoint(0.0)] + self.errors[self._endpoint(1.0)]) / 2
        return max(self.errors) - ends

    @property
    def loss_barrier(self) -> float:
        """Highest loss on the line minus the mean loss of the two end points."""
        ends = (self.losses[self._endpoint(0.0)] + self.losses[self._endpoint(1.0)]) / 2
        return max(self.losses) - ends

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field and the barriers."""
        out: dict[str, Any] = {
            "alphas": list(self.alphas),
            "errors": list(self.errors),
            "losses": list(self.losses),
            "samples": self.samples,
            "recompute_bn": self.recompute_bn,
        }
        try:
            out["barrier"] = self.barrier
            out["loss_barrier"] = self.loss_barrier
        except ValueError:
            pass
        return out


@dataclass(frozen=True)
class ErrorBarrier:
    """The error barrier between two models on training and (optionally) test data.

    Attributes:
        train: the interpolation measured on the training data.
        test: the interpolation measured on the test data, or None when none was given.
    """

    train: Interpolation
    test: Interpolation | None = None

    @property
    def train_barrier(self) -> float:
        """Error barrier on the training data (a fraction; 0.02 = 2 points)."""
        return self.train.barrier

    @property
    def test_barrier(self) -> float | None:
        """Error barrier on the test data, or None without test data."""
        return None if self.test is None else self.test.barrier

    def stable(self, threshold: float = STABLE_BARRIER) -> bool:
        """Whether the barrier is below ``threshold`` on every data set measured."""
        barriers = [self.train_barrier] + ([] if self.test is None else [self.test.barrier])
        return all(b < threshold for b in barriers)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict with both interpolations and both barriers."""
        return {
            "train_barrier": self.train_barrier,
            "test_barrier": self.test_barrier,
            "train": self.train.to_dict(),
            "test": None if self.test is None else self.test.to_dict(),
        }


# ---------------------------------------------------------------------- checks
def _check_model(model: Any, argument: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{argument} must be an nn.Module; got {type(model).__name__}")
    return model


def _check_compatible(model_a: nn.Module, model_b: nn.Module) -> None:
    """Raise if the two models differ in architecture or masks, naming the first difference."""
    _check_model(model_a, "model_a")
    _check_model(model_b, "model_b")
    classes = f"({type(model_a).__name__} and {type(model_b).__name__})"
    masks_a, masks_b = methods.masks(model_a), methods.masks(model_b)
    for name in masks_a:
        if name not in masks_b:
            raise ValueError(
                f"{name!r} is pruned in model_a but not in model_b {classes}: "
                f"interpolating tickets needs the same masks in both models"
            )
    for name in masks_b:
        if name not in masks_a:
            raise ValueError(
                f"{name!r} is pruned in model_b but not in model_a {classes}: "
                f"interpolating tickets needs the same masks in both models"
            )
    for name, mask_a in masks_a.items():
        mask_b = masks_b[name]
        if mask_a.shape != mask_b.shape:
            raise ValueError(
                f"the mask of {name!r} has shape {tuple(mask_a.shape)} in model_a but "
                f"{tuple(mask_b.shape)} in model_b {classes}: not the same architecture"
            )
        if not torch.equal(mask_a, mask_b):
            differ = int((mask_a != mask_b).sum())
            raise ValueError(
                f"the masks of {name!r} differ in {differ} of {mask_a.numel()} entries "
                f"{classes}: interpolate two copies of the same ticket (same masks)"
            )
    shapes_a = {k: v.shape for k, v in model_a.state_dict().items()}
    shapes_b = {k: v.shape for k, v in model_b.state_dict().items()}
    for key, shape in shapes_a.items():
        if key not in shapes_b:
            raise ValueError(
                f"model_a has tensor {key!r} that model_b lacks {classes}: not the same architecture"
            )
        if shapes_b[key] != shape:
            raise ValueError(
                f"tensor {key!r} has shape {tuple(shape)} in model_a but {tuple(shapes_b[key])} "
                f"in model_b {classes}: not the same architecture"
            )
    for key in shapes_b:
        if key not in shapes_a:
            raise ValueError(
                f"model_b has tensor {key!r} that model_a lacks {classes}: not the same architecture"
            )


def _check_alphas(alphas: int | Sequence[float]) -> tuple[float, ...]:
    if isinstance(alphas, bool):
        raise TypeError(f"alphas must be an int >= 2 or a sequence of floats in [0, 1]; got {alphas!r}")
    if isinstance(alphas, numbers.Integral):
        if alphas < 2:
            raise ValueError(f"alphas must be at least 2 (the two end points) when an int; got {alphas}")
        return tuple(i / (int(alphas) - 1) for i in range(int(alphas)))
    try:
        values = [float(a) for a in alphas]
    except TypeError:
        raise TypeError(
            f"alphas must be an int >= 2 or a sequence of floats in [0, 1]; got {type(alphas).__name__}"
        ) from None
    if not values:
        raise ValueError("alphas must not be empty; pass e.g. alphas=30 or [0.0, 0.5, 1.0]")
    for a in values:
        if not (0.0 <= a <= 1.0) or math.isnan(a):
            raise ValueError(f"every alpha must be in [0, 1]; got {a}")
    return tuple(sorted(set(values)))


def _check_count(value: int | None, argument: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{argument} must be a positive int or None (all batches); got {value!r}")
    return int(value)


def _as_batches(data: Any, argument: str) -> Batches:
    """A re-iterable of batches: a DataLoader or iterable as it is; a Dataset gets a loader."""
    if data is None:
        raise ValueError(f"{argument} must be a DataLoader, an iterable of (inputs, targets) batches or a Dataset; got None")
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        if not hasattr(data, "__len__"):
            raise TypeError(f"{argument} is an iterable-style Dataset; wrap it in a DataLoader")
        return DataLoader(data, batch_size=256, shuffle=False)
    if isinstance(data, Iterator):
        raise TypeError(
            f"{argument} is a one-shot iterator ({type(data).__name__}); it is read once per point "
            f"of the line, so pass a DataLoader or a list of batches"
        )
    if not isinstance(data, Iterable):
        raise TypeError(
            f"{argument} must be a DataLoader, an iterable of (inputs, targets) batches or a Dataset; "
            f"got {type(data).__name__}"
        )
    return data


def _split(batch: Any, argument: str) -> tuple[Any, torch.Tensor | None]:
    if isinstance(batch, Mapping):
        raise TypeError(f"{argument} yields dicts; yield (inputs, targets[, ...]) tuples instead")
    if isinstance(batch, (tuple, list)):
        if len(batch) >= 2:
            return batch[0], batch[1]
        if len(batch) == 1:
            return batch[0], None
    if isinstance(batch, torch.Tensor):
        return batch, None
    raise TypeError(f"{argument} must yield (inputs, targets[, ...]) tuples; got {type(batch).__name__}")


def _device_of(model: nn.Module, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return resolve_device(device)
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


def _to(x: Any, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, device) for v in x)
    return x


# ---------------------------------------------------------------------- normalization
def _running_stat_norms(model: nn.Module) -> list[nn.modules.batchnorm._NormBase]:
    return [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._NormBase) and m.track_running_stats and m.running_mean is not None
    ]


@torch.no_grad()
def recompute_bn_statistics(
    model: nn.Module,
    data: Any,
    *,
    batches: int | None = None,
    device: torch.device | str | None = None,
) -> nn.Module:
    """Re-estimate every batch-norm running mean and variance of ``model`` from ``data``.

    The statistics are reset and estimated as a plain average over the batches
    (``momentum=None``), in training mode and without gradients; the model is left in eval
    mode and the momenta are restored. Models without running statistics are returned as
    they are.

    Args:
        model: the model to update in place.
        data: training batches (a DataLoader or an iterable of ``(inputs, targets)``).
        batches: use at most this many batches; None uses all of ``data``.
        device: where to run; None uses the device of the model's parameters.

    Returns:
        ``model``, in eval mode.
    """
    norms = _running_stat_norms(model)
    if not norms:
        return model.eval()
    batches = _check_count(batches, "bn_batches")
    data = _as_batches(data, "bn_data")
    device = _device_of(model, device)
    momenta = [m.momentum for m in norms]
    try:
        for m in norms:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        seen = 0
        for i, batch in enumerate(data):
            if batches is not None and i >= batches:
                break
            inputs, _ = _split(batch, "bn_data")
            model(_to(inputs, device))
            seen += 1
        if seen == 0:
            raise ValueError("bn_data yielded no batch: the statistics cannot be recomputed")
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
    return model.eval()


# ---------------------------------------------------------------------- interpolation
def _lerp_state(
    state_a: Mapping[str, torch.Tensor], state_b: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    out = {}
    for key, a in state_a.items():
        b = state_b[key]
        if a.is_floating_point() or a.is_complex():
            out[key] = torch.lerp(a, b.to(a.dtype), alpha)
        else:  # step counters and index buffers: not weights, keep model_a's
            out[key] = a
    return out


@torch.no_grad()
def _evaluate(
    model: nn.Module, data: Batches, device: torch.device, batches: int | None, loss_fn: LossFn
) -> tuple[float, float, int]:
    """(error, mean loss, samples) of ``model`` in eval mode."""
    model.eval()
    wrong, loss, n = 0, 0.0, 0
    for i, batch in enumerate(data):
        if batches is not None and i >= batches:
            break
        inputs, targets = _split(batch, "data")
        if targets is None:
            raise TypeError("data must yield (inputs, targets) batches: the error needs labels")
        inputs, targets = _to(inputs, device), targets.to(device)
        logits = model(inputs)
        if not isinstance(logits, torch.Tensor):  # e.g. timm distilled models in train mode
            logits = logits[0]
        loss += float(loss_fn(logits, targets)) * targets.shape[0]
        wrong += int((logits.argmax(dim=1) != targets).sum())
        n += int(targets.shape[0])
    if n == 0:
        raise ValueError("data yielded no sample: nothing to measure the error on")
    return wrong / n, loss / n, n


def _build(
    template: nn.Module,
    state_a: Mapping[str, torch.Tensor],
    state_b: Mapping[str, torch.Tensor],
    alpha: float,
    bn_data: Batches | None,
    bn_batches: int | None,
    recompute_bn: bool,
    device: torch.device,
) -> nn.Module:
    rewind(template, _lerp_state(state_a, state_b, alpha))
    if recompute_bn:
        recompute_bn_statistics(template, bn_data, batches=bn_batches, device=device)
    return template.eval()


def interpolated_model(
    model_a: nn.Module,
    model_b: nn.Module,
    alpha: float,
    *,
    bn_data: Any = None,
    bn_batches: int | None = None,
    recompute_bn: bool = True,
    device: torch.device | str | None = None,
) -> nn.Module:
    """A new model with weights ``(1 - alpha) * model_a + alpha * model_b``.

    The copy has ``model_a``'s structure and, for tickets, its masks (the same as
    ``model_b``'s); pruned weights are interpolated in their effective form
    ``<name>_orig * <name>_mask``, so pruned entries stay zero. Neither input is changed.

    Args:
        model_a: the model at ``alpha = 0``.
        model_b: the model at ``alpha = 1``; same architecture and masks as ``model_a``.
        alpha: the interpolation coefficient, in [0, 1].
        bn_data: training batches to recompute batch-norm statistics on; needed when
            ``recompute_bn`` is True and the model has batch norm.
        bn_batches: use at most this many batches of ``bn_data``; None uses all.
        recompute_bn: recompute batch-norm running statistics (see the module docstring);
            False interpolates them linearly with the weights.
        device: where to put the new model; None uses ``model_a``'s device.

    Raises:
        ValueError: the models differ in architecture or masks (the message names the first
            differing tensor), or ``alpha`` is outside [0, 1].
    """
    (alpha,) = _check_alphas([alpha])
    _check_compatible(model_a, model_b)
    device = _device_of(model_a, device)
    bn = _bn_source(model_a, bn_data, None, recompute_bn)
    template = copy.deepcopy(model_a).to(device)
    return _build(template, snapshot(model_a), snapshot(model_b), alpha, bn,
                  _check_count(bn_batches, "bn_batches"), recompute_bn, device)


def _bn_source(model: nn.Module, bn_data: Any, data: Batches | None, recompute_bn: bool) -> Batches | None:
    if not recompute_bn or not _running_stat_norms(model):
        return None
    if bn_data is not None:
        return _as_batches(bn_data, "bn_data")
    if data is not None:
        return data
    raise ValueError(
        "the model has batch norm and recompute_bn=True, so bn_data (training batches) is "
        "needed; pass bn_data=train_loader, or recompute_bn=False to interpolate the statistics"
    )


def interpolate(
    model_a: nn.Module,
    model_b: nn.Module,
    data: Any,
    *,
    alphas: int | Sequence[float] = 30,
    bn_data: Any = None,
    recompute_bn: bool = True,
    bn_batches: int | None = None,
    eval_batches: int | None = None,
    loss_fn: LossFn | None = None,
    device: torch.device | str | None = None,
) -> Interpolation:
    """Error and loss along the straight line between the weights of two models.

    Point ``alpha`` is the model with weights ``(1 - alpha) * model_a + alpha * model_b``
    (``alpha = 0`` is ``model_a``). Buffers that are not floating point (step counters)
    come from ``model_a``. Neither model is changed.

    Example::

        line = interpolate(run1, run2, test_loader, bn_data=train_loader, alphas=11)
        print(line.barrier)   # highest error on the line minus the mean of the end points

    Args:
        model_a: the model at ``alpha = 0`` (dense or pruned).
        model_b: the model at ``alpha = 1``: the same architecture (same state_dict keys and
            shapes) and, for tickets, the same masks as ``model_a``.
        data: where to measure error and loss: a DataLoader, a list of
            ``(inputs, targets[, ...])`` batches, or a map-style Dataset (read in batches of
            256, in order). Use a loader without augmentation.
        alphas: an int ``n >= 2`` for ``n`` evenly spaced points in [0, 1] (the paper uses
            30), or an explicit sequence of values in [0, 1].
        bn_data: training batches to recompute batch-norm statistics on, at every point
            (see the module docstring). None uses ``data`` itself, which is right when
            ``data`` is training data; for test data pass the training loader.
        recompute_bn: True (default) recomputes batch-norm running statistics at every point,
            the end points included; False interpolates them linearly with the weights.
        bn_batches: use the first this-many batches of ``bn_data`` at every point (read once
            and kept in memory, so every point sees the same batches and augmentations);
            None reads all of ``bn_data`` again for each point.
        eval_batches: measure on at most this many batches of ``data``; None uses all.
        loss_fn: ``loss_fn(logits, targets) -> mean loss``; default cross entropy.
        device: where to compute; None uses ``model_a``'s device.

    Returns:
        An :class:`Interpolation` with ``alphas``, ``errors``, ``losses`` and ``barrier``.

    Raises:
        ValueError: the models differ in architecture or masks (the message names the first
            differing tensor); ``alphas`` is invalid; a data source is empty.
        TypeError: a model or data source has the wrong type.
    """
    return _interpolate_many(
        model_a, model_b, [_as_batches(data, "data")], alphas=alphas, bn_data=bn_data,
        recompute_bn=recompute_bn, bn_batches=bn_batches, eval_batches=eval_batches,
        loss_fn=loss_fn, device=device,
    )[0]


def _interpolate_many(
    model_a: nn.Module,
    model_b: nn.Module,
    datasets: list[Batches],
    *,
    alphas: int | Sequence[float],
    bn_data: Any,
    recompute_bn: bool,
    bn_batches: int | None,
    eval_batches: int | None,
    loss_fn: LossFn | None,
    device: torch.device | str | None,
) -> list[Interpolation]:
    """Interpolations on several data sets, building (and re-normalizing) each point once."""
    points = _check_alphas(alphas)
    _check_compatible(model_a, model_b)
    bn = _bn_source(model_a, bn_data, datasets[0], recompute_bn)
    bn_batches = _check_count(bn_batches, "bn_batches")
    eval_batches = _check_count(eval_batches, "eval_batches")
    if bn is not None and bn_batches is not None:
        # the same batches (and augmentations) for every point of the line
        bn = [batch for _, batch in zip(range(bn_batches), bn)]
    loss_fn = loss_fn or F.cross_entropy
    device = _device_of(model_a, device)
    state_a, state_b = snapshot(model_a), snapshot(model_b)
    template = copy.deepcopy(model_a).to(device)
    curves: list[tuple[list[float], list[float], list[int]]] = [([], [], []) for _ in datasets]
    for alpha in points:
        point = _build(template, state_a, state_b, alpha, bn, bn_batches, recompute_bn, device)
        for data, (errors, losses, samples) in zip(datasets, curves):
            error, loss, n = _evaluate(point, data, device, eval_batches, loss_fn)
            errors.append(error)
            losses.append(loss)
            samples.append(n)
    return [
        Interpolation(points, tuple(e), tuple(l), n[0], bn is not None)
        for e, l, n in curves
    ]


def error_barrier(
    model_a: nn.Module,
    model_b: nn.Module,
    train_data: Any,
    test_data: Any = None,
    *,
    alphas: int | Sequence[float] = 30,
    bn_data: Any = None,
    recompute_bn: bool = True,
    bn_batches: int | None = None,
    eval_batches: int | None = None,
    loss_fn: LossFn | None = None,
    device: torch.device | str | None = None,
) -> ErrorBarrier:
    """The error barrier between two models on training and test data.

    The barrier is the highest error on the straight line between the two models minus the
    mean error of the two end points (Frankle et al. 2020). Batch-norm statistics are
    recomputed on ``bn_data`` (default: ``train_data``) at every point, for both data sets.

    Example::

        b = error_barrier(run1, run2, train_eval_loader, test_loader, alphas=30)
        b.train_barrier, b.test_barrier, b.stable()

    Args:
        model_a, model_b: the two models (same architecture and masks).
        train_data: training data to measure on; a loader without augmentation is best.
        test_data: test data to measure on, or None for the training barrier only.
        alphas: number of evenly spaced points (>= 2) or explicit values in [0, 1].
        bn_data: batches to recompute batch-norm statistics on; None uses ``train_data``.
        recompute_bn: see :func:`interpolate`.
        bn_batches: at most this many ``bn_data`` batches per point (None: all).
        eval_batches: at most this many batches of each data set (None: all).
        loss_fn: ``loss_fn(logits, targets) -> mean loss``; default cross entropy.
        device: where to compute; None uses ``model_a``'s device.
    """
    datasets = [_as_batches(train_data, "train_data")]
    if test_data is not None:
        datasets.append(_as_batches(test_data, "test_data"))
    curves = _interpolate_many(
        model_a, model_b, datasets, alphas=alphas, bn_data=bn_data, recompute_bn=recompute_bn,
        bn_batches=bn_batches, eval_batches=eval_batches, loss_fn=loss_fn, device=device,
    )
    return ErrorBarrier(curves[0], curves[1] if len(curves) > 1 else None)
