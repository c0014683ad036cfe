"""The resumable trainer of the engine: :class:`Trainer`.

A :class:`Trainer` trains a model for a :class:`tickets.training.Schedule` from a given step
(fresh optimizer, pruned weights kept at zero after every step, optional AMP, channels_last,
``torch.compile`` and ``DistributedDataParallel``), evaluates after every epoch, keeps the
best-validation weights, and can be checkpointed at any epoch's end. Its pieces live beside it:
the data path in :mod:`tickets.training.data_path`, the checkpoint state in
:mod:`tickets.training.checkpoint`, the progress display in :mod:`tickets.training.progress`.
:func:`tickets.training.train` is the one-call form; ``tickets.prune`` drives a trainer per round.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tickets import parallel as _dist
import tickets.pruning.methods as methods
from tickets.pruning.rewind import enforce_masks
from tickets.data.sampling import _seed_for
from tickets.prac.scores import ScoreRecord
from tickets.prac.stats import SampleStats
from tickets.training.checkpoint import (
    load_state as _load_state, load_trainer_state, seed_everything, state_copy as _state_copy, trainer_state,
)
from tickets.training.data_path import data_path
from tickets.training.evaluation import _split, evaluate
from tickets.training.precision import Precision, _autocast, _device_of, resolve_channels_last, resolve_precision
from tickets.training.progress import RunProgress, interactive
from tickets.training.results import EvalResult, NonFiniteLossError, TrainResult
from tickets.training.schedule import LossFn, Schedule, parse_step

__all__ = ['interactive', 'Trainer']


# DDP's per-forward buffer broadcast switched off (torch >= 2.14 names it forward_sync_buffers); the
# buffers are still synced once when DDP is built, which the search wants (identical start)
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


def _training_forward(model: nn.Module, device: torch.device, *, channels_last: bool, distributed: bool,
                      compiled: bool) -> nn.Module:
    """Move ``model`` to ``device`` (and channels_last) and return the module the training steps
    call: the model, under ``DistributedDataParallel`` for a rank of a process group, through
    ``torch.compile`` when asked."""
    model.to(device)
    if channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-arg]
    forward: nn.Module = model
    if distributed:
        # gradients averaged by DDP; masks are buffers that never change within a round, so nothing
        # is broadcast per step (broadcast_buffers=False); the other buffers are synced per epoch
        forward = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, **_NO_BUFFER_SYNC,
        )
    # torch.compile traces the masking into the graph (tickets.pruning.methods: the pruning hooks take
    # their traceable branch while compiling), so pruned weights stay zero and no step recompiles
    return torch.compile(forward) if compiled else forward  # type: ignore[return-value]


def _step_range(start_step: int | str, stop_step: int | str | None, steps_per_epoch: int,
                total_steps: int) -> tuple[int, int]:
    """``(start, stop)`` in steps of a run of ``total_steps``: ``stop_step`` None = the end, and
    a stop past the end is the end; a start after the stop is a ValueError."""
    start = parse_step(start_step, steps_per_epoch, "start_step")
    stop = total_steps if stop_step is None else parse_step(stop_step, steps_per_epoch, "stop_step")
    stop = min(stop, total_steps)
    if start > stop:
        raise ValueError(
            f"start_step {start_step!r} = step {start} is after the end of the run (step {stop} of {total_steps})"
        )
    return start, stop


# ---------------------------------------------------------------------- trainer
class Trainer:
    """A resumable training run of ``model`` on ``data`` for a :class:`Schedule`.

    :func:`train` is the one-call form; ``tickets.prune`` drives a :class:`Trainer` directly
    to checkpoint it after every epoch (:meth:`state_dict` / :meth:`load_state_dict`) and to
    record per-sample statistics. Arguments are those of :func:`train`, plus:

    Args:
        stats: a :class:`tickets.SampleStats` to record each batch's train-mode
            correctness into (needs index-carrying batches: a data set is wrapped in
            :class:`tickets.IndexedDataset` for you); a ``ScoreRecord`` also gets the logits.
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
        stats: SampleStats | ScoreRecord | None = None,
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
        self._observe = stats.observe if getattr(stats, "needs_logits", False) else None  # scores of the logits (EL2N)
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
        path = data_path(  # the caller's DataLoader as it is (its sharding too), else the loader built here
            data, schedule.batch_size, sampler=sampler, seed=self.seed, num_workers=self.num_workers,
            world=(self.rank, self.world_size) if self.distributed else None, loader_kwargs=loader_kwargs,
            device=self.device,
        )
        self.loader: Iterable[Any] = path.loader
        self.sampler = path.sampler
        self.steps_per_epoch = path.steps_per_epoch
        self.total_steps = schedule.total_steps_at(self.steps_per_epoch)
        self.start_step, self.stop_step = _step_range(start_step, stop_step, self.steps_per_epoch, self.total_steps)
        self.forward = _training_forward(model, self.device, channels_last=self.channels_last,
                                         distributed=self.distributed, compiled=self.compiled)
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
        """Everything needed to continue this run exactly (taken at an epoch's end; see
        :func:`tickets.training.checkpoint.trainer_state`)."""
        return trainer_state(self)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` (same model, data and schedule)."""
        load_trainer_state(self, state)

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
                idx = idx.to(self.stats.device, non_blocking=True)
                self.stats.record(idx, correct.to(self.stats.device))
                if self._observe is not None:
                    self._observe(idx, logits.detach(), y)
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
        progress = RunProgress(self.desc, start=self.start_step, step=self.step, stop=self.stop_step, quiet=self.quiet)
        try:
            for epoch in self._epochs():
                started = time.perf_counter()
                entry, n = self._train_epoch(epoch, progress)
                full_epoch = self.step % self.steps_per_epoch == 0
                self._validate(entry, full_epoch)
                if self.early_stop is not None and full_epoch and self.early_stop(self.model, epoch + 1):
                    self.early_stopped = True
                    entry["early_stop"] = True
                self.wall_time += time.perf_counter() - started
                entry["seconds"] = round(time.perf_counter() - started, 4)
                self.log.append(entry)
                progress.epoch(entry, epochs=self.schedule.epochs, stop_step=self.stop_step,
                               steps_taken=self.steps_taken, samples=n, precision=self.precision)
                if full_epoch and self.on_epoch is not None:
                    self.on_epoch(self, entry)
        finally:
            progress.close()
        return self.finish()

    def _train_epoch(self, epoch: int, progress: RunProgress) -> tuple[dict[str, Any], int]:
        """Train the steps of ``epoch`` left before its end or ``stop_step``; returns the
        epoch's log entry (train loss and accuracy, over all ranks) and its sample count."""
        seed_everything(_seed_for(self.seed, self.round_index, epoch))
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        self.model.train()
        left = min(self.steps_per_epoch - self.step % self.steps_per_epoch, self.stop_step - self.step)
        totals = torch.zeros(2, dtype=torch.float64, device=self.device)
        before, seen = self.step, self.samples
        for i, batch in enumerate(self.loader):
            if i >= left:
                break
            self._train_step(batch, totals)
            progress.stepped()
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
        entry = {"epoch": epoch + 1, "step": self.step, "lr": self.optimizer.param_groups[0]["lr"],
                 "train_loss": float(totals[0]) / n, "train_acc": float(totals[1]) / n}
        return entry, n

    def _validate(self, entry: dict[str, Any], full_epoch: bool) -> None:
        """Measure ``eval_data`` after a full epoch or the run's last steps into ``entry``, and
        keep the best-validation record (and weights, with ``restore_best``)."""
        if self.eval_data is None or not (full_epoch or self.step >= self.stop_step):
            return
        result = self._evaluate(self.eval_data)
        entry["val_acc"], entry["val_loss"] = result.accuracy, result.loss
        if self.best_acc is None or result.accuracy > self.best_acc:
            self.best_acc, self.best_loss, self.best_epoch = result.accuracy, result.loss, entry["epoch"]
            self.best_state = _state_copy(self.model) if self.restore_best else None

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
