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

import inspect
import random
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
import tickets.data.batching as _batching
from tickets import parallel as _dist
import tickets.pruning.methods as methods
from tickets.data.images import batch_loader
from tickets.pruning.rewind import enforce_masks, rewind
from tickets.data.sampling import IndexedDataset, _seed_for
from tickets.prac.sampler import PrACSampler
from tickets.prac.stats import SampleStats
from tickets.training.evaluation import evaluate
from tickets.training.precision import Precision, _autocast, resolve_channels_last, resolve_precision
from tickets.training.results import EvalResult, NonFiniteLossError, TrainResult
from tickets.training.schedule import Schedule, parse_step
from tickets.training.schedule import LossFn
from tickets.training.precision import _device_of
from tickets.training.evaluation import _split

__all__ = ['interactive', 'Trainer']


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
