"""Accounting of a search's cost: optimizer steps of PrAC IMP against full-data IMP.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from tickets.ticket.ticket import Ticket

__all__ = ['Savings', 'iteration_savings']


# ---------------------------------------------------------------------- accounting
@dataclass(frozen=True)
class Savings:
    """Optimizer steps of PrAC IMP (or any subset or budgeted search) against full-data IMP
    (same rounds), counted two ways.

    *Finding* (the paper's measure): the steps each search spent up to round ``k``. *To a
    trained model*: the steps until a sparse model of round ``k``'s sparsity is trained. Full-data
    IMP's round ``k`` already is that model, so its count equals its finding steps; a PrAC,
    subset or budgeted search must still train its round-``k`` ticket once on the full data from
    the rewind point with the full schedule, which costs exactly the full search's round-``k``
    steps (nothing for round 0, the dense training on all the data). A round of the first
    search that trained on the whole training set (``set_fraction`` 1) without a step budget
    (no ``round_steps`` in its history entry) is such a model already and adds nothing.

    Attributes:
        rows: per round: ``round``, ``steps_prac``, ``steps_full``, cumulative
            ``cum_prac``/``cum_full`` (rounds 0..k, round 0 included in both) and ``saved``
            = ``1 - cum_prac / cum_full`` (finding); ``steps_trained_prac`` = ``cum_prac`` +
            training the round-``k`` ticket on the full data (``steps_full`` for ``k >= 1``),
            ``steps_trained_full`` = ``cum_full``, and ``saved_trained`` = ``1 -
            steps_trained_prac / steps_trained_full`` (to a trained model; may be negative).
        total_prac, total_full: optimizer steps of the two searches (finding).
        saved: ``1 - total_prac / total_full``.
        retrain_steps: steps spent retraining tickets only to measure them (excluded from
            every count; reported on its own), or None.
        total_prac_trained, total_full_trained: the last row's ``steps_trained_prac`` and
            ``steps_trained_full``: steps to the trained model of the last round.
        saved_trained: ``1 - total_prac_trained / total_full_trained``.
    """

    rows: tuple[dict[str, Any], ...]
    total_prac: int
    total_full: int
    saved: float
    retrain_steps: int | None = None
    total_prac_trained: int = 0
    total_full_trained: int = 0
    saved_trained: float = 0.0

    def __str__(self) -> str:
        lines = [f"{'round':>5}  {'steps PrAC':>10}  {'steps full':>10}  {'saved (cum.)':>12}  "
                 f"{'trained PrAC':>12}  {'trained full':>12}  {'saved (trained)':>15}"]
        for r in self.rows:
            lines.append(f"{r['round']:>5}  {r['steps_prac']:>10,}  {r['steps_full']:>10,}  {r['saved']:>12.1%}  "
                         f"{r['steps_trained_prac']:>12,}  {r['steps_trained_full']:>12,}  {r['saved_trained']:>15.1%}")
        lines.append(f"finding (the paper's measure): PrAC {self.total_prac:,} vs full {self.total_full:,} steps: "
                     f"{self.saved:.1%} saved")
        lines.append(f"to a trained model of the last round (finding + training the ticket once on the full data): "
                     f"PrAC {self.total_prac_trained:,} vs full {self.total_full_trained:,} steps: "
                     f"{self.saved_trained:.1%} saved")
        if self.retrain_steps is not None:
            lines.append(f"retraining to measure tickets (excluded): {self.retrain_steps:,} steps")
        return "\n".join(lines)


def _history(value: Ticket | Sequence[Mapping[str, Any]], argument: str) -> list[Mapping[str, Any]]:
    history = value.history if isinstance(value, Ticket) else list(value)
    if not history or any("steps" not in h for h in history):
        raise ValueError(f"{argument} must be a Ticket from tickets.prune or its history (one dict with 'steps' per round)")
    return history


def _trained_already(entry: Mapping[str, Any], k: int) -> bool:
    """Whether round ``k`` of a search is a trained model of its sparsity by itself: round 0,
    or a round on the whole training set (``set_fraction`` 1) without a step budget that ran
    its whole schedule (not cut short by the early-bird stop)."""
    return k == 0 or (entry.get("set_fraction") == 1.0 and entry.get("round_steps") is None
                      and not entry.get("early_stopped"))


def _ratio_saved(spent: int, reference: int) -> float:
    return 1.0 - spent / reference if reference else 0.0


def iteration_savings(
    prac: Ticket | Sequence[Mapping[str, Any]],
    full: Ticket | Sequence[Mapping[str, Any]],
    *,
    retrain_steps: int | None = None,
) -> Savings:
    """Savings = ``1 - steps(PrAC IMP) / steps(full-data IMP)`` over the same rounds, spent
    finding (the paper's measure) and spent to a trained sparse model (see :class:`Savings`).

    Round 0 (dense training on the full data) counts in both; retraining used only to
    measure a ticket is excluded from every count and echoed as ``retrain_steps``.

    Args:
        prac: the PrAC IMP ticket, or any subset or budgeted search's (or its ``history``).
        full: the full-data IMP ticket (or its ``history``): its round ``k`` is the trained
            model, and its steps are what training the other search's ticket costs.
        retrain_steps: optional steps of measurement retraining, reported separately.

    Raises:
        ValueError: histories of different lengths (compare the same number of rounds).
    """
    hp, hf = _history(prac, "prac"), _history(full, "full")
    if len(hp) != len(hf):
        raise ValueError(f"the two runs have {len(hp)} and {len(hf)} rounds; compare the same number of rounds")
    rows: list[dict[str, Any]] = []
    cum_p, cum_f = 0, 0
    for p, f in zip(hp, hf):
        k = int(p.get("round", len(rows)))
        cum_p += int(p["steps"])
        cum_f += int(f["steps"])
        trained_p = cum_p + (0 if _trained_already(p, k) else int(f["steps"]))
        rows.append({
            "round": k,
            "steps_prac": int(p["steps"]),
            "steps_full": int(f["steps"]),
            "cum_prac": cum_p,
            "cum_full": cum_f,
            "saved": _ratio_saved(cum_p, cum_f),
            "steps_trained_prac": trained_p,
            "steps_trained_full": cum_f,
            "saved_trained": _ratio_saved(trained_p, cum_f),
        })
    last = rows[-1]
    return Savings(tuple(rows), cum_p, cum_f, _ratio_saved(cum_p, cum_f), retrain_steps,
                   total_prac_trained=last["steps_trained_prac"], total_full_trained=last["steps_trained_full"],
                   saved_trained=last["saved_trained"])
