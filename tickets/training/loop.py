"""The one-call training run: :func:`train`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tickets.training.precision import Precision
from tickets.training.results import TrainResult
from tickets.training.schedule import LossFn, Schedule, make_schedule
from tickets.training.trainer import Trainer

__all__ = ['train']


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
