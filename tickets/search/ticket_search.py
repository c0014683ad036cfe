"""A ticket search as rounds that any training loop can drive.

:class:`TicketSearch` owns everything a search keeps between rounds: the masks, the rewind
point, the PrAC sets and their statistics, the history and the checkpoints. It hands a
training loop one :class:`Round` at a time (which samples, how many steps, the learning-rate
factor at each step) and takes back what happened (per batch: sample indices, logits and
targets; per epoch: an optional validation number). Between rounds it prunes, rewinds,
picks the next PrAC set and checkpoints.

``tickets.prune`` is this object driven by the library's own engine
(:class:`tickets.training.Trainer`); your own loop drives it the same way::

    search = tickets.TicketSearch(model, PrACSampler(train_set), rounds=5, epochs=30)
    loader = search.loader(num_workers=4)               # (input, target, index) batches
    for rnd in search:                                  # begin_round() ... end_round()
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        scheduler = rnd.lr_scheduler(optimizer)         # the round's (scaled) schedule
        for epoch in rnd:
            for x, y, idx in rnd.batches(loader):
                loss = F.cross_entropy(logits := model(x), y)
                optimizer.zero_grad(); loss.backward(); optimizer.step(); scheduler.step()
                rnd.report(idx, logits, y)              # statistics, accounting, masks
    ticket = search.ticket

See ``docs/own-loop.md`` for the protocol and what it guarantees.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
import weakref
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler
from tickets import parallel as _dist
import tickets.pruning.methods as methods
from tickets.data.batching import check_loader_kwargs, steps_per_epoch as batch_steps
from tickets.pruning.rewind import enforce_masks, rewind as rewind_weights, snapshot
from tickets.data.sampling import IndexedDataset, dataset_of
from tickets.prac.sampler import PrACSampler
from tickets.pruning.parameters import prunable_parameters
from tickets.prac.stats import DistributedStats, SampleStats
from tickets.prac.rules import SelectionRule, disagreement, select
from tickets.training.evaluation import predict
from tickets.ticket.ticket import Ticket
from tickets.ticket.file import atomic_save, remove_stale_temporaries
from tickets.training.schedule import Schedule
from tickets.training.precision import resolve_channels_last, resolve_device, resolve_precision
from tickets.search.checks import _apply_masks, _check_labelled, _check_model_output, _current_masks, _qualified, _refuse_pruned, _rewind_point, _sparsity, _state, _time_ratio, _warn_augmented
from tickets.search.identity import _AFTER_ROUND_0_KEYS, _config_diff, _describe_diff, _digest, _first_set, _sampler_identity, describe_optimizer
from tickets.search.options import EarlyBird, PrACOptions, Pruning, Runtime, parse_checkpoint_every, resolve_options
from tickets.search.round import Round, _RoundSampler
from tickets.search.run_folder import _check_rounds, METRICS_FILE, ROUND0_FILE, ROUND0_FORMAT, STATE_FORMAT, STATE_VERSION, _ROUND_TICKET, _RUN_FILES, _Run, _load_round_0, _load_run, _save_run

__all__ = ['TicketSearch']


log = logging.getLogger("tickets")


class TicketSearch:
    """The state of a lottery-ticket search by IMP (on PrAC sets or on the full data),
    driven one round at a time by any training loop.

    Arguments are those of :func:`tickets.prune` that concern the search (the engine's
    ``eval_data``, ``test_data``, ``loss_fn`` and callbacks are the loop's business): the
    model, a sampler, ``rounds``, and the option groups ``schedule`` (:class:`Schedule`),
    ``pruning`` (:class:`Pruning`), ``prac`` (:class:`PrACOptions`), ``runtime``
    (:class:`Runtime`), or their fields as keywords (``amount=0.2, epochs=30, rewind_to="1ep"``).

    Args:
        model: the dense, untrained model; pruned and rewound in place between rounds, it
            ends as the last round's trained, pruned model (not the ticket: apply
            :attr:`ticket` to a fresh model for its rewound weights).
        sampler: a :class:`PrACSampler` (PrAC IMP), any sampler with a ``data_source``
            (vanilla IMP, e.g. ``RandomSampler(train_set)``), or a ``Dataset``; a ``Dataset``,
            or None with ``train_data``, means ``PrACSampler(train_data, seed=seed)``.
        rounds: trainings in all, round 0 included (>= 1). The one setting that may change
            when a checkpoint_dir is resumed: a larger value extends a finished or running
            search (a finished one continues with the pruning its last round skipped), a
            value below the rounds already begun is refused.
        train_data: the training set; default the sampler's ``data_source``.
        train_eval_data: the training split without augmentation, for the disagreement pass.
        checkpoint_dir: where the search is saved after every round (and ``round_<k>.ticket``,
            ``prac_sets.pt``, ``round_0.pt``, the final ``ticket.ticket``); a new search with
            the same arguments (and a fresh model) resumes at the round it was in (a round
            cut short starts again).
        seed: the sampler's seed when ``sampler`` is a data set, and part of the run's identity.
        meta: extra JSON-able facts for the tickets' ``meta``.
        start_from: the checkpoint_dir of another search whose round 0 has finished: this
            search takes that round 0 (history entry, trained weights, rewind point,
            per-sample statistics, sampler state) instead of computing it, and goes on from
            round 1. The two must agree on everything round 0 depends on (model and initial
            weights, data, seed, sampler and data order, schedule and optimizer, rewind
            point, precision); ``rounds``, ``amount``, ``rewind`` and the PrAC options may
            differ. A PrAC search needs round-0 statistics: start it from a PrAC search's
            round 0. Ignored when this search's own checkpoint_dir already holds a finished
            round.

    Raises:
        ValueError / TypeError, before anything runs: as :func:`tickets.prune`; a model that
        is already pruned; a ``start_from`` folder without a finished round 0 or of a search
        with other settings.
    """

    def __init__(
        self,
        model: nn.Module,
        sampler: Sampler[int] | Dataset | None = None,
        *,
        rounds: int,
        schedule: Schedule | Mapping[str, Any] | None = None,
        pruning: Pruning | None = None,
        prac: PrACOptions | None = None,
        runtime: Runtime | None = None,
        train_data: Dataset | None = None,
        train_eval_data: Dataset | DataLoader | None = None,
        checkpoint_dir: str | Path | None = None,
        seed: int = 0,
        meta: Mapping[str, Any] | None = None,
        start_from: str | Path | None = None,
        _engine: bool = False,
        **options: Any,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
        _refuse_pruned(model)
        if start_from is not None and not isinstance(start_from, (str, Path)):
            raise TypeError(f"start_from must be the checkpoint_dir (str or Path) of another search; got {type(start_from).__name__}")
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ValueError(f"rounds must be an int >= 1 (round 0 is the dense training); got {rounds!r}")
        if isinstance(sampler, DataLoader):
            raise TypeError(
                f"the second argument is a DataLoader (over a {type(sampler.dataset).__name__}): pass a sampler or the "
                f"data set instead, e.g. PrACSampler(train_set) for PrAC IMP, RandomSampler(train_set) for IMP on "
                f"the full data, or train_set itself (= PrACSampler(train_set)); the search builds its loaders "
                f"(batch_size= sets the batch, num_workers= and loader_kwargs= the DataLoader options; own loops "
                f"use search.loader())"
            )
        sched, pruning, prac, runtime = resolve_options(schedule, pruning, prac, runtime, **options)
        _dist.init_from_env(runtime.device)  # under torchrun without a process group: make one
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {seed!r}")
        if isinstance(sampler, Dataset):
            sampler = PrACSampler(sampler, seed=seed)
        if sampler is None:
            if train_data is None:
                raise ValueError("pass a sampler over the training set (PrACSampler(train_set) or RandomSampler(train_set))")
            sampler = PrACSampler(train_data, seed=seed)
        if train_data is not None and not isinstance(train_data, Dataset):
            raise TypeError(f"train_data must be a map-style Dataset (the loader is built for you); got {type(train_data).__name__}")
        if not isinstance(sampler, Sampler) and not hasattr(sampler, "__iter__"):
            raise TypeError(f"sampler must be a torch Sampler; got {type(sampler).__name__}")
        source = dataset_of(sampler)
        if train_data is None:
            if source is None:
                raise ValueError(f"{type(sampler).__name__} does not say which data set it samples: pass train_data=")
            train_data = source
        elif source is not None and source is not train_data:
            raise ValueError(
                f"the sampler draws from a {type(source).__name__} of {len(source):,} samples, not from train_data "  # type: ignore[arg-type]
                f"({type(train_data).__name__} of {len(train_data):,}): build the sampler over the training set"  # type: ignore[arg-type]
            )
        _check_labelled(train_data, "train_data")
        _check_labelled(train_eval_data, "train_eval_data")
        n = len(train_data)  # type: ignore[arg-type]
        if isinstance(train_eval_data, Dataset) and len(train_eval_data) != n:  # type: ignore[arg-type]
            raise ValueError(f"train_eval_data has {len(train_eval_data):,} samples; train_data has {n:,}: they must be the same split")  # type: ignore[arg-type]
        is_prac = isinstance(sampler, PrACSampler)
        if is_prac and sampler.num_samples != n:  # type: ignore[union-attr]
            raise ValueError(f"the PrACSampler covers {sampler.num_samples:,} samples but train_data has {n:,}")  # type: ignore[union-attr]
        self.rank, self.world_size = _dist.world()
        if self.world_size > 1:
            if sched.batch_size % self.world_size:
                raise ValueError(
                    f"batch_size {sched.batch_size} is the global batch of all {self.world_size} processes: it must be "
                    f"a multiple of the world size"
                )
            if not runtime.quiet and self.rank != 0:
                runtime = dataclasses.replace(runtime, quiet=True)  # progress and summaries from rank 0 only
        self.model, self.sampler, self.train_data, self.train_eval_data = model, sampler, train_data, train_eval_data
        self.rounds, self.seed = rounds, int(seed)
        self.schedule, self.pruning, self.prac, self.runtime = sched, pruning, prac, runtime
        self.is_prac = is_prac
        self.adaptive = is_prac and sampler.adaptive  # type: ignore[union-attr]
        self.num_samples = n
        if self.adaptive and rounds > 1 and train_eval_data is None:
            _warn_augmented(train_data)
        dev = resolve_device(runtime.device) if runtime.device is not None else next(iter(model.parameters()), torch.empty(0)).device
        model.to(dev)
        self.device = dev
        self.precision = resolve_precision(dev, runtime.precision, runtime.amp)
        self.channels_last = resolve_channels_last(model, runtime.channels_last)
        self.classes = _check_model_output(model, train_data, dev)
        spe_full = sched.steps_per_epoch(n)
        self.rewind_step = _rewind_point(pruning.rewind_to, spe_full, sched.total_steps(n))
        self.rewind_epochs = self.rewind_step / spe_full
        pairs = list(pruning.parameters) if pruning.parameters is not None else prunable_parameters(model)
        if not pairs:
            raise ValueError("parameters is empty: nothing to prune")
        self.parameters = pairs
        self.names = _qualified(model, pairs)
        self.rule = prac.selection or SelectionRule()
        bird = pruning.early_bird
        bird_repr = repr(bird if isinstance(bird, EarlyBird) else EarlyBird()) if bird else None
        config = {
            "rounds": rounds, "amount": float(pruning.amount), "schedule": sched.to_dict(), "rewind_to": self.rewind_step,
            "rewind": pruning.rewind, "num_samples": n, "sampler": type(sampler).__name__, "adaptive": self.adaptive,
            "seed": self.seed, "selection": self.rule.to_dict() if self.adaptive else None,
            "scale_schedule": prac.scale_schedule, "early_bird": bird_repr, "parameters": self.names,
            "classes": self.classes, "precision": self.precision,
            "min_step_fraction": float(prac.min_step_fraction) if self.adaptive else None,
        }
        # what the engine's optimizer factory builds (class and every param-group hyperparameter):
        # an own loop builds its optimizer after begin_round(), so Round.attach checks it instead
        self.optimizer_record: dict[str, Any] | None = None
        if _engine:
            built = sched.make_optimizer([p for p in model.parameters() if p.requires_grad])
            self.optimizer_record = json.loads(json.dumps(describe_optimizer(built)))
            del built
            config["optimizer"] = self.optimizer_record
        else:
            config["loop"] = "own"
        if self.world_size > 1:  # a distributed run resumes with the same number of processes
            config["world_size"] = self.world_size
        self.config = config
        self._fingerprint = json.dumps(config, sort_keys=True)
        self.directory = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self._writer = self.rank == 0  # only rank 0 writes; every rank reads
        if self.directory is not None and self._writer:
            self.directory.mkdir(parents=True, exist_ok=True)
        resumed = self.directory is not None and (self.directory / "state.pt").is_file()
        self._run = (_load_run(self.directory, self._fingerprint) if self.directory is not None else None) or _Run()
        _check_rounds(self._run, rounds, self.directory)
        trained_schedule = sched.to_dict()
        if not _engine or sched.optimizer is not None:  # the SGD fields never ran: say what did
            for key in ("lr", "momentum", "weight_decay", "nesterov"):
                trained_schedule.pop(key, None)
        self.meta = {
            "method": "prac-imp" if is_prac else "imp", "rewind": pruning.rewind, "rewind_step": self.rewind_step,
            "rewind_epochs": self.rewind_epochs, "amount": float(pruning.amount), "rounds": rounds, "num_samples": n,
            "classes": self.classes, "schedule": trained_schedule, "seed": self.seed,
            "optimizer": self.optimizer_record,  # None for own loops: each round's history entry has it
            "selection": self.rule.to_dict() if self.adaptive else None, **dict(meta or {}),
        }
        self._engine = _engine
        self._open: Round | None = None
        self._used_optimizers: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()
        # ---- restore a saved search
        run = self._run
        adopt = start_from is not None and not run.history
        origin = (run.origin or self._origin()) if adopt else None  # before the restore moves anything
        if run.masks is not None:
            _apply_masks(pairs, self.names, run.masks)
        if run.model is not None:
            rewind_weights(model, run.model) if methods.pruned_parameters(model) else model.load_state_dict(run.model)
        if run.sampler is not None and is_prac:
            sampler.load_state_dict(run.sampler)  # type: ignore[union-attr]
        generator = getattr(sampler, "generator", None)
        if isinstance(generator, torch.Generator) and run.sampler_generator is not None:
            generator.set_state(run.sampler_generator)
        if self.world_size > 1:  # every rank has read the checkpoint before rank 0 writes the next one
            torch.distributed.barrier()
        if adopt:
            self._adopt_round_0(Path(start_from), origin)  # type: ignore[arg-type]
        elif run.origin and run.origin.get("start_from"):
            self.meta["start_from"] = run.origin["start_from"]  # a resumed search that started from another's round 0
        if run.phase == "done" and len(run.history) < self.rounds:
            self._advance()  # more rounds than the finished run had: go on where it stopped
        if run.phase == "done" and self._writer:
            _finish(run, self.meta, self.directory)
        self._open_folder(resumed)  # stale temporary files, metrics.jsonl, the "resuming" line

    # ------------------------------------------------------------------ facts
    @property
    def round(self) -> int:
        """The round that :meth:`begin_round` starts next (or that is open)."""
        return self._run.round

    @property
    def done(self) -> bool:
        """All rounds are trained; :attr:`ticket` is the result."""
        return self._run.phase == "done"

    @property
    def current(self) -> Round | None:
        """The open round, or None."""
        return self._open

    @property
    def history(self) -> list[dict[str, Any]]:
        """One dict per finished round (as ``ticket.history``)."""
        return [dict(h) for h in self._run.history]

    @property
    def ticket(self) -> Ticket:
        """The ticket of the last finished round (the search's result once :attr:`done`)."""
        if not self._run.history:
            raise RuntimeError("no round has finished yet: the search has no ticket")
        return _ticket(self._run.masks, self._run, self.meta)  # type: ignore[arg-type]

    def loader(self, **kwargs: Any) -> DataLoader:
        """A ``DataLoader`` of ``(input, target, index)`` batches over the training set that
        follows the search: the current set, in the sampler's order for the epoch, cut to the
        open round's epoch (the first epoch after a rewind starts mid-epoch, and the round
        may end mid-epoch), with the schedule's batch size. Build it once; every
        ``iter(loader)`` follows the round at that moment. Batches follow the library's rule
        (:mod:`tickets.batching`): a last single sample joins the batch before it, so no
        train-mode batch holds one sample and ``len(loader)`` is the epoch's step count of
        the round's schedule.

        Args:
            kwargs: other ``DataLoader`` arguments (``num_workers``, ``pin_memory``,
                ``persistent_workers``...; with persistent workers the data order is still
                right: the sampler runs in the main process).

        Raises:
            TypeError: ``sampler``, ``batch_sampler``, ``batch_size`` or ``shuffle`` (set by the
                search). ValueError: ``drop_last`` (not supported: see
                :func:`tickets.batching.check_loader_kwargs`).
        """
        kwargs = check_loader_kwargs(kwargs, "search.loader()")
        return DataLoader(IndexedDataset(self.train_data), batch_sampler=_RoundSampler(self), **kwargs)  # type: ignore[arg-type]

    @property
    def _rank_batch(self) -> int:
        """This process's share of the global batch."""
        return self.schedule.batch_size // self.world_size

    # ------------------------------------------------------------------ rounds
    def begin_round(self) -> Round:
        """Start the next round: returns the :class:`Round` to train.

        Raises:
            RuntimeError: the search is done, or a round is still open.
        """
        if self.done:
            raise RuntimeError(f"the search is finished ({self.rounds} rounds): search.ticket holds the result")
        if self._open is not None:
            raise RuntimeError(f"round {self._open.index} is still open: call end_round() before begin_round()")
        run, n, k = self._run, self.num_samples, self._run.round
        if run.phase == "start":
            if self.is_prac:
                self.sampler.begin_round(k)  # type: ignore[union-attr]
            if k == 0:
                run.origin = self._origin()  # what round 0 starts from, for searches that start from it
            run.round_start = snapshot(self.model)
            if k == 0 and self.rewind_step == 0:
                run.rewind_state = run.round_start
            run.masks = _current_masks(self.parameters, self.names) if k > 0 else None
            run.model = _state(self.model)
            run.phase = "train"
            if self.directory is not None:
                run.sets[k] = self.sampler.indices if self.is_prac else torch.arange(n)  # type: ignore[union-attr]
                if self._writer:
                    atomic_save(dict(run.sets), self.directory / "prac_sets.pt", fsync=False)
            if k == 0:
                self._checkpoint()
            # rounds >= 1: the folder already holds this round's start (saved by the previous round's
            # end, or by an extension on resume), and a resume from it redoes exactly this: no rewrite
        # (a round cut short starts again from its start: __init__ loaded the round's starting weights)
        set_size = len(self.sampler)  # type: ignore[arg-type]
        w = self.world_size
        # the batching rule refuses an epoch of one sample (per process), naming the set
        batch_steps(set_size, self.schedule.batch_size, w, what=f"round {k}'s {'PrAC set' if self.is_prac else 'training set'}")
        ratio = set_size / n
        scaled = self.prac.scale_schedule and self.is_prac and ratio < 1.0
        time_ratio, floored = _time_ratio(self.schedule, n, set_size, float(self.prac.min_step_fraction), w) if scaled else (1.0, False)
        round_sched = self.schedule.scaled(time_ratio) if scaled else self.schedule
        spe = round_sched.steps_per_epoch(set_size, w)
        start = 0 if k == 0 else min(int(round(self.rewind_epochs * time_ratio * spe)), round_sched.total_steps(set_size, w) - 1)
        stats_type = DistributedStats if self.world_size > 1 else SampleStats
        stats = stats_type(n, self._device()) if self.adaptive else None
        self._open = Round(self, k, round_sched, start, set_size, floored, stats)
        return self._open

    def end_round(self, *, val_acc: float | None = None, val_loss: float | None = None,
                  test_acc: float | None = None, test_loss: float | None = None, **metrics: Any) -> dict[str, Any]:
        """Close the open round of your own loop: keep its best-validation weights (if
        ``val_acc`` went to :meth:`Round.end_epoch`), record it, pick the next PrAC set, save
        the round's ticket, prune and rewind for the next round, checkpoint.

        Args:
            val_acc, val_loss: the validation numbers of the weights kept (leave out when
                :meth:`Round.end_epoch` got them: the best epoch's are used).
            test_acc, test_loss: test numbers of the kept weights (measure them after
                :meth:`Round.restore_best`).
            metrics: other JSON-able numbers, stored in the history entry under ``metrics``.

        Returns:
            The round's history entry.

        Raises:
            RuntimeError: no round is open, or it ended before any step.
            ValueError: ``val_acc`` given here and to :meth:`Round.end_epoch`.
        """
        rnd = self._open
        if rnd is None:
            raise RuntimeError("no round is open: call begin_round() first")
        if rnd.steps == 0:
            raise RuntimeError(
                f"round {rnd.index} ended before any step: train it and call rnd.report(indices, logits, targets) "
                f"after every optimizer step before end_round()"
            )
        if val_acc is not None and rnd._best is not None:
            raise ValueError("val_acc was reported to end_epoch(): the best epoch's is used; do not pass it to end_round()")
        kept = rnd.restore_best()
        best = rnd._best if kept is not None else None
        last = rnd.log[-1] if rnd.log else {}
        samples = int(_dist.all_reduce_sum(torch.tensor([float(rnd.samples)], dtype=torch.float64), self._device())[0])
        measured = {
            "steps": rnd.steps, "samples": samples, "start_step": rnd.start_step, "end_step": rnd.step,
            "epochs_trained": round(rnd.steps / rnd.steps_per_epoch, 4),
            "val_acc": best[0] if best else (float(val_acc) if val_acc is not None else last.get("val_acc")),
            "val_loss": best[1] if best else (float(val_loss) if val_loss is not None else last.get("val_loss")),
            "test_acc": float(test_acc) if test_acc is not None else None,
            "test_loss": float(test_loss) if test_loss is not None else None,
            "best_epoch": kept if kept is not None else (last.get("epoch")),
            "train_acc": last.get("train_acc"),
            "early_stopped": rnd.stopped,
            "precision": None, "channels_last": None,
            "wall_time_s": time.perf_counter() - rnd._started,
        }
        if metrics:
            measured["metrics"] = json.loads(json.dumps(metrics, default=float))
        return self._close(rnd, measured)

    def __iter__(self) -> Iterator[Round]:
        """``for rnd in search``: :meth:`begin_round` each round and :meth:`end_round` after
        the loop body (unless the body closed it)."""
        while not self.done:
            rnd = self.begin_round()
            yield rnd
            if self._open is rnd:
                self.end_round()

    def state_dict(self) -> dict[str, Any]:
        """The search's state (what ``checkpoint_dir`` holds), for frameworks that save their own."""
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "fingerprint": self._fingerprint,
                **{k: getattr(self._run, k) for k in self._run.__dataclass_fields__}}

    # ------------------------------------------------------------------ internals
    def _device(self) -> torch.device:
        """The engine's device, or for own loops wherever the model is now."""
        if self._engine:
            return self.device
        return next(iter(self.model.parameters()), torch.empty(0, device=self.device)).device

    def _stepped(self, rnd: Round) -> None:
        if rnd.index == 0 and rnd.step == self.rewind_step:
            self._run.rewind_state = snapshot(self.model)

    def _set_mask(self) -> torch.Tensor:
        member = torch.zeros(self.num_samples, dtype=torch.bool)
        member[self.sampler.indices if self.is_prac else torch.arange(self.num_samples)] = True  # type: ignore[union-attr]
        return member

    def _predict(self, data: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Predictions on the whole training split; under torch.distributed each rank predicts a
        slice and the slices are gathered, so every rank has them all."""
        kwargs = dict(batch_size=max(256, self.schedule.batch_size), num_workers=self.runtime.num_workers,
                      device=self._device(), precision=self.precision, channels_last=self.channels_last)
        if self.world_size > 1 and isinstance(data, Dataset):
            part, _ = _dist.shard_of(data)
            if len(part):  # type: ignore[arg-type]
                preds, targets = predict(self.model, part, **kwargs)  # type: ignore[arg-type]
            else:
                preds = targets = torch.empty(0, dtype=torch.long)
            total = len(data)  # type: ignore[arg-type]
            return _dist.gather_predictions(preds, total), _dist.gather_predictions(targets, total)
        return predict(self.model, data, **kwargs)  # type: ignore[arg-type]

    def _checkpoint(self, trainer: dict[str, Any] | None = None, *, fsync: bool = True) -> None:
        """Save the run to ``checkpoint_dir/state.pt`` (rank 0; nothing without a folder).

        ``trainer`` is the engine's state at an epoch's end (None at round boundaries). The file
        is flushed to the disk (``fsync``) unless ``fsync=False``: an unflushed rename can leave
        an empty file after a power loss, so the state a resume reads is always flushed (the
        ``checkpoint_every`` default keeps that to round ends and one save per 5 minutes)."""
        run = self._run
        run.trainer = trainer
        self._since_checkpoint = (time.monotonic(), 0)
        if self.directory is None or not self._writer:
            return
        run.sampler = self.sampler.state_dict() if self.is_prac else None  # type: ignore[union-attr]
        generator = getattr(self.sampler, "generator", None)
        run.sampler_generator = generator.get_state() if isinstance(generator, torch.Generator) else None
        metrics = self.directory / METRICS_FILE
        run.metrics_bytes = metrics.stat().st_size if metrics.is_file() else 0
        _save_run(run, self._fingerprint, self.directory, fsync=fsync)
        if trainer is not None and trainer.get("log"):
            self._saved_at = f"round {run.round}, epoch {trainer['log'][-1]['epoch']}"
        else:
            self._saved_at = f"the start of round {run.round}" if run.phase != "done" else "the end of the search"

    def _checkpoint_due(self) -> bool:
        """Whether an epoch's end should save the run (``Runtime.checkpoint_every``); counts the epoch."""
        since, epochs = getattr(self, "_since_checkpoint", (time.monotonic(), 0))
        epochs += 1
        self._since_checkpoint = (since, epochs)
        if self.directory is None:
            return False
        kind, every = parse_checkpoint_every(self.runtime.checkpoint_every)
        if kind == "epochs":
            return epochs >= every
        if kind == "seconds":
            return time.monotonic() - since >= every
        return False

    def _engine_epoch(self, index: int, entry: Mapping[str, Any], trainer: Any, *, force: bool = False) -> bool:
        """The engine's end of an epoch of round ``index``: its ``metrics.jsonl`` line, then a
        checkpoint when one is due (``force``: now, e.g. before a callback stops the run).
        Returns whether the run was saved."""
        if not force:
            self._metrics({"kind": "epoch", "round": index, **entry, "epochs": trainer.schedule.epochs,
                           "steps_trained": trainer.steps_taken, "total_steps": trainer.total_steps})
        due = self._checkpoint_due()
        if (force or due) and self.directory is not None and self._writer:  # (no collective: rank 0 alone)
            self._checkpoint({**trainer.state_dict(), "round_epochs": trainer.schedule.epochs})
            return True
        return False

    def _interrupted_message(self) -> str:
        """The line for a Ctrl-C: where the run is safe and how to resume it."""
        if self.directory is None:
            return "interrupted: nothing was saved (no checkpoint_dir); pass checkpoint_dir= to make a run resumable"
        where = getattr(self, "_saved_at", None)
        if where is None:
            return f"interrupted before the first checkpoint in {str(self.directory)!r}: rerunning the same call starts the run"
        return (f"interrupted: the run in {str(self.directory)!r} is safe at its last checkpoint ({where}); "
                f"rerun the same call with checkpoint_dir={str(self.directory)!r} to resume from there")

    def _metrics(self, record: Mapping[str, Any]) -> None:
        """Append one JSON line to ``checkpoint_dir/metrics.jsonl`` (rank 0; no folder: nothing)."""
        if self.directory is None or not self._writer:
            return
        def plain(value: Any) -> Any:  # numbers a loop reports as tensors or numpy scalars; anything else by repr
            try:
                return float(value)
            except (TypeError, ValueError):
                return repr(value)

        line = json.dumps({**record, "time": round(time.time(), 3)}, default=plain)
        with open(self.directory / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def _note(self, text: str) -> None:
        """A progress line: logged at INFO, and printed to stderr unless quiet (rank 0)."""
        log.info(text)
        if not self.runtime.quiet and self.rank == 0:
            from tqdm.auto import tqdm

            tqdm.write(text, file=sys.stderr)

    def _open_folder(self, resumed: bool) -> None:
        """At the start of a search in ``checkpoint_dir``: remove the temporary files of a killed
        write, cut ``metrics.jsonl`` back to the checkpoint (epochs after it run again), and say
        what the folder held."""
        directory, run = self.directory, self._run
        if directory is None or not self._writer:
            return
        stale = remove_stale_temporaries(directory, lambda name: name in _RUN_FILES or _ROUND_TICKET.match(name) is not None)
        if stale:
            self._note(f"note: removed {len(stale)} temporary file(s) left in {str(directory)!r} by an interrupted "
                       f"write ({', '.join(p.name for p in stale)}; only tickets' own '<file>.<8 characters>.tmp' files)")
        metrics = directory / METRICS_FILE
        if metrics.is_file():
            keep = run.metrics_bytes if resumed and run.metrics_bytes is not None else (None if resumed else 0)
            if keep is not None and metrics.stat().st_size > keep:
                with open(metrics, "r+b") as f:
                    f.truncate(keep)
        if not resumed:
            return
        trained = run.trainer is not None and bool(run.trainer.get("log"))
        self._saved_at = (f"round {run.round}, epoch {run.trainer['log'][-1]['epoch']}" if trained  # type: ignore[index]
                          else "the end of the search" if self.done else f"the start of round {run.round}")
        if self.done:
            self._note(f"{directory} is finished ({len(run.history)} rounds); returning its ticket "
                       f"({directory / 'ticket.ticket'}); use another checkpoint_dir to search again")
        elif trained:
            done, epochs = run.trainer["log"][-1]["epoch"], run.trainer.get("round_epochs")
            self._note(f"resuming {directory} at round {run.round}, epoch {done + 1}"
                       f"{f' of {epochs}' if epochs else ''} (epochs up to {done} are in its checkpoint)")
        else:
            self._note(f"resuming {directory} at the start of round {run.round} of {self.rounds}")

    def _origin(self) -> dict[str, Any]:
        """What round 0 starts from: a digest of the model's weights, the sampler's identity
        (type, seed, shuffling, generator state) and a digest of round 0's set."""
        return {
            "init": _digest(snapshot(self.model)),
            "sampler": _sampler_identity(self.sampler),
            "set": _digest({"set": _first_set(self.sampler, self.num_samples)}),
        }

    def _select_next(self, k: int, stats: SampleStats) -> dict[str, Any]:
        """Pick round ``k + 1``'s PrAC set from round ``k``'s statistics and the predictions of
        the model as it is now (round ``k``'s kept weights); returns the selection's info."""
        run = self._run
        data = self.train_eval_data if self.train_eval_data is not None else self.train_data
        preds, targets = self._predict(data)
        if k == 0:
            run.dense_predictions, run.targets = preds, targets
            disagree = None
        else:
            if run.dense_predictions is None:
                raise RuntimeError(f"round {k}: the dense network's predictions of round 0 are missing from the run")
            disagree = disagreement(run.dense_predictions, preds)
        chosen = select(stats.scores(), disagree=disagree, targets=run.targets, rule=self.rule,
                        current=self.sampler.indices)  # type: ignore[union-attr]
        if chosen.info["fallback"]:
            log.warning("round %d: the PrAC selection was empty; keeping the current set of %d samples", k, len(self.sampler))  # type: ignore[arg-type]
        self.sampler.update(chosen.indices, info=chosen.info)  # type: ignore[union-attr]
        return dict(chosen.info)

    def _prune_and_rewind(self, k: int) -> None:
        """After round ``k``: prune ``amount`` of the survivors, rewind, and make round ``k + 1`` next."""
        run = self._run
        methods.global_magnitude_prune(self.parameters, float(self.pruning.amount))
        if self.pruning.rewind == "weights":
            rewind_weights(self.model, run.rewind_state)  # type: ignore[arg-type]
        else:
            enforce_masks(self.model)
        run.round, run.phase = k + 1, "start"

    def _save_round_0(self, entry: Mapping[str, Any], stats: dict[str, torch.Tensor] | None) -> None:
        """Record the finished round 0 in ``round_0.pt`` (the model is at its kept weights), so
        that another search can start from it (``start_from``)."""
        if self.directory is None or not self._writer:
            return
        run = self._run
        generator = getattr(self.sampler, "generator", None)
        first = run.sets.get(0)
        record = {
            "format": ROUND0_FORMAT, "version": 1, "config": self._fingerprint,
            "entry": json.dumps({key: v for key, v in entry.items() if key != "next_set"}),
            "model": _state(self.model), "rewind_state": run.rewind_state, "stats": stats,
            "set": first if first is not None else torch.arange(self.num_samples),
            "origin": json.dumps(run.origin) if run.origin is not None else None,
            "sampler_generator": generator.get_state() if isinstance(generator, torch.Generator) else None,
        }
        atomic_save(record, self.directory / ROUND0_FILE)

    def _adopt_round_0(self, source: Path, origin: dict[str, Any]) -> None:
        """Take the finished round 0 of the search saved in ``source`` as this search's round 0
        (``start_from``): checked against its settings and origin, then installed as a finished
        round 0 that :meth:`_advance` continues."""
        record = _load_round_0(source)
        diff = _config_diff(json.loads(record["config"]), json.loads(self._fingerprint), ignore=_AFTER_ROUND_0_KEYS)
        if diff:
            raise ValueError(
                f"start_from={str(source)!r}: its round 0 was trained with other settings than this search's "
                f"(differing: {[key for key, _, _ in diff]}: {_describe_diff(diff, before='there')}); a search can "
                f"start from another's round 0 only when round 0 is the same computation (only rounds, amount, "
                f"rewind and the PrAC options may differ)"
            )
        theirs = json.loads(record["origin"]) if record.get("origin") else None
        if theirs is None:
            log.warning("start_from=%r records no origin of its round 0: its initial weights and data order are not checked", str(source))
        else:
            what = {"init": "the model's initial weights", "sampler": "the sampler (type, seed, shuffling, generator "
                    "state: the data order)", "set": "round 0's training set"}
            differing = [what[key] for key in what if theirs.get(key) != origin.get(key)]
            if differing:
                raise ValueError(
                    f"start_from={str(source)!r}: its round 0 started from other {', '.join(differing)} than this "
                    f"search's: pass the same initial model (e.g. copy.deepcopy of one model) and a sampler with "
                    f"the same seed (for full-data IMP, PrACSampler.replay(train_set, [range(len(train_set))], seed=...) "
                    f"draws the same order as a PrACSampler)"
                )
        if self.adaptive and record.get("stats") is None:
            raise ValueError(
                f"start_from={str(source)!r}: that search recorded no per-sample statistics in round 0 (full-data "
                f"IMP or a replayed sampler), and a PrAC search needs them to pick its first PrAC set. Run the PrAC "
                f"search first and start the full-data search from its checkpoint_dir: round 0 is the same "
                f"computation in both"
            )
        run, n = self._run, self.num_samples
        entry = {key: v for key, v in json.loads(record["entry"]).items() if not key.startswith("stats_") and key != "next_set"}
        run.stats = None
        if self.adaptive:
            stats = SampleStats(n)
            stats.load_state_dict(record["stats"])
            entry.update({f"stats_{key}": v for key, v in stats.summary().items()})
            run.stats = record["stats"]
        self.model.load_state_dict(record["model"])
        run.history = [entry]
        run.rewind_state = record["rewind_state"]
        run.round_start, run.trainer, run.dense_predictions, run.targets = None, None, None, None
        run.origin = {**origin, "start_from": str(source)}  # kept in the run: meta says so after a resume too
        run.masks = _current_masks(self.parameters, self.names)
        run.model = _state(self.model)
        run.round, run.phase = 0, "done"
        if self.is_prac:
            self.sampler.begin_round(0)  # type: ignore[union-attr]
        generator = getattr(self.sampler, "generator", None)
        if isinstance(generator, torch.Generator) and record.get("sampler_generator") is not None:
            generator.set_state(record["sampler_generator"])  # the data order goes on as after their round 0
        self.meta["start_from"] = str(source)
        if self.directory is not None:
            run.sets = {0: torch.as_tensor(record["set"]).long()}
            if self._writer:
                atomic_save(dict(run.sets), self.directory / "prac_sets.pt")
                if self.runtime.keep_round_tickets:
                    _ticket(run.masks, run, self.meta).save(self.directory / "round_0.ticket")
            self._save_round_0(entry, run.stats)
        self._checkpoint()
        message = f"round 0 taken from {str(source)!r} (finished there, not trained again)"
        self._note(message)  # stderr, with the other progress lines

    def _advance(self) -> None:
        """Continue a finished search with more rounds: what its last round skipped because it
        was the last (pick the next PrAC set, prune, rewind), exactly as a run with that many
        rounds from the start would have done; its round ticket is rewritten (its history entry
        gains ``next_set``) and the stale final ticket removed."""
        run = self._run
        k = run.history[-1]["round"]
        started = time.perf_counter()
        if self.adaptive:
            if run.stats is None:
                raise ValueError(
                    f"the finished search in {str(self.directory)!r} kept no per-sample statistics of its last round "
                    f"(it was saved by an older torch-tickets), so its PrAC set for round {k + 1} cannot be picked: run "
                    f"rounds={self.rounds} in another checkpoint_dir (or start_from={str(self.directory)!r} there)"
                )
            stats = SampleStats(self.num_samples)
            stats.load_state_dict(run.stats)
            run.history[-1]["next_set"] = self._select_next(k, stats)
        if self.directory is not None and self._writer:
            if self.runtime.keep_round_tickets:  # its history entry now has next_set, as in a longer run
                _ticket(_current_masks(self.parameters, self.names), run, self.meta).save(self.directory / f"round_{k}.ticket")
            (self.directory / "ticket.ticket").unlink(missing_ok=True)  # no longer the final ticket
        self._prune_and_rewind(k)
        run.stats = None
        run.masks = _current_masks(self.parameters, self.names)
        run.model = _state(self.model)
        run.extra_wall = time.perf_counter() - started  # counted in the next round's wall time
        self._checkpoint()
        message = f"search extended to {self.rounds} rounds: round {k + 1} is next"
        self._note(message)  # stderr, with the other progress lines

    def _close(self, rnd: Round, measured: Mapping[str, Any]) -> dict[str, Any]:
        """Everything after a round's training, for the engine and own loops alike."""
        after_started = time.perf_counter()
        run, n, k = self._run, self.num_samples, rnd.index
        round_masks = _current_masks(self.parameters, self.names)
        entry: dict[str, Any] = {
            "round": k,
            "sparsity": _sparsity(round_masks),
            "set_size": rnd.set_size,
            "set_fraction": rnd.fraction,
            "epochs": rnd.schedule.epochs,
            **{key: v for key, v in measured.items() if key != "wall_time_s"},
        }
        trained_with = rnd._optimizer_record or self.optimizer_record  # own loop: the attached optimizer
        if trained_with is not None:
            entry["optimizer"] = trained_with
        if rnd.floored:
            entry["step_floor"] = float(self.prac.min_step_fraction)
        if self.adaptive and rnd.stats is not None:
            entry.update({f"stats_{key}": v for key, v in rnd.stats.summary().items()})
            if k + 1 < self.rounds:
                entry["next_set"] = self._select_next(k, rnd.stats)
        prev = run.history[-1] if run.history else {"total_steps": 0, "total_samples": 0, "total_wall_time_s": 0.0}
        entry["wall_time_s"] = round(float(measured["wall_time_s"]) + (time.perf_counter() - after_started) + run.extra_wall, 3)
        entry["total_steps"] = prev["total_steps"] + entry["steps"]
        entry["total_samples"] = prev["total_samples"] + entry["samples"]
        entry["total_wall_time_s"] = round(prev["total_wall_time_s"] + entry["wall_time_s"], 3)
        run.history.append(entry)
        if self.directory is not None and self._writer and self.runtime.keep_round_tickets:
            _ticket(round_masks, run, self.meta).save(self.directory / f"round_{k}.ticket")
        keep_stats = rnd.stats.state_dict() if self.adaptive and rnd.stats is not None else None
        if k == 0:
            self._save_round_0(entry, keep_stats)
        run.extra_wall = 0.0
        if k + 1 < self.rounds:
            pruning_started = time.perf_counter()
            self._prune_and_rewind(k)
            run.stats = None
            run.extra_wall = time.perf_counter() - pruning_started  # counted in the next round's wall time
        else:
            run.phase = "done"
            run.stats = keep_stats  # a later run with more rounds picks the next set from them
        run.masks = _current_masks(self.parameters, self.names)
        run.model = _state(self.model)
        if self.world_size > 1:  # one all-reduce: the ranks agree on everything the next round starts from
            _dist.check_identical({
                "masks": _dist.mask_checksum(run.masks),
                "PrAC set": float(_dist.mask_checksum({"set": self._set_mask()})),
                "schedule position": float(entry["end_step"]),
                "steps": float(entry["steps"]),
                "weights": _dist._weight_checksum(self.model),
            }, self._device(), where=f"after round {k}")
        self._metrics({"kind": "round", **entry})  # before the checkpoint, which records the file's length
        self._checkpoint()
        if run.phase == "done" and self._writer:
            _finish(run, self.meta, self.directory)  # the final ticket exists before callbacks run
        rnd.closed = True
        self._open = None
        opt = rnd._optimizer() if rnd._optimizer is not None else None
        if opt is not None:
            self._used_optimizers.add(opt)
        self._note(_summary(entry, n))
        return entry

    def __repr__(self) -> str:
        state = "done" if self.done else f"round {self.round} of {self.rounds}"
        return f"TicketSearch({type(self.model).__name__}, {type(self.sampler).__name__}, {state})"


def _finish(run: _Run, base_meta: Mapping[str, Any], directory: Path | None) -> Ticket:
    """The final ticket, saved as ``ticket.ticket`` in ``directory`` if not there yet."""
    ticket = _ticket(run.masks, run, base_meta)  # type: ignore[arg-type]
    if directory is not None and not (directory / "ticket.ticket").is_file():
        ticket.save(directory / "ticket.ticket")
    return ticket


def _summary(entry: Mapping[str, Any], n: int) -> str:
    def pct(x: Any) -> str:
        return "-" if x is None else f"{100 * x:.2f}%"

    return (
        f"round {entry['round']}: sparsity {pct(entry['sparsity'])}, set {entry['set_size']:,}/{n:,} "
        f"({pct(entry['set_fraction'])}), {entry['epochs']} epochs, {entry['steps']:,} steps trained "
        f"(schedule step {entry['start_step']:,} to {entry['end_step']:,}; search total {entry['total_steps']:,}), "
        f"val {pct(entry['val_acc'])}, test {pct(entry['test_acc'])}, "
        f"{entry['wall_time_s']:.1f}s"
    )


def _ticket(found: dict[str, torch.Tensor], run: _Run, base_meta: Mapping[str, Any]) -> Ticket:
    """The ticket of the last finished round: its masks, the weights it started from
    (round 0: the rewind point), the history so far."""
    k = run.history[-1]["round"]
    start = run.rewind_state if k == 0 else run.round_start
    state = None
    if start is not None:
        state = {key: (v * found[key].to(v.dtype) if key in found else v) for key, v in start.items()}
    return Ticket(dict(found), state, list(run.history), {**base_meta, "round": k})
