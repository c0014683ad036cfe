"""Per-sample statistics of PrAC-guided IMP and the selection of the next PrAC set.

Two signals, as in Zhang et al. (ICML 2021):

* **Hard to memorize** (forgetting statistics, Toneva et al. 2019): :class:`SampleStats`
  records, inside the training step that already runs, whether each sample's train-mode
  prediction (augmented input, before the optimizer step) was right. A *forgetting event*
  is a right-to-wrong change between two consecutive times the sample was shown. A sample
  never predicted right is *never learned* and gets the highest score.
* **Easy to forget under pruning** (pruning-identified exemplars, Hooker et al.):
  :func:`predict` the whole training split, without augmentation, in eval mode, with the
  dense model of round 0 and with the current pruned model; :func:`disagreement` marks the
  samples whose argmax predictions differ.

:func:`select` takes the union (:class:`SelectionRule` for the variants: score threshold,
top fraction, per-class balance, and what to do with an empty selection).

Recording costs a few vectorized tensor operations per batch on preallocated tensors on the
model's device (no Python loop over samples, no host synchronization).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "SampleStats",
    "SelectionRule",
    "Selection",
    "EmptySelectionError",
    "predict",
    "disagreement",
    "select",
]

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
        """Restore from :meth:`state_dict` (same ``num_samples``)."""
        for name, value in state.items():
            target = getattr(self, name)
            if value.shape != target.shape:
                raise ValueError(
                    f"saved statistics {name!r} have {value.numel()} entries; this record has "
                    f"{target.numel()}: they were saved for another data set"
                )
            target.copy_(value)


# ---------------------------------------------------------------------- disagreement
def _loader(data: Any, batch_size: int, num_workers: int) -> Iterable[Any]:
    if isinstance(data, DataLoader):
        return data
    if isinstance(data, Dataset):
        from tickets.data import batch_loader

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
    from tickets.training import _autocast, _eval_precision

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


# ---------------------------------------------------------------------- selection
@dataclass(frozen=True)
class SelectionRule:
    """How the next PrAC set is chosen from the statistics.

    Args:
        threshold: keep samples (shown this round) whose forgetting score is above this
            (default 0: forgotten at least once, or never learned). Ignored when
            ``top_fraction`` is set.
        top_fraction: instead of a threshold, keep this fraction (in ``(0, 1]``) of the samples
            shown this round, highest scores first (ties broken by index).
        per_class: apply ``top_fraction`` within each class, so that every class keeps the
            same fraction of its samples (needs labels).
        min_per_class: every class keeps at least this many samples (its highest scores),
            whatever the rule selected; 0 = no minimum.
        use_disagreement: add the samples on which the dense and pruned models disagree
            (the pruning-aware side); False = forgetting statistics only.
        empty: what to do when nothing is selected: ``"error"`` raises
            :class:`EmptySelectionError`; ``"keep"`` keeps the current set for the next round
            (a documented fallback, recorded in the history as ``"fallback": "kept"``).
    """

    threshold: int = 0
    top_fraction: float | None = None
    per_class: bool = False
    min_per_class: int = 0
    use_disagreement: bool = True
    empty: Literal["error", "keep"] = "keep"

    def __post_init__(self) -> None:
        if isinstance(self.threshold, bool) or not isinstance(self.threshold, int) or self.threshold < 0:
            raise ValueError(f"threshold must be an int >= 0 (a forgetting count); got {self.threshold!r}")
        if self.top_fraction is not None and not 0.0 < float(self.top_fraction) <= 1.0:
            raise ValueError(f"top_fraction must be in (0, 1] or None; got {self.top_fraction!r}")
        if self.per_class and self.top_fraction is None:
            raise ValueError("per_class=True needs top_fraction (the fraction every class keeps)")
        if isinstance(self.min_per_class, bool) or not isinstance(self.min_per_class, int) or self.min_per_class < 0:
            raise ValueError(f"min_per_class must be an int >= 0; got {self.min_per_class!r}")
        if self.empty not in ("error", "keep"):
            raise ValueError(f"empty must be 'error' or 'keep'; got {self.empty!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Selection:
    """The outcome of :func:`select`.

    Attributes:
        indices: the next PrAC set (sorted ``LongTensor``), or the current set after an
            ``empty="keep"`` fallback.
        info: JSON-able counts: ``hard`` (selected by forgetting statistics), ``disagree``
            (disagreeing samples), ``added_by_disagreement`` (in the set only because of
            disagreement), ``size``, ``fraction``, ``fallback``.
    """

    indices: torch.Tensor
    info: dict[str, Any]


def _top(scores: torch.Tensor, candidates: torch.Tensor, count: int) -> torch.Tensor:
    """Indices of the ``count`` highest scores among ``candidates`` (ties: lower index first)."""
    if count <= 0 or candidates.numel() == 0:
        return candidates[:0]
    s = scores[candidates]
    # Stable sort on -score keeps index order among ties: deterministic.
    order = torch.sort(-s, stable=True).indices
    return candidates[order[:count]]


def select(
    scores: torch.Tensor,
    *,
    disagree: torch.Tensor | None = None,
    targets: torch.Tensor | None = None,
    rule: SelectionRule | None = None,
    current: torch.Tensor | None = None,
) -> Selection:
    """The next PrAC set: hard-to-memorize samples (by ``rule``) union disagreeing samples.

    Args:
        scores: forgetting score per sample of the full split (:meth:`SampleStats.scores`;
            ``-1`` = not shown this round, never selected by the forgetting side).
        disagree: bool per sample (:func:`disagreement`) or None (round 0, or no pruning side).
        targets: labels per sample, needed for ``per_class`` and ``min_per_class``.
        rule: the selection rule (default :class:`SelectionRule()`: score > 0, union).
        current: the current set, kept by the ``empty="keep"`` fallback.

    Raises:
        EmptySelectionError: nothing selected and ``rule.empty == "error"`` (or no ``current``
            to fall back to).
        ValueError: ``per_class``/``min_per_class`` without ``targets``; mismatched lengths.
    """
    rule = rule or SelectionRule()
    scores = scores.cpu().long()
    n = scores.numel()
    seen = scores >= 0
    hard = torch.zeros(n, dtype=torch.bool)
    if (rule.per_class or rule.min_per_class) and targets is None:
        raise ValueError("per_class and min_per_class need targets (one label per sample)")
    if targets is not None:
        targets = targets.cpu().long()
        if targets.numel() != n:
            raise ValueError(f"targets has {targets.numel()} entries; scores has {n}")
    if rule.top_fraction is None:
        hard = seen & (scores > rule.threshold)
    elif rule.per_class:
        assert targets is not None
        for c in torch.unique(targets).tolist():  # loop over classes, not samples
            members = (seen & (targets == c)).nonzero().flatten()
            keep = _top(scores, members, int(round(rule.top_fraction * members.numel())))
            hard[keep] = True
    else:
        members = seen.nonzero().flatten()
        hard[_top(scores, members, int(round(rule.top_fraction * members.numel())))] = True
    if rule.min_per_class:
        assert targets is not None
        for c in torch.unique(targets).tolist():
            members = (seen & (targets == c)).nonzero().flatten()
            have = int(hard[members].sum())
            if have < rule.min_per_class:
                rest = members[~hard[members]]
                hard[_top(scores, rest, rule.min_per_class - have)] = True
    chosen = hard.clone()
    n_disagree = 0
    if disagree is not None and rule.use_disagreement:
        disagree = disagree.cpu().bool()
        if disagree.numel() != n:
            raise ValueError(f"disagree has {disagree.numel()} entries; scores has {n}")
        chosen |= disagree
        n_disagree = int(disagree.sum())
    info: dict[str, Any] = {
        "hard": int(hard.sum()),
        "disagree": n_disagree,
        "added_by_disagreement": int((chosen & ~hard).sum()),
        "fallback": None,
    }
    indices = chosen.nonzero().flatten()
    if indices.numel() == 0:
        if rule.empty == "error" or current is None:
            raise EmptySelectionError(
                "the PrAC selection is empty: no sample shown this round was forgotten or never "
                f"learned (threshold={rule.threshold}, top_fraction={rule.top_fraction}) and the "
                "dense and pruned models agree on every sample. Use SelectionRule(empty='keep') to "
                "keep the current set, a top_fraction rule, or a longer schedule"
            )
        indices = current.cpu().long().clone()
        info["fallback"] = "kept"
    info["size"] = int(indices.numel())
    info["fraction"] = indices.numel() / n
    return Selection(indices, info)
