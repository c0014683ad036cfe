"""Per-sample statistics of PrAC-guided IMP: :class:`SampleStats` and, for many processes,
:class:`DistributedStats`. The selection of the next PrAC set from them is in
:mod:`tickets.prac.rules`.

Two signals, as in Zhang et al. (ICML 2021):

* **Hard to memorize** (forgetting statistics, Toneva et al. 2019): :class:`SampleStats`
  records, inside the training step that already runs, whether each sample's train-mode
  prediction (augmented input, before the optimizer step) was right. A *forgetting event*
  is a right-to-wrong change between two consecutive times the sample was shown. A sample
  never predicted right is *never learned* and gets the highest score.
* **Easy to forget under pruning** (pruning-identified exemplars, Hooker et al.):
  :func:`tickets.training.evaluation.predict` the whole training split, without
  augmentation, in eval mode, with the dense model of round 0 and with the current pruned
  model; :func:`tickets.prac.scores.disagreement` marks the samples whose argmax predictions
  differ.

:func:`tickets.prac.rules.select` takes the union (:class:`~tickets.prac.rules.SelectionRule`
for the variants: score threshold, top fraction, per-class balance, and what to do with an
empty selection).

Recording costs a few vectorized tensor operations per batch on preallocated tensors on the
model's device (no Python loop over samples, no host synchronization).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from tickets.parallel import _comm_device, is_active

__all__ = ['EmptySelectionError', 'SampleStats', 'DistributedStats']


_NOT_SEEN = -1


class EmptySelectionError(RuntimeError):
    """The PrAC selection chose no sample (and the rule says ``empty="error"``)."""


class SampleStats:
    """Per-sample correctness record of one round (reset when a round starts).

    Per sample it keeps: the last recorded correctness (or "not seen"), the number of
    forgetting events (right then wrong), whether it was ever right, and how many times it
    was shown. :meth:`update` is called once per training batch with the batch's sample
    indices and the train-mode logits.

    Example::

        stats = SampleStats(len(train_set), device="cuda")
        for x, y, idx in loader:                    # IndexedDataset(train_set)
            logits = model(x); loss = F.cross_entropy(logits, y)
            stats.update(idx, logits, y)            # before optimizer.step()

    Args:
        num_samples: size of the full training split (indices are positions in it).
        device: where the tensors live (the model's device avoids copies).
    """

    def __init__(self, num_samples: int, device: torch.device | str | None = None) -> None:
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int; got {num_samples!r}")
        self.num_samples = num_samples
        self.device = torch.device(device or "cpu")
        self.last_correct = torch.full((num_samples,), _NOT_SEEN, dtype=torch.int8, device=self.device)
        self.forgetting_counts = torch.zeros(num_samples, dtype=torch.int32, device=self.device)
        self.ever_correct = torch.zeros(num_samples, dtype=torch.bool, device=self.device)
        self.times_seen = torch.zeros(num_samples, dtype=torch.int32, device=self.device)

    def reset(self) -> None:
        """Forget everything (a new round starts)."""
        self.last_correct.fill_(_NOT_SEEN)
        self.forgetting_counts.zero_()
        self.ever_correct.zero_()
        self.times_seen.zero_()

    def to(self, device: torch.device | str) -> SampleStats:
        """Move the record to ``device`` (in place); returns self."""
        self.device = torch.device(device)
        for name in ("last_correct", "forgetting_counts", "ever_correct", "times_seen"):
            setattr(self, name, getattr(self, name).to(self.device))
        return self

    @torch.no_grad()
    def update(self, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Record one batch: ``indices`` (positions in the training split), the train-mode
        ``logits`` (``[batch, classes]``) and the integer ``targets``.

        Vectorized; no host synchronization. A sample shown twice in one batch (sampling
        with replacement) is recorded once.
        """
        idx = indices.to(self.device, non_blocking=True).long()
        correct = logits.detach().argmax(dim=1).eq(targets.to(logits.device)).to(self.device)
        self.record(idx, correct)

    @torch.no_grad()
    def record(self, indices: torch.Tensor, correct: torch.Tensor) -> None:
        """Record precomputed correctness (bool per sample) for ``indices``."""
        previous = self.last_correct[indices]
        forgot = (previous == 1) & ~correct
        self.forgetting_counts.index_add_(0, indices, forgot.to(torch.int32))
        self.ever_correct[indices] |= correct
        self.times_seen.index_add_(0, indices, torch.ones_like(indices, dtype=torch.int32))
        self.last_correct[indices] = correct.to(torch.int8)

    # ------------------------------------------------------------------ summaries
    @property
    def seen(self) -> torch.Tensor:
        """Bool per sample: shown at least once this round."""
        return self.times_seen > 0

    @property
    def never_learned(self) -> torch.Tensor:
        """Bool per sample: shown this round but never predicted right."""
        return self.seen & ~self.ever_correct

    def scores(self) -> torch.Tensor:
        """Forgetting score per sample (``int64``, on CPU): the number of forgetting events;
        never-learned samples get ``max + 1`` (always ranked first); unseen samples ``-1``."""
        counts = self.forgetting_counts.long().cpu()
        top = int(counts.max()) + 1 if counts.numel() else 1
        score = counts.clone()
        score[self.never_learned.cpu()] = top
        score[~self.seen.cpu()] = -1
        return score

    def summary(self) -> dict[str, int]:
        """Counts for the history: seen, forgotten at least once, never learned."""
        seen = self.seen
        return {
            "seen": int(seen.sum()),
            "forgotten": int((self.forgetting_counts > 0).sum()),
            "never_learned": int(self.never_learned.sum()),
            "forgetting_events": int(self.forgetting_counts.sum()),
        }

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, torch.Tensor]:
        """The four per-sample tensors (CPU copies) for a checkpoint."""
        return {
            "last_correct": self.last_correct.cpu().clone(),
            "forgetting_counts": self.forgetting_counts.cpu().clone(),
            "ever_correct": self.ever_correct.cpu().clone(),
            "times_seen": self.times_seen.cpu().clone(),
        }

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore from :meth:`state_dict` (same ``num_samples``). The ``"scores"`` entry of a
        :class:`tickets.prac.scores.ScoreRecord`'s state (its other scores) is not this record's."""
        for name, value in state.items():
            if name == "scores":
                continue
            target = getattr(self, name)
            if value.shape != target.shape:
                raise ValueError(
                    f"saved statistics {name!r} have {value.numel()} entries; this record has "
                    f"{target.numel()}: they were saved for another data set"
                )
            target.copy_(value)


class DistributedStats(SampleStats):
    """Per-sample statistics of a round, combined over the ranks after every epoch.

    Each rank records its batches into an epoch buffer; :meth:`flush` (end of every epoch,
    partial ones included) combines the buffers of all ranks with one all-reduce and applies
    the epoch to the record, so the record is the same on every rank and the same as one
    process's when each sample is shown once per epoch (a padded sample shown on two ranks
    counts once, right if either rank got it right). Forgetting events between epochs seen
    by different ranks are therefore counted.
    """

    def __init__(self, num_samples: int, device: torch.device | str | None = None) -> None:
        super().__init__(num_samples, device)
        self._epoch = torch.full((num_samples,), -1, dtype=torch.int32, device=self.device)

    @torch.no_grad()
    def record(self, indices: torch.Tensor, correct: torch.Tensor) -> None:
        idx = indices.to(self.device).long()
        self._epoch[idx] = torch.maximum(self._epoch[idx], correct.to(self.device).to(torch.int32))

    @torch.no_grad()
    def flush(self) -> None:
        """Combine this epoch's records of all ranks and apply them (a collective call)."""
        combined = self._epoch
        if is_active():
            combined = self._epoch.to(_comm_device(self.device), copy=True)
            dist.all_reduce(combined, op=dist.ReduceOp.MAX)
            combined = combined.to(self.device)
        seen = (combined >= 0).nonzero().flatten()
        if seen.numel():
            super().record(seen, combined[seen] == 1)
        self._epoch.fill_(-1)

    def reset(self) -> None:
        super().reset()
        self._epoch.fill_(-1)

    def to(self, device: torch.device | str) -> DistributedStats:
        super().to(device)
        self._epoch = self._epoch.to(self.device)
        return self
