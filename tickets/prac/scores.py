"""Per-sample scores: what a selection rule ranks the training samples by.

A score is built for the training split (one value per sample, indexed by position in it)
and gets its information in one or more of three ways, which its class declares:

* ``needs_logits``: it sees every reported train-mode batch of the round
  (:meth:`SampleScore.observe` with the batch's sample indices, logits and targets), in the
  engine's training step and in :meth:`tickets.Round.report` alike, and closes each epoch in
  :meth:`SampleScore.flush`, where the records of all processes are combined under
  ``torch.distributed`` (one all-reduce per epoch, none per step);
* ``needs_predictions``: it uses the one extra pass after the round (the argmax predictions
  of the model on the whole split, in eval mode, as the disagreement side of the PrAC set
  does), handed to :meth:`SampleScore.values` in its :class:`ScoreContext`;
* neither: it is computed from the context alone (the forgetting statistics the round
  recorded anyway, a seed).

:meth:`SampleScore.values` returns a ``float64`` tensor on the CPU, one value per sample,
**higher = harder**, ``NaN`` = no value (a sample the score knows nothing about). Scores with
state keep it in :meth:`SampleScore.state_dict` / :meth:`SampleScore.load_state_dict`: the
search saves it in the run folder's checkpoints and a resume continues it exactly.

The scores (:data:`SCORES`, by name; add one with :func:`register_score`):

* ``"forgetting"`` (:class:`Forgetting`): forgetting events during the round, never-learned
  samples on top (Toneva et al. 2019; the PrAC paper's hard-to-memorize side), from the
  :class:`tickets.SampleStats` every PrAC round records;
* ``"disagreement"`` (:class:`Disagreement`): 1 where the dense (round 0) and the current
  pruned model predict different classes, else 0 (Hooker et al.; the PrAC paper's
  easy-to-forget side);
* ``"el2n"`` (:class:`EL2N`): the L2 norm of ``softmax(logits) - one_hot(target)`` (Paul et
  al. 2021), averaged over the round's epochs (or its first ``first_epochs``);
* ``"random"`` (:class:`RandomScore`): uniform values drawn from a seed and the round, for
  ablations.

The per-round record of a search is :func:`new_record`: the forgetting statistics, plus the
scores that need the batches' logits (a :class:`ScoreRecord`) when a rule asks for one.
Without such a score it is a plain :class:`tickets.SampleStats` (or :class:`DistributedStats`),
so the paper's rule records exactly what it always did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar
import torch
import torch.distributed as dist
from tickets.parallel import _comm_device, is_active
from tickets.data.sampling import _seed_for
from tickets.prac.stats import DistributedStats, SampleStats

__all__ = [
    'ScoreContext', 'SampleScore', 'Forgetting', 'Disagreement', 'EL2N', 'RandomScore', 'SCORES', 'register_score',
    'ScoreRecord', 'new_record', 'disagreement',
]


def disagreement(dense_predictions: torch.Tensor, pruned_predictions: torch.Tensor) -> torch.Tensor:
    """Bool per sample: the dense (round 0) and the pruned model predict different classes.

    Args:
        dense_predictions: argmax predictions of the dense model, from :func:`predict`.
        pruned_predictions: those of the current pruned model on the same samples.
    """
    if dense_predictions.shape != pruned_predictions.shape:
        raise ValueError(
            f"the two prediction vectors differ in length ({dense_predictions.numel()} vs "
            f"{pruned_predictions.numel()}): predict both on the same full training split"
        )
    return dense_predictions.ne(pruned_predictions)


@dataclass(frozen=True)
class ScoreContext:
    """What a score and a rule know when the next set is chosen, after round ``round``.

    Attributes:
        round: the round just trained (its scores pick round ``round + 1``'s set).
        num_samples: the size of the training split.
        forgetting: the round's forgetting scores (:meth:`tickets.SampleStats.scores`: int64,
            ``-1`` = not shown this round), or None.
        predictions: argmax predictions of the current model on the split (the extra pass),
            or None when no score asked for the pass.
        dense_predictions: those of the dense model of round 0 (None in round 0).
        targets: the class label of every sample, or None when not known.
        current: the current set (sorted indices), kept by a rule's empty-selection fallback.
        step_fraction: ``fn(set_size) -> float``: the optimizer steps the next round trains on
            a set of that size, as a fraction of a full round's (on every sample, unscaled,
            from the rewind point); None outside a search.
    """

    round: int
    num_samples: int
    forgetting: torch.Tensor | None = None
    predictions: torch.Tensor | None = None
    dense_predictions: torch.Tensor | None = None
    targets: torch.Tensor | None = None
    current: torch.Tensor | None = None
    step_fraction: Callable[[int], float] | None = None


class SampleScore:
    """One per-sample score of the training split (see the module's text for the contract).

    Subclasses set :attr:`name` and the flags, and override :meth:`values` (and, for a score
    with state, :meth:`observe`, :meth:`flush`, :meth:`state_dict`, :meth:`load_state_dict`).

    Args:
        num_samples: the size of the training split (indices are positions in it).
        device: where per-batch state lives (the model's device avoids copies).
        distributed: combine the records of all processes in :meth:`flush` (a collective call
            under an active ``torch.distributed`` process group).
    """

    name: ClassVar[str] = ""
    needs_logits: ClassVar[bool] = False        # observe() gets every reported train-mode batch
    needs_predictions: ClassVar[bool] = False   # values() needs the extra pass's predictions
    carries: ClassVar[bool] = False             # a sample not shown this round keeps an earlier round's value

    def __init__(self, num_samples: int, device: torch.device | str | None = None, *, distributed: bool = False) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int; got {num_samples!r}")
        self.num_samples = num_samples
        self.device = torch.device(device or "cpu")
        self.distributed = bool(distributed)

    def observe(self, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Record one train-mode batch: sample ``indices``, ``logits`` ``[batch, classes]``, labels."""

    def flush(self) -> None:
        """Close an epoch (combining the processes' records when ``distributed``)."""

    def values(self, context: ScoreContext) -> torch.Tensor:
        """``float64`` per sample on the CPU: higher = harder, ``NaN`` = no value."""
        raise NotImplementedError

    def carry(self, state: Mapping[str, Any]) -> None:
        """Start from the :meth:`state_dict` of the previous round's score (``carries`` scores)."""

    def reset(self) -> None:
        """Forget what this round recorded (a carried value stays)."""

    def summary(self) -> dict[str, float | int]:
        """JSON-able numbers for the round's history entry (``stats_<key>``)."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """The score's state (CPU tensors) for a checkpoint."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict` (same ``num_samples``)."""

    def to(self, device: torch.device | str) -> SampleScore:
        """Move per-batch state to ``device`` (in place); returns self."""
        self.device = torch.device(device)
        return self

    def _nan(self) -> torch.Tensor:
        return torch.full((self.num_samples,), float("nan"), dtype=torch.float64)


class Forgetting(SampleScore):
    """Forgetting events of the round (right, then wrong the next time the sample was shown);
    never-learned samples get the top value; samples not shown this round have no value. The
    round's :class:`tickets.SampleStats` records them (every PrAC round does)."""

    name = "forgetting"

    def values(self, context: ScoreContext) -> torch.Tensor:
        if context.forgetting is None:
            raise ValueError("the forgetting score needs the round's statistics (context.forgetting)")
        scores = context.forgetting.cpu().double()
        return torch.where(scores < 0, float("nan"), scores)


class Disagreement(SampleScore):
    """1 where the dense model of round 0 and the current pruned model predict different
    classes on the extra pass, 0 where they agree; no value in round 0 (no pruned model yet)."""

    name = "disagreement"
    needs_predictions = True

    def values(self, context: ScoreContext) -> torch.Tensor:
        if context.dense_predictions is None or context.predictions is None:
            return self._nan()
        return disagreement(context.dense_predictions.cpu(), context.predictions.cpu()).double()


class RandomScore(SampleScore):
    """Uniform values in ``[0, 1)`` drawn from ``seed`` and the round (the same on every process
    and machine): ranking by it is a random choice, for ablations.

    Args:
        seed: the seed (an int); round ``k``'s values come from a generator seeded by ``(seed, k)``.
    """

    name = "random"

    def __init__(self, num_samples: int, device: torch.device | str | None = None, *, distributed: bool = False,
                 seed: int = 0) -> None:
        super().__init__(num_samples, device, distributed=distributed)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {seed!r}")
        self.seed = seed

    def values(self, context: ScoreContext) -> torch.Tensor:
        generator = torch.Generator().manual_seed(_seed_for(self.seed, context.round))
        return torch.rand(self.num_samples, generator=generator, dtype=torch.float64)


class EL2N(SampleScore):
    """EL2N (Paul, Ganguli, Dziugaite 2021): ``|| softmax(logits) - one_hot(target) ||_2`` of
    each train-mode prediction, averaged over the epochs of the round that showed the sample
    (a sample shown several times in one epoch counts with the mean of those times).

    By default every epoch of the round counts: the average over training is a learning-speed
    measure that ranks like the score of one early epoch but with less noise (Paul et al.
    average over ten runs for the same reason; a round's epochs are our cheap ensemble), and a
    PrAC round is short (its first epochs are most of it). ``first_epochs=E`` keeps only the
    round's first ``E`` epochs (the partial epoch after a mid-epoch rewind point counts as
    one), Paul et al.'s early-training score. A sample not shown this round keeps its value
    from the latest round that showed it (round 0 shows every sample), so the score covers the
    whole split from round 1 on.

    Cost: a softmax, a scatter and a norm per batch on the logits the step computed, two
    ``index_add_`` into preallocated ``float64`` tensors; no host synchronization. Under
    ``torch.distributed`` one all-reduce (sum) per epoch combines the processes' records.

    Args:
        first_epochs: average over the round's first this many epochs only (an int >= 1);
            None = all of them.
    """

    name = "el2n"
    needs_logits = True
    carries = True

    def __init__(self, num_samples: int, device: torch.device | str | None = None, *, distributed: bool = False,
                 first_epochs: int | None = None) -> None:
        super().__init__(num_samples, device, distributed=distributed)
        if first_epochs is not None and (isinstance(first_epochs, bool) or not isinstance(first_epochs, int)
                                         or first_epochs < 1):
            raise ValueError(f"first_epochs must be an int >= 1 (epochs of the round) or None (all); got {first_epochs!r}")
        self.first_epochs = first_epochs
        n = num_samples
        self._epoch = torch.zeros(2, n, dtype=torch.float64, device=self.device)  # this epoch: sum of norms, times shown
        self.total = torch.zeros(n, dtype=torch.float64, device=self.device)      # sum over epochs of the epoch means
        self.epochs_seen = torch.zeros(n, dtype=torch.int32, device=self.device)  # epochs that showed the sample
        self.latest = torch.full((n,), float("nan"), dtype=torch.float64)         # earlier rounds' values (CPU)
        self.epoch = 0                                                            # epochs closed this round

    @torch.no_grad()
    def observe(self, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        if self.first_epochs is not None and self.epoch >= self.first_epochs:
            return
        probs = torch.softmax(logits.detach().float(), dim=1)
        labels = targets.to(probs.device).long().unsqueeze(1)
        error = probs.scatter_add(1, labels, torch.full(labels.shape, -1.0, dtype=probs.dtype, device=probs.device))
        norms = torch.linalg.vector_norm(error, dim=1).to(self.device, torch.float64)
        idx = indices.to(self.device).long()
        self._epoch[0].index_add_(0, idx, norms)
        self._epoch[1].index_add_(0, idx, torch.ones_like(norms))

    @torch.no_grad()
    def flush(self) -> None:
        epoch = self._epoch
        if self.distributed and is_active():
            epoch = self._epoch.to(_comm_device(self.device), copy=True)
            dist.all_reduce(epoch, op=dist.ReduceOp.SUM)
            epoch = epoch.to(self.device)
        shown = epoch[1] > 0
        self.total += torch.where(shown, epoch[0] / epoch[1].clamp(min=1.0), 0.0)
        self.epochs_seen += shown.to(torch.int32)
        self._epoch.zero_()
        self.epoch += 1

    @staticmethod
    def _merged(total: torch.Tensor, epochs_seen: torch.Tensor, latest: torch.Tensor) -> torch.Tensor:
        mean = total.cpu() / epochs_seen.cpu().clamp(min=1).double()
        return torch.where(epochs_seen.cpu() > 0, mean, latest.cpu())

    def values(self, context: ScoreContext) -> torch.Tensor:
        return self._merged(self.total, self.epochs_seen, self.latest)

    def carry(self, state: Mapping[str, Any]) -> None:
        self.latest = self._merged(state["total"], state["epochs_seen"], state["latest"]).clone()

    def reset(self) -> None:
        self._epoch.zero_()
        self.total.zero_()
        self.epochs_seen.zero_()
        self.epoch = 0

    def summary(self) -> dict[str, float | int]:
        seen = self.epochs_seen > 0
        count = int(seen.sum())
        mean = float((self.total[seen] / self.epochs_seen[seen].double()).mean()) if count else float("nan")
        return {"el2n_seen": count, "el2n_mean": round(mean, 6) if count else None}  # type: ignore[dict-item]

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_buffer": self._epoch.cpu().clone(), "total": self.total.cpu().clone(),
                "epochs_seen": self.epochs_seen.cpu().clone(), "latest": self.latest.clone(), "epoch": self.epoch,
                "first_epochs": self.first_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`.

        Raises:
            ValueError: the state was saved for another data set, or averaged over other
                epochs (another ``first_epochs``: its values would not be this score's).
        """
        if "first_epochs" in state and state["first_epochs"] != self.first_epochs:
            def span(e: int | None) -> str:
                return "all epochs of the round" if e is None else f"the round's first {e} epoch(s)"

            raise ValueError(
                f"the saved EL2N record averages over {span(state['first_epochs'])} (first_epochs="
                f"{state['first_epochs']!r}); this one over {span(self.first_epochs)} (first_epochs="
                f"{self.first_epochs!r}): its values are not this score's; record it with the same first_epochs"
            )
        if torch.as_tensor(state["total"]).numel() != self.num_samples:
            raise ValueError(
                f"the saved EL2N record has {torch.as_tensor(state['total']).numel()} entries; this one has "
                f"{self.num_samples}: it was saved for another data set"
            )
        self._epoch.copy_(state["epoch_buffer"])
        self.total.copy_(state["total"])
        self.epochs_seen.copy_(state["epochs_seen"])
        self.latest = torch.as_tensor(state["latest"]).double().cpu().clone()
        self.epoch = int(state["epoch"])

    def to(self, device: torch.device | str) -> EL2N:
        super().to(device)
        self._epoch, self.total, self.epochs_seen = (t.to(self.device) for t in (self._epoch, self.total, self.epochs_seen))
        return self


SCORES: dict[str, type[SampleScore]] = {cls.name: cls for cls in (Forgetting, Disagreement, EL2N, RandomScore)}


def register_score(cls: type[SampleScore], *, replace: bool = False) -> type[SampleScore]:
    """Make a :class:`SampleScore` subclass available by its ``name`` to the rules' ``score=``
    (usable as a class decorator). A score with state and ``needs_logits`` is recorded during
    the round; under ``torch.distributed`` its :meth:`~SampleScore.flush` must combine the
    processes' records so that :meth:`~SampleScore.values` is the same on every process.

    Raises:
        TypeError: not a subclass of :class:`SampleScore`.
        ValueError: an empty name, or a name already taken (``replace=True`` replaces it).
    """
    if not isinstance(cls, type) or not issubclass(cls, SampleScore):
        raise TypeError(f"a score must be a subclass of tickets.prac.scores.SampleScore; got {cls!r}")
    if not isinstance(cls.name, str) or not cls.name:
        raise ValueError(f"{cls.__name__}.name must be a non-empty string (the name rules use)")
    if cls.name in SCORES and not replace:
        raise ValueError(f"a score named {cls.name!r} exists ({SCORES[cls.name].__name__}); pass replace=True to replace it")
    SCORES[cls.name] = cls
    return cls


def score_class(name: str) -> type[SampleScore]:
    """The score class named ``name``; a ValueError lists the valid names."""
    if not isinstance(name, str) or name not in SCORES:
        raise ValueError(f"unknown score {name!r}; valid scores: {sorted(SCORES)} (add one with register_score)")
    return SCORES[name]


# ---------------------------------------------------------------------- the round's record
class ScoreRecord:
    """The per-round record of a search whose rule needs scores seen during training: the
    forgetting statistics (:attr:`forgetting`, a :class:`tickets.SampleStats`, or a
    :class:`DistributedStats` with more than one process) and those scores (:attr:`scores`).

    It stands where a :class:`tickets.SampleStats` stands (``rnd.stats``, the engine's
    ``stats=``): :meth:`record` feeds the forgetting statistics; :meth:`observe` (called when
    :attr:`needs_logits`) the scores; :meth:`flush` closes an epoch of both. Its
    :meth:`state_dict` is the statistics' state plus ``"scores": {name: state}``.
    """

    needs_logits = True

    def __init__(self, forgetting: SampleStats, scores: Mapping[str, SampleScore]) -> None:
        self.forgetting = forgetting
        self.scores_by_name = dict(scores)

    @property
    def device(self) -> torch.device:
        return self.forgetting.device

    @property
    def num_samples(self) -> int:
        return self.forgetting.num_samples

    @property
    def seen(self) -> torch.Tensor:
        """Bool per sample: shown at least once this round."""
        return self.forgetting.seen

    @property
    def never_learned(self) -> torch.Tensor:
        """Bool per sample: shown this round but never predicted right."""
        return self.forgetting.never_learned

    def record(self, indices: torch.Tensor, correct: torch.Tensor) -> None:
        """The forgetting statistics' :meth:`tickets.SampleStats.record`."""
        self.forgetting.record(indices, correct)

    def observe(self, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Hand one train-mode batch to every score."""
        for score in self.scores_by_name.values():
            score.observe(indices, logits, targets)

    def flush(self) -> None:
        """Close an epoch: the statistics' and every score's (collective calls when distributed)."""
        if hasattr(self.forgetting, "flush"):
            self.forgetting.flush()  # type: ignore[attr-defined]
        for score in self.scores_by_name.values():
            score.flush()

    def scores(self) -> torch.Tensor:
        """The forgetting scores (:meth:`tickets.SampleStats.scores`)."""
        return self.forgetting.scores()

    def values(self, name: str, context: ScoreContext) -> torch.Tensor:
        """The values of the recorded score ``name``."""
        return self.scores_by_name[name].values(context)

    def carry(self, previous: Mapping[str, Any]) -> None:
        """Seed the carrying scores from the previous round's :meth:`state_dict`."""
        saved = previous.get("scores") or {}
        for name, score in self.scores_by_name.items():
            if score.carries and name in saved:
                score.carry(saved[name])

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.forgetting.summary())
        for score in self.scores_by_name.values():
            out.update(score.summary())
        return out

    def reset(self) -> None:
        """Forget the round's statistics and the scores' records of the round (carried values stay)."""
        self.forgetting.reset()
        for score in self.scores_by_name.values():
            score.reset()

    def to(self, device: torch.device | str) -> ScoreRecord:
        self.forgetting.to(device)
        for score in self.scores_by_name.values():
            score.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        return {**self.forgetting.state_dict(), "scores": {name: s.state_dict() for name, s in self.scores_by_name.items()}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from :meth:`state_dict`.

        Raises:
            ValueError: the state lacks a score of this record (it was recorded by a search
                whose rule did not need that score), or was saved for another data set.
        """
        saved = state.get("scores") or {}
        missing = [name for name in self.scores_by_name if name not in saved]
        if missing:
            raise ValueError(
                f"the saved statistics hold no record of the score(s) {missing} (they hold "
                f"{sorted(saved) or 'the forgetting statistics only'}): they were recorded by a search whose selection "
                f"rule did not need them"
            )
        self.forgetting.load_state_dict({key: v for key, v in state.items() if key != "scores"})
        for name, score in self.scores_by_name.items():
            score.load_state_dict(saved[name])


def new_record(scores: Mapping[str, Mapping[str, Any]], num_samples: int, device: torch.device | str | None = None, *,
               distributed: bool = False, previous: Mapping[str, Any] | None = None) -> SampleStats | ScoreRecord:
    """A round's record for the scores a rule needs (``{name: constructor options}``).

    The forgetting statistics are always recorded (:class:`tickets.SampleStats`, or
    :class:`DistributedStats` when ``distributed``). Scores with ``needs_logits`` are added in
    a :class:`ScoreRecord`; without any, the statistics themselves are the record.

    Args:
        scores: the score names a rule needs and their options (``rule.scores()``).
        num_samples, device, distributed: as for :class:`SampleScore`.
        previous: the previous round's record state (``state_dict()``): scores that carry
            values over rounds start from it.
    """
    base = (DistributedStats if distributed else SampleStats)(num_samples, device)
    recorded = {name: score_class(name)(num_samples, device, distributed=distributed, **dict(options))
                for name, options in scores.items() if score_class(name).needs_logits}
    if not recorded:
        return base
    record = ScoreRecord(base, recorded)
    if previous is not None:
        record.carry(previous)
    return record
