"""The training engine of ticket finding: schedules, a resumable trainer, evaluation.

* :class:`Schedule`: a frozen description of one training run (epochs, batch size, SGD
  settings, learning-rate milestones, warm-up), with :meth:`Schedule.scaled` for the
  reduced PrAC schedule and :meth:`Schedule.lr_factor` for the learning rate at any step,
  so a run can start at a rewind point with the learning rate of that point.
* :func:`train`: train a model for a schedule from a given step (fresh optimizer, pruned
  weights kept at zero after every step, optional AMP and channels_last, best-validation
  checkpoint). ``tickets.prune`` and ``tickets.stability`` use it.
* :func:`evaluate`: accuracy and mean loss on a data set.

Steps are optimizer steps. Points of a schedule can be given as an int (steps) or a string:
``"500it"`` (steps), ``"3ep"`` (epochs), ``"2ep10it"``, ``"0.5ep"``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from tickets import batching as _batching, distributed as _dist, methods
from tickets.data import batch_loader
from tickets.rewind import enforce_masks, rewind
from tickets.sampler import IndexedDataset, PrACSampler, _seed_for
from tickets.stats import SampleStats

__all__ = [
    "Schedule",
    "TrainResult",
    "EvalResult",
    "Trainer",
    "train",
    "evaluate",
    "parse_step",
    "make_schedule",
    "resolve_precision",
    "resolve_channels_last",
    "resolve_device",
    "NonFiniteLossError",
]

Precision = Literal["auto", "bf16", "fp16", "fp32"]
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: the run stopped before that step updated
    the weights (checkpoints taken so far stay valid)."""


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

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
OptimizerFactory = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]

_STEP_RE = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)\s*ep)?\s*(?:(\d+)\s*it)?\s*$")


def parse_step(value: int | str, steps_per_epoch: int, argument: str = "step") -> int:
    """An optimizer step from ``500``, ``"500it"``, ``"3ep"``, ``"2ep10it"`` or ``"0.5ep"``.

    Args:
        value: the point of the schedule.
        steps_per_epoch: optimizer steps per epoch, to convert epochs.
        argument: the argument's name, for error messages.
    """
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise TypeError(f"{argument} must be an int number of steps or a string like '500it', '3ep', '2ep10it'; got {value!r}")
    if isinstance(value, int):
        steps = value
    else:
        match = _STEP_RE.match(value.lower())
        if not match or not (match.group(1) or match.group(2)):
            raise ValueError(f"{argument}={value!r} is not a step; use an int, '500it', '3ep', '2ep10it' or '0.5ep'")
        epochs = float(match.group(1) or 0)
        steps = int(round(epochs * steps_per_epoch)) + int(match.group(2) or 0)
    if steps < 0:
        raise ValueError(f"{argument} must be >= 0 steps; got {value!r}")
    return steps


@dataclass(frozen=True)
class Schedule:
    """One training run's schedule (frozen; :meth:`replace` and :meth:`scaled` make copies).

    Args:
        epochs: epochs of the whole schedule (a run may start later, at a rewind point).
        batch_size: samples per optimizer step (the last batch of an epoch may be smaller, or
            one larger: a last single sample joins the batch before it; see :mod:`tickets.batching`).
        lr: peak learning rate (of SGD, or the base lr every group of ``optimizer`` is scaled from).
        momentum, weight_decay, nesterov: SGD settings (ignored with ``optimizer``).
        milestones: epochs (may be fractional) at which the learning rate is multiplied by
            ``gamma`` (``kind="step"``).
        gamma: the step decay factor.
        warmup_epochs: linear warm-up from ~0 to ``lr`` over this many epochs.
        kind: ``"step"`` (milestones), ``"cosine"`` (to 0 at the end) or ``"constant"``.
        lr_fn: optional ``progress -> factor`` (``progress`` in ``[0, 1)`` of the schedule)
            replacing ``kind``; scale-free, so it also fits scaled PrAC schedules.
        optimizer: optional ``params -> Optimizer`` factory replacing the SGD settings; its
            per-group learning rates are multiplied by the schedule's factor every step.
    """

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    nesterov: bool = False
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    warmup_epochs: float = 0.0
    kind: Literal["step", "cosine", "constant"] = "step"
    lr_fn: Callable[[float], float] | None = field(default=None, compare=False)
    optimizer: OptimizerFactory | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"epochs must be an int >= 1; got {self.epochs!r}")
        if isinstance(self.batch_size, bool) or not isinstance(self.batch_size, int) or self.batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1; got {self.batch_size!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {self.lr!r}")
        milestones = tuple(float(m) for m in self.milestones)
        if any(m <= 0 for m in milestones) or list(milestones) != sorted(milestones):
            raise ValueError(f"milestones must be increasing positive epochs; got {self.milestones!r}")
        object.__setattr__(self, "milestones", milestones)
        if self.warmup_epochs < 0:
            raise ValueError(f"warmup_epochs must be >= 0; got {self.warmup_epochs!r}")
        if self.kind not in ("step", "cosine", "constant"):
            raise ValueError(f"kind must be 'step', 'cosine' or 'constant'; got {self.kind!r}")
        if self.optimizer is not None and not callable(self.optimizer):
            raise TypeError(f"optimizer must be a callable params -> torch.optim.Optimizer; got {self.optimizer!r}")

    # ------------------------------------------------------------------ arithmetic
    def steps_per_epoch(self, num_samples: int, world_size: int = 1) -> int:
        """Optimizer steps in one epoch over ``num_samples`` samples: ``ceil(num_samples /
        batch_size)``, or ``num_samples // batch_size`` when the last batch would hold a single
        sample (it joins the batch before it: no train-mode batch of one, see
        :mod:`tickets.batching`). ``world_size``: processes sharing each (global) batch under
        ``torch.distributed`` (the rule then applies to each process's share).

        Raises:
            ValueError: fewer than 2 samples (per process): such an epoch cannot be trained.
        """
        return _batching.steps_per_epoch(num_samples, self.batch_size, world_size)

    def total_steps(self, num_samples: int, world_size: int = 1) -> int:
        """Optimizer steps of the whole schedule over ``num_samples`` samples per epoch."""
        return self.epochs * self.steps_per_epoch(num_samples, world_size)

    def scaled(self, ratio: float) -> Schedule:
        """The reduced PrAC schedule for a set of ``ratio = |PrAC| / N`` of the data.

        ``int(epochs * ratio)`` epochs (at least 1), milestones and warm-up multiplied by
        ``ratio``; everything else unchanged. ``scaled(1.0)`` is the schedule itself.
        """
        if not 0.0 < ratio <= 1.0:
            raise ValueError(f"ratio must be in (0, 1] (|PrAC| / N); got {ratio!r}")
        if ratio == 1.0:
            return self
        return dataclasses.replace(
            self,
            epochs=max(1, int(self.epochs * ratio + 1e-9)),
            milestones=tuple(m * ratio for m in self.milestones),
            warmup_epochs=self.warmup_epochs * ratio,
        )

    def lr_factor(self, step: int, steps_per_epoch: int) -> float:
        """The learning-rate multiplier at optimizer ``step`` (0-based) of this schedule."""
        epoch = step / steps_per_epoch
        warmup_steps = self.warmup_epochs * steps_per_epoch
        factor = min(1.0, (step + 1) / warmup_steps) if warmup_steps >= 1 else 1.0
        if self.lr_fn is not None:
            return factor * float(self.lr_fn(min(1.0, epoch / self.epochs)))
        if self.kind == "step":
            return factor * self.gamma ** sum(1 for m in self.milestones if epoch >= m - 1e-9)
        if self.kind == "cosine":
            return factor * 0.5 * (1.0 + math.cos(math.pi * min(1.0, epoch / self.epochs)))
        return factor

    def make_optimizer(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        """A fresh optimizer over ``params`` (SGD from the settings, or ``optimizer(params)``)."""
        if self.optimizer is not None:
            made = self.optimizer(params)
            if not isinstance(made, torch.optim.Optimizer):
                raise TypeError(f"optimizer(params) must return a torch.optim.Optimizer; got {type(made).__name__}")
            return made
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay,
            nesterov=self.nesterov and self.momentum > 0,
        )

    def replace(self, **changes: Any) -> Schedule:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description (callables by their repr)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif callable(value):  # a stable name (no memory address), so run fingerprints match across processes
                value = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
            out[f.name] = value
        return out


_SCHEDULE_FIELDS = {f.name for f in dataclasses.fields(Schedule)}


def make_schedule(schedule: Schedule | Mapping[str, Any] | None = None, **kwargs: Any) -> Schedule:
    """A :class:`Schedule` from a schedule, a mapping and/or keyword arguments.

    Besides the fields of :class:`Schedule`, ``lr_schedule`` is accepted: a mapping of
    fields (``dict(milestones=[91, 136], gamma=0.1, warmup_epochs=0)``), a kind
    (``"step"``, ``"cosine"``, ``"constant"``) or a callable ``progress -> factor``.
    ``warmup`` is an alias of ``warmup_epochs``.

    Raises:
        TypeError: an unknown keyword (the message lists the valid ones).
    """
    base: dict[str, Any] = {}
    if isinstance(schedule, Schedule):
        base = {f: getattr(schedule, f) for f in _SCHEDULE_FIELDS}
    elif isinstance(schedule, Mapping):
        base = dict(schedule)
    elif schedule is not None:
        raise TypeError(f"schedule must be a Schedule, a mapping or None; got {type(schedule).__name__}")
    base.update({k: v for k, v in kwargs.items() if v is not None})  # None = "not given", keeps the schedule's value
    lr_schedule = base.pop("lr_schedule", None)
    if "warmup" in base:
        base["warmup_epochs"] = base.pop("warmup")
    if isinstance(lr_schedule, Mapping):
        extra = dict(lr_schedule)
        if "warmup" in extra:
            extra["warmup_epochs"] = extra.pop("warmup")
        base.update(extra)
    elif isinstance(lr_schedule, str):
        base["kind"] = lr_schedule
    elif callable(lr_schedule):
        base["lr_fn"] = lr_schedule
    elif lr_schedule is not None:
        raise TypeError(f"lr_schedule must be a mapping, 'step'/'cosine'/'constant' or a callable; got {lr_schedule!r}")
    unknown = sorted(set(base) - _SCHEDULE_FIELDS)
    if unknown:
        raise TypeError(
            f"unknown schedule argument(s) {unknown}; valid: {sorted(_SCHEDULE_FIELDS | {'lr_schedule', 'warmup'})}"
        )
    if "milestones" in base and base["milestones"] is not None:
        base["milestones"] = tuple(base["milestones"])
    return Schedule(**base)


# ---------------------------------------------------------------------- results
class _MappingMixin:
    """``dict(result)`` and ``result["key"]`` work on the result dataclasses."""

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]  # type: ignore[arg-type]

    def __getitem__(self, key: str) -> Any:
        if key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def to_dict(self) -> dict[str, Any]:
        return {k: self[k] for k in self.keys()}


@dataclass(frozen=True)
class EvalResult(_MappingMixin):
    """Accuracy (fraction correct), mean loss and number of samples of an evaluation."""

    accuracy: float
    loss: float
    samples: int


@dataclass
class TrainResult(_MappingMixin):
    """What :func:`train` did (also readable as a mapping: ``dict(result)``).

    Attributes:
        steps: optimizer steps taken by this run (from ``start_step``).
        samples: training samples processed (the sum of batch sizes).
        start_step, end_step: the schedule positions the run started and stopped at.
        epochs: epochs of the schedule; ``epochs_trained``: epochs this run went through.
        val_acc, val_loss: on ``eval_data`` at the best-validation epoch (None without it).
        test_acc, test_loss: on ``test_data`` with the returned weights (None without it).
        best_epoch: the 1-based epoch whose weights were kept (the last without ``eval_data``).
        train_loss, train_acc: mean train-mode loss and accuracy of the last epoch.
        early_stopped: the ``early_stop`` callback ended the run.
        wall_time_s: seconds spent (including any earlier part of a resumed run).
        precision: the precision that ran (``"bf16"``, ``"fp16"`` or ``"fp32"``).
        channels_last: whether the run used the channels_last memory format.
        log: one dict per epoch (epoch, step, lr, train_loss, train_acc, val_acc, seconds).
    """

    steps: int = 0
    samples: int = 0
    start_step: int = 0
    end_step: int = 0
    epochs: int = 0
    epochs_trained: float = 0.0
    val_acc: float | None = None
    val_loss: float | None = None
    test_acc: float | None = None
    test_loss: float | None = None
    best_epoch: int | None = None
    train_loss: float | None = None
    train_acc: float | None = None
    early_stopped: bool = False
    wall_time_s: float = 0.0
    precision: str = "fp32"
    channels_last: bool = False
    log: list[dict[str, Any]] = field(default_factory=list)


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


def interactive() -> bool:
    """Whether progress goes to a terminal (stderr is a tty): live bars there, and one plain
    line per epoch or round when the output is a file or a pipe."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))


def _rng_state() -> dict[str, Any]:
    """Global RNG states as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # type: ignore[misc]
    return {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": (str(name), torch.from_numpy(np.asarray(keys, dtype=np.int64)), int(pos), int(has_gauss), float(gauss)),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _load_state(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load a full state (pruned key form, masks included) taken with :func:`_state_copy`."""
    if methods.pruned_parameters(model):
        rewind(model, state)
    else:
        model.load_state_dict(state)


# DDP's per-forward buffer broadcast switched off (torch >= 2.14 names it forward_sync_buffers); the
# buffers are still synced once when DDP is built, which the search wants (identical start)
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


# ---------------------------------------------------------------------- trainer
class Trainer:
    """A resumable training run of ``model`` on ``data`` for a :class:`Schedule`.

    :func:`train` is the one-call form; ``tickets.prune`` drives a :class:`Trainer` directly
    to checkpoint it after every epoch (:meth:`state_dict` / :meth:`load_state_dict`) and to
    record per-sample statistics. Arguments are those of :func:`train`, plus:

    Args:
        stats: a :class:`tickets.stats.SampleStats` to record each batch's train-mode
            correctness into (needs index-carrying batches: a data set is wrapped in
            :class:`tickets.sampler.IndexedDataset` for you).
        round_index: mixed into the per-epoch seeds (IMP rounds draw different noise).
        on_epoch: ``fn(trainer, entry)`` after each full epoch (``entry`` = the epoch's log
            dict); raise in it to stop the run (a later resume repeats nothing).
        early_stop: ``fn(model, epoch) -> bool`` after each epoch's evaluation; True ends the
            run and keeps the weights of that epoch (not the best-validation ones). If it has
            ``state_dict``/``load_state_dict`` they are checkpointed with the trainer.
        distributed: train as one rank of the active ``torch.distributed`` process group
            (None = whenever one of 2+ processes is active): ``schedule.batch_size`` is the
            global batch, each rank trains on its shard of every epoch
            (:class:`tickets.distributed.ShardSampler`) under ``DistributedDataParallel``,
            statistics and evaluation are combined over the ranks (see ``docs/distributed.md``).
    """

    def __init__(
        self,
        model: nn.Module,
        data: Dataset | DataLoader,
        schedule: Schedule,
        *,
        seed: int = 0,
        start_step: int | str = 0,
        stop_step: int | str | None = None,
        device: torch.device | str | None = None,
        eval_data: Any = None,
        test_data: Any = None,
        sampler: Sampler[int] | None = None,
        stats: SampleStats | None = None,
        num_workers: int = 0,
        loader_kwargs: Mapping[str, Any] | None = None,
        eval_batch_size: int | None = None,
        amp: bool | None = None,
        channels_last: bool | None = None,
        loss_fn: LossFn | None = None,
        restore_best: bool = True,
        quiet: bool = True,
        desc: str = "train",
        precision: Precision | None = None,
        compile: bool = False,
        round_index: int = 0,
        on_step: Callable[[int, nn.Module], Any] | None = None,
        on_epoch: Callable[[Trainer, dict[str, Any]], Any] | None = None,
        early_stop: Callable[[nn.Module, int], bool] | None = None,
        distributed: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
        if not isinstance(schedule, Schedule):
            raise TypeError(f"schedule must be a tickets.training.Schedule; got {type(schedule).__name__}")
        self.model = model
        self.schedule = schedule
        self.seed = int(seed)
        self.device = _device_of(model, device)
        self.eval_data, self.test_data = eval_data, test_data
        self.stats = stats
        self.precision = resolve_precision(self.device, precision, amp)
        self.channels_last = resolve_channels_last(model, channels_last)
        self.compiled = bool(compile)
        self.distributed = _dist.is_active() if distributed is None else bool(distributed)
        if self.distributed and not _dist.is_active():
            raise ValueError("distributed=True needs an initialized torch.distributed process group of 2 or more processes")
        self.rank, self.world_size = _dist.world() if self.distributed else (0, 1)
        self.loss_fn = loss_fn or F.cross_entropy
        self.restore_best = restore_best
        self.quiet, self.desc = quiet or self.rank != 0, desc
        self.round_index = int(round_index)
        self.on_step, self.on_epoch, self.early_stop = on_step, on_epoch, early_stop
        self.num_workers = int(num_workers)
        self.eval_batch_size = eval_batch_size or max(256, schedule.batch_size)
        if isinstance(data, DataLoader):  # the caller's loader (under torch.distributed: the caller's sharding)
            self.loader: Iterable[Any] = data
            self.sampler = getattr(data, "sampler", None)
            steps = max(1, len(data))
        else:
            if not isinstance(data, Dataset):
                raise TypeError(f"data must be a Dataset or a DataLoader; got {type(data).__name__}")
            loader_kwargs = _batching.check_loader_kwargs(loader_kwargs)
            if isinstance(sampler, DataLoader):
                raise TypeError("sampler is a DataLoader: pass a Sampler over data (e.g. RandomSampler(data)), or pass "
                                "the DataLoader itself as data")
            self.sampler = sampler if sampler is not None else PrACSampler(data, seed=self.seed)
            epoch_size = len(self.sampler)  # type: ignore[arg-type]
            batch = schedule.batch_size
            if self.distributed:  # batch_size is the global batch: each rank takes its share of every batch
                if batch % self.world_size:
                    raise ValueError(
                        f"batch_size {batch} is the global batch of all {self.world_size} processes: it must be a "
                        f"multiple of the world size (e.g. {batch - batch % self.world_size or self.world_size})"
                    )
                batch //= self.world_size
                self.sampler = _dist.ShardSampler(self.sampler, self.rank, self.world_size)
            # the batching rule (tickets.batching): no batch of one sample, the count the schedule uses
            steps = _batching.steps_per_epoch(
                epoch_size, schedule.batch_size, self.world_size,
                what=f"the training epoch ({type(self.sampler).__name__} over {type(data).__name__})",
            )
            fast = None if (loader_kwargs or self.num_workers) else batch_loader(data, batch, self.sampler)
            if fast is not None:  # in-memory images: batches gathered and augmented with tensor operations
                self.loader = fast
            else:
                kwargs = dict(loader_kwargs or {})
                kwargs.setdefault("num_workers", self.num_workers)
                kwargs.setdefault("pin_memory", self.device.type == "cuda")
                self.loader = DataLoader(IndexedDataset(data), batch_sampler=_batching.EpochBatchSampler(self.sampler, batch),
                                         **kwargs)
        self.steps_per_epoch = steps
        self.total_steps = schedule.epochs * self.steps_per_epoch
        self.start_step = parse_step(start_step, self.steps_per_epoch, "start_step")
        stop = self.total_steps if stop_step is None else parse_step(stop_step, self.steps_per_epoch, "stop_step")
        self.stop_step = min(stop, self.total_steps)
        if self.start_step > self.stop_step:
            raise ValueError(
                f"start_step {start_step!r} = step {self.start_step} is after the end of the run "
                f"(step {self.stop_step} of {self.total_steps})"
            )
        model.to(self.device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
        forward: nn.Module = model
        if self.distributed:
            # gradients averaged by DDP; masks are buffers that never change within a round, so nothing
            # is broadcast per step (broadcast_buffers=False); the other buffers are synced per epoch
            forward = nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None, **_NO_BUFFER_SYNC,
            )
        # torch.compile traces the masking into the graph (tickets.methods: the pruning hooks take
        # their traceable branch while compiling), so pruned weights stay zero and no step recompiles
        self.forward = torch.compile(forward) if self.compiled else forward
        self.optimizer = schedule.make_optimizer([p for p in model.parameters() if p.requires_grad])
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.precision == "fp16" and self.device.type == "cuda")
        # progress
        self.step = self.start_step
        self.steps_taken = 0
        self.samples = 0
        self.wall_time = 0.0
        self.log: list[dict[str, Any]] = []
        self.best_acc: float | None = None
        self.best_loss: float | None = None
        self.best_epoch: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        self.early_stopped = False
        self.finished = False

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue this run exactly (taken at an epoch's end)."""
        generator = getattr(self.sampler, "generator", None)
        early = self.early_stop
        return {
            "model": _state_copy(self.model),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "steps_taken": self.steps_taken,
            "samples": self.samples,
            "wall_time": self.wall_time,
            "log": [dict(e) for e in self.log],
            "best": (self.best_acc, self.best_loss, self.best_epoch),
            "best_state": self.best_state,
            "early_stopped": self.early_stopped,
            "finished": self.finished,
            "stats": self.stats.state_dict() if self.stats is not None else None,
            "sampler_generator": generator.get_state() if isinstance(generator, torch.Generator) else None,
            "early_stop": early.state_dict() if early is not None and hasattr(early, "state_dict") else None,
            "rng": _rng_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (same model, data and schedule)."""
        _load_state(self.model, state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.step, self.steps_taken, self.samples = int(state["step"]), int(state["steps_taken"]), int(state["samples"])
        self.wall_time = float(state["wall_time"])
        self.log = [dict(e) for e in state["log"]]
        self.best_acc, self.best_loss, self.best_epoch = state["best"]
        self.best_state = state["best_state"]
        self.early_stopped, self.finished = bool(state["early_stopped"]), bool(state["finished"])
        if self.stats is not None and state.get("stats") is not None:
            self.stats.load_state_dict(state["stats"])
        generator = getattr(self.sampler, "generator", None)
        if isinstance(generator, torch.Generator) and state.get("sampler_generator") is not None:
            generator.set_state(state["sampler_generator"])
        if self.early_stop is not None and state.get("early_stop") is not None and hasattr(self.early_stop, "load_state_dict"):
            self.early_stop.load_state_dict(state["early_stop"])  # type: ignore[attr-defined]
        if state.get("rng"):
            _set_rng_state(state["rng"])

    # ------------------------------------------------------------------ the loop
    def _set_lr(self) -> float:
        factor = self.schedule.lr_factor(self.step, self.steps_per_epoch)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor
        return self.base_lrs[0] * factor if self.base_lrs else 0.0

    def _train_step(self, batch: Any, totals: torch.Tensor) -> None:
        x, y, idx = _split(batch)
        x = x.to(self.device, non_blocking=True)
        y = torch.as_tensor(y).to(self.device, non_blocking=True)
        if self.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        self._set_lr()
        with _autocast(self.device, self.precision):
            logits = self.forward(x)
            loss = self.loss_fn(logits, y)
        if not bool(torch.isfinite(loss.detach())):
            where = f"round {self.round_index}, " if self.desc.startswith("round") else ""
            raise NonFiniteLossError(
                f"the training loss is {float(loss.detach())} at {where}step {self.step + 1} (epoch "
                f"{self.step // self.steps_per_epoch + 1}, learning rate {self.optimizer.param_groups[0]['lr']:.4g}): "
                f"training diverged; lower the learning rate (lr=) or add warm-up (warmup_epochs=). The step was "
                f"not applied; the checkpoints written so far are valid"
            )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        enforce_masks(self.model)
        with torch.no_grad():
            correct = logits.detach().argmax(1).eq(y)
            totals[0] += loss.detach().float() * y.shape[0]
            totals[1] += correct.sum()
            if self.stats is not None:
                if idx is None:
                    raise TypeError(
                        "per-sample statistics need batches carrying sample indices: pass a Dataset "
                        "(it is wrapped in IndexedDataset) or a DataLoader over IndexedDataset(data)"
                    )
                self.stats.record(idx.to(self.stats.device, non_blocking=True), correct.to(self.stats.device))
        self.step += 1
        self.steps_taken += 1
        self.samples += int(y.shape[0])
        if self.on_step is not None:
            self.on_step(self.step, self.model)

    def _evaluate(self, data: Any) -> EvalResult:
        if self.distributed and isinstance(data, Dataset):  # each rank measures a slice; the sums are combined
            part, _ = _dist.shard_of(data, self.rank, self.world_size)
            local = evaluate(
                self.model, part, device=self.device, batch_size=self.eval_batch_size, num_workers=self.num_workers,
                loss_fn=self.loss_fn, precision=self.precision, channels_last=self.channels_last,
            ) if len(part) else EvalResult(0.0, 0.0, 0)  # type: ignore[arg-type]
            sums = _dist.all_reduce_sum(torch.tensor([local.accuracy * local.samples, local.loss * local.samples,
                                                      float(local.samples)], dtype=torch.float64), self.device)
            count = int(sums[2])
            return EvalResult(float(sums[0] / count), float(sums[1] / count), count)
        return evaluate(
            self.model, data, device=self.device, batch_size=self.eval_batch_size, num_workers=self.num_workers,
            loss_fn=self.loss_fn, precision=self.precision, channels_last=self.channels_last,
        )

    def _epochs(self) -> Iterator[int]:
        while self.step < self.stop_step and not self.early_stopped:
            yield self.step // self.steps_per_epoch

    def run(self) -> TrainResult:
        """Train to ``stop_step`` (or the early stop), then keep the best-validation weights
        (``restore_best``) and measure ``test_data``. Returns the :class:`TrainResult`."""
        from tqdm.auto import tqdm

        lines = not self.quiet and not interactive()  # a file or a pipe: a line per epoch, no bar frames
        bar = tqdm(total=self.stop_step - self.start_step, initial=self.step - self.start_step,
                   desc=self.desc, unit="it", disable=self.quiet or lines, leave=False, dynamic_ncols=True)
        try:
            for epoch in self._epochs():
                started = time.perf_counter()
                _seed_everything(_seed_for(self.seed, self.round_index, epoch))
                if hasattr(self.sampler, "set_epoch"):
                    self.sampler.set_epoch(epoch)  # type: ignore[union-attr]
                self.model.train()
                left = min(self.steps_per_epoch - self.step % self.steps_per_epoch, self.stop_step - self.step)
                totals = torch.zeros(2, dtype=torch.float64, device=self.device)
                before, seen = self.step, self.samples
                for i, batch in enumerate(self.loader):
                    if i >= left:
                        break
                    self._train_step(batch, totals)
                    bar.update(1)
                if self.compiled:  # the compiled graph left plain tensors as module weights
                    for _, module, name in methods.pruned_parameters(self.model):
                        methods.refresh(module, name)
                if self.step == before:
                    raise RuntimeError(f"the training data yielded no batch in epoch {epoch + 1}: is it empty?")
                if self.step - before < left:  # the epoch would be cut in two parts and the schedule shifted
                    raise RuntimeError(
                        f"the training data yielded {self.step - before} batches in epoch {epoch + 1}, but its length "
                        f"says {left} ({self.steps_per_epoch} per epoch): a DataLoader whose len() and batches disagree "
                        f"(an IterableDataset, or a sampler whose length changed)"
                    )
                n = self.samples - seen
                if hasattr(self.stats, "flush"):
                    self.stats.flush()  # type: ignore[union-attr]
                if self.distributed:  # every rank: rank 0's buffers, and the epoch's numbers over all ranks
                    _dist.broadcast_buffers(self.model)
                    summed = _dist.all_reduce_sum(torch.cat([totals.double().cpu(), torch.tensor([float(n)], dtype=torch.float64)]),
                                                  self.device)
                    totals = summed[:2]
                    self.samples += int(summed[2]) - n
                    n = int(summed[2])
                entry: dict[str, Any] = {
                    "epoch": epoch + 1,
                    "step": self.step,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "train_loss": float(totals[0]) / n,
                    "train_acc": float(totals[1]) / n,
                }
                full_epoch = self.step % self.steps_per_epoch == 0
                if self.eval_data is not None and (full_epoch or self.step >= self.stop_step):
                    result = self._evaluate(self.eval_data)
                    entry["val_acc"], entry["val_loss"] = result.accuracy, result.loss
                    if self.best_acc is None or result.accuracy > self.best_acc:
                        self.best_acc, self.best_loss, self.best_epoch = result.accuracy, result.loss, epoch + 1
                        self.best_state = _state_copy(self.model) if self.restore_best else None
                if self.early_stop is not None and full_epoch and self.early_stop(self.model, epoch + 1):
                    self.early_stopped = True
                    entry["early_stop"] = True
                self.wall_time += time.perf_counter() - started
                entry["seconds"] = round(time.perf_counter() - started, 4)
                self.log.append(entry)
                bar.set_postfix(loss=f"{entry['train_loss']:.3f}", **({"val": f"{entry['val_acc']:.3f}"} if "val_acc" in entry else {}))
                if lines:
                    val = f", val {100 * entry['val_acc']:.2f}%" if "val_acc" in entry else ""
                    # "schedule step" = the position in the schedule (a rewound round starts past 0);
                    # "trained" = steps run, the count round summaries and the history call "steps"
                    print(f"{self.desc}: epoch {epoch + 1}/{self.schedule.epochs}, schedule step {self.step}/{self.stop_step} "
                          f"({self.steps_taken} trained), "
                          f"loss {entry['train_loss']:.4f}, train {100 * entry['train_acc']:.2f}%{val}, "
                          f"{entry['seconds']:.1f}s ({n / max(entry['seconds'], 1e-9):,.0f} samples/s, {self.precision})",
                          file=sys.stderr, flush=True)
                if full_epoch and self.on_epoch is not None:
                    self.on_epoch(self, entry)
        finally:
            bar.close()
        return self.finish()

    def finish(self) -> TrainResult:
        """Restore the kept weights, measure the test data and build the result."""
        started = time.perf_counter()
        if self.early_stopped or self.eval_data is None:
            kept_epoch = self.log[-1]["epoch"] if self.log else None
            val_acc = self.log[-1].get("val_acc") if self.log else None
            val_loss = self.log[-1].get("val_loss") if self.log else None
        else:
            kept_epoch, val_acc, val_loss = self.best_epoch, self.best_acc, self.best_loss
            if self.restore_best and self.best_state is not None:
                _load_state(self.model, self.best_state)
        test = self._evaluate(self.test_data) if self.test_data is not None else None
        self.finished = True
        self.wall_time += time.perf_counter() - started
        last = self.log[-1] if self.log else {}
        return TrainResult(
            steps=self.steps_taken,
            samples=self.samples,
            start_step=self.start_step,
            end_step=self.step,
            epochs=self.schedule.epochs,
            epochs_trained=round((self.step - self.start_step) / self.steps_per_epoch, 4),
            val_acc=val_acc,
            val_loss=val_loss,
            test_acc=test.accuracy if test else None,
            test_loss=test.loss if test else None,
            best_epoch=kept_epoch,
            train_loss=last.get("train_loss"),
            train_acc=last.get("train_acc"),
            early_stopped=self.early_stopped,
            wall_time_s=round(self.wall_time, 3),
            precision=self.precision,
            channels_last=self.channels_last,
            log=[dict(e) for e in self.log],
        )


def train(
    model: nn.Module,
    data: Dataset | DataLoader,
    schedule: Schedule | Mapping[str, Any] | None = None,
    *,
    seed: int = 0,
    start_step: int | str = 0,
    stop_step: int | str | None = None,
    start_epoch: float | None = None,
    device: torch.device | str | None = None,
    eval_data: Any = None,
    test_data: Any = None,
    sampler: Sampler[int] | None = None,
    num_workers: int = 0,
    loader_kwargs: Mapping[str, Any] | None = None,
    amp: bool | None = None,
    channels_last: bool | None = None,
    loss_fn: LossFn | None = None,
    restore_best: bool = True,
    quiet: bool = True,
    precision: Precision | None = None,
    compile: bool = False,
    on_step: Callable[[int, nn.Module], Any] | None = None,
    on_epoch: Callable[[Trainer, dict[str, Any]], Any] | None = None,
    **schedule_kwargs: Any,
) -> TrainResult:
    """Train ``model`` in place on ``data`` for ``schedule``, from ``start_step`` to ``stop_step``.

    A fresh optimizer is made (SGD from the schedule, or ``schedule.optimizer``); the learning
    rate of every step is the schedule's at that step, so starting at a rewind point ``k``
    continues the schedule from ``k`` (Frankle et al.'s rewinding). Pruned weights are kept
    at zero after every step (:func:`tickets.enforce_masks`). The data order and augmentation
    of epoch ``e`` are drawn from seeds derived from ``(seed, e)``: the same call gives the
    same result on CPU.

    Example::

        result = train(model, train_set, epochs=30, lr=0.1, milestones=[15, 25],
                       eval_data=val_set, test_data=test_set, start_step="3ep")
        result.test_acc, result.steps

    Args:
        model: the model (pruned or not), trained in place and moved to ``device``.
        data: the training data set of ``(input, target)`` items (shuffled by a seeded
            :class:`tickets.PrACSampler` over all samples unless ``sampler`` is given), or a
            ``DataLoader`` used as it is.
        schedule: a :class:`Schedule` or a mapping of its fields; ``**schedule_kwargs``
            (``epochs=``, ``lr=``, ``batch_size=``, ``milestones=``, ``optimizer=``,
            ``lr_schedule=``...) override it (see :func:`make_schedule`).
        seed: seed of the data order and augmentation.
        start_step: where in the schedule to start (int steps or ``"3ep"``, ``"500it"``).
        stop_step: where to stop (None = the end of the schedule).
        start_epoch: alternative to ``start_step`` in epochs (may be fractional).
        device: where to train; None = the model's device.
        eval_data: validation data; the weights of the best validation epoch are kept
            (``restore_best``) and its accuracy reported.
        test_data: test data, measured once at the end with the kept weights.
        sampler: the sampler over ``data`` (default: a seeded shuffle of all samples).
        num_workers, loader_kwargs: ``DataLoader`` options for ``data`` (e.g.
            ``dict(persistent_workers=True, prefetch_factor=4)``). With neither, an in-memory
            :class:`tickets.data.ImageDataset` is batched with tensor operations
            (:class:`tickets.data.BatchLoader`: one gather and a batched crop/flip per step);
            set ``num_workers`` for image folders read from disk.
        precision: ``"auto"`` (default: bf16 autocast on CPUs with native bf16 and on bf16
            GPUs, fp16 with a gradient scaler on older GPUs, fp32 otherwise), ``"bf16"``,
            ``"fp16"`` or ``"fp32"`` (see :func:`resolve_precision`). Weights, optimizer state
            and masks stay fp32; the result's ``precision`` says what ran.
        amp: the older switch (True = mixed precision, False = fp32); ``precision`` wins.
        channels_last: train in the channels_last memory format; None (default) = the rule of
            :func:`resolve_channels_last` (convolutional models yes, others no).
        compile: run the training forward through ``torch.compile`` (the masking is traced
            into the graph: pruned weights stay zero, no recompilation per step). It pays
            for long runs of a fixed model: compiling costs tens of seconds per run (every
            IMP round is a run) on a CPU; see ``docs/speed.md`` for measurements.
        loss_fn: ``(logits, targets) -> loss``; default cross-entropy.
        restore_best: keep the best-validation weights at the end (needs ``eval_data``).
        quiet: no progress bar.
        on_step: ``fn(step, model)`` after every optimizer step (``step`` = steps done).
        on_epoch: ``fn(trainer, entry)`` after every full epoch.

    Returns:
        :class:`TrainResult` (steps, samples, accuracies, per-epoch log; ``dict(result)`` works).
    """
    sched = make_schedule(schedule, **schedule_kwargs)
    if start_epoch is not None:
        if start_step not in (0, "0it"):
            raise ValueError("give start_step or start_epoch, not both")
        start_step = f"{float(start_epoch)}ep"
    trainer = Trainer(
        model, data, sched, seed=seed, start_step=start_step, stop_step=stop_step, device=device,
        eval_data=eval_data, test_data=test_data, sampler=sampler, num_workers=num_workers,
        loader_kwargs=loader_kwargs, amp=amp, channels_last=channels_last, loss_fn=loss_fn,
        restore_best=restore_best, quiet=quiet, on_step=on_step, on_epoch=on_epoch, precision=precision,
        compile=compile,
    )
    return trainer.run()
