"""What the engine returns: evaluation and training results (mappings as well as objects).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = ['NonFiniteLossError', 'EvalResult', 'TrainResult']


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite: the run stopped before that step updated
    the weights (checkpoints taken so far stay valid)."""


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
