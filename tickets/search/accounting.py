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
    """Training iterations saved by PrAC IMP against full-data IMP (same rounds).

    Attributes:
        rows: per round: ``round``, ``steps_prac``, ``steps_full``, cumulative
            ``cum_prac``/``cum_full`` (rounds 0..k, round 0 included in both) and ``saved``
            = ``1 - cum_prac / cum_full``.
        total_prac, total_full: optimizer steps of the two searches.
        saved: ``1 - total_prac / total_full``.
        retrain_steps: steps spent retraining tickets only to measure them (excluded from
            both totals; reported on its own), or None.
    """

    rows: tuple[dict[str, Any], ...]
    total_prac: int
    total_full: int
    saved: float
    retrain_steps: int | None = None

    def __str__(self) -> str:
        lines = [f"{'round':>5}  {'steps PrAC':>10}  {'steps full':>10}  {'saved (cum.)':>12}"]
        for r in self.rows:
            lines.append(f"{r['round']:>5}  {r['steps_prac']:>10,}  {r['steps_full']:>10,}  {r['saved']:>12.1%}")
        lines.append(f"total: PrAC {self.total_prac:,} vs full {self.total_full:,} steps: {self.saved:.1%} saved")
        if self.retrain_steps is not None:
            lines.append(f"retraining to measure tickets (excluded): {self.retrain_steps:,} steps")
        return "\n".join(lines)


def _history(value: Ticket | Sequence[Mapping[str, Any]], argument: str) -> list[Mapping[str, Any]]:
    history = value.history if isinstance(value, Ticket) else list(value)
    if not history or any("steps" not in h for h in history):
        raise ValueError(f"{argument} must be a Ticket from tickets.prune or its history (one dict with 'steps' per round)")
    return history


def iteration_savings(
    prac: Ticket | Sequence[Mapping[str, Any]],
    full: Ticket | Sequence[Mapping[str, Any]],
    *,
    retrain_steps: int | None = None,
) -> Savings:
    """Savings = ``1 - steps(PrAC IMP) / steps(full-data IMP)`` over the same rounds.

    Round 0 (dense training on the full data) counts in both; retraining used only to
    measure a ticket is excluded from both and echoed as ``retrain_steps``.

    Args:
        prac: the PrAC IMP ticket (or its ``history``).
        full: the full-data IMP ticket (or its ``history``).
        retrain_steps: optional steps of measurement retraining, reported separately.

    Raises:
        ValueError: histories of different lengths (compare the same number of rounds).
    """
    hp, hf = _history(prac, "prac"), _history(full, "full")
    if len(hp) != len(hf):
        raise ValueError(f"the two runs have {len(hp)} and {len(hf)} rounds; compare the same number of rounds")
    rows, cum_p, cum_f = [], 0, 0
    for p, f in zip(hp, hf):
        cum_p += int(p["steps"])
        cum_f += int(f["steps"])
        rows.append({
            "round": int(p.get("round", len(rows))),
            "steps_prac": int(p["steps"]),
            "steps_full": int(f["steps"]),
            "cum_prac": cum_p,
            "cum_full": cum_f,
            "saved": 1.0 - cum_p / cum_f if cum_f else 0.0,
        })
    return Savings(tuple(rows), cum_p, cum_f, 1.0 - cum_p / cum_f if cum_f else 0.0, retrain_steps)
