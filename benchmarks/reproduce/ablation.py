"""``--experiment ablation``: is it the PrAC selection that keeps tickets good, or only the
smaller number of steps? (issue 19)

``python -m benchmarks.reproduce cifar10 --experiment ablation [--finders a,b,c]`` runs ticket
finders through the same ``tickets.prune`` code path, from one initialization and one
round 0, and compares their tickets at equal sparsity and at equal cost:

- ``full``: full-data IMP (every round trains the whole split with the full schedule);
- ``prac``: PrAC IMP (round k trains the PrAC set with the schedule scaled to its size);
- ``random``: round k trains a class-stratified random subset of the training split of the
  size of the PrAC search's round-k set, with the same scaled schedule, so the same
  optimizer steps (``tickets.prac.sampler.random_sets_like``, a replayed sampler);
- ``same-steps``: round k trains the whole split for exactly the PrAC round's optimizer
  steps, the full schedule compressed to them (``round_steps``);
- ``prac-NAME``: PrAC IMP with the selection rule ``NAME`` of :data:`tickets.prac.score_rules.RULES`
  (``el2n``, ``easiest``, ``forgetting``, ``random``, ``budget``; ``--selection NAME,...``
  adds them); a rule that records a score in round 0 the paper's rule does not (EL2N)
  trains its own round 0, the same dense network from the same initialization and seed;
- any finder added with :func:`register_finder`.

**Order and sharing.** The PrAC search runs first, always (it is the reference: the others
take its round 0, its set sizes and its steps); it records the per-sample statistics of
round 0, so every other search starts from its finished round 0 (``start_from=``) and round
0 is trained once. Full-data IMP uses :func:`full_data_sampler`, whose data order is the
PrAC sampler's while its set is everything. Each search is resumable from
``out/checkpoints/<finder>``.

**Measuring.** The round tickets of every finder whose rounds do not train the full split
with the full schedule (all but ``full``) are trained on the full split with the full
schedule from their rewind point, as ``imp-vs-prac`` measures PrAC tickets
(:func:`measure_ticket`, cached in ``out/checkpoints/measure_<finder>_round<k>.json``);
``--no-measure`` skips it.

**Outputs** (``--out``): ``table.md`` (one table: every finder at every sparsity, accuracy
with its standard error, steps finding and to a trained model, savings against full-data
IMP), ``results.json``, ``accuracy.png`` (ticket accuracy vs sparsity) and ``cost.png``
(ticket accuracy vs cumulative optimizer steps: finding, and to a trained model).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch
from torch import nn

from benchmarks.reproduce.experiments import (Context, _pct, _round, _round_tickets, build_model, find_ticket,
                                              full_data_sampler, measure_ticket, register_experiment)
from benchmarks.reproduce.report import (fmt, fmt_acc, markdown_table, plot_accuracy, plot_accuracy_vs_steps,
                                         standard_error)

__all__ = ["BASELINES", "DEFAULT_FINDERS", "FINDERS", "REFERENCE", "RULE_PREFIX", "Finder", "FinderSpec", "Source",
           "ablation", "ablation_rows", "check_finders", "compare_finders", "comparisons", "register_finder",
           "selection_finders"]

#: The finder every other one starts from (its round 0, set sizes and steps); it always runs.
REFERENCE = "prac"
#: The finders of ``--experiment ablation`` without ``--finders``.
DEFAULT_FINDERS: tuple[str, ...] = ("full", "prac", "random", "same-steps")


@dataclass(frozen=True)
class Source:
    """The finished reference (PrAC) search that the other finders are built from.

    Attributes:
        ctx: the experiment's context.
        checkpoint_dir: its run folder (``out/checkpoints/prac``): the others' ``start_from``.
        history: its ``ticket.history`` (one entry per round).
    """

    ctx: Context
    checkpoint_dir: Path
    history: Sequence[Mapping[str, Any]]

    @property
    def rounds(self) -> int:
        return len(self.history)

    @property
    def set_sizes(self) -> list[int]:
        """The size of the set each round trained on (round 0: the whole split)."""
        return [int(h["set_size"]) for h in self.history]

    @property
    def round_steps(self) -> dict[int, int]:
        """``{round k >= 1: optimizer steps that round took}``."""
        return {int(h["round"]): int(h["steps"]) for h in self.history if int(h["round"]) >= 1}

    @cached_property
    def sets(self) -> list[torch.Tensor]:
        """The set every round trained on (``tickets.load_prac_sets``; ``sets[0]`` = all)."""
        from tickets.search.run_folder import load_prac_sets

        return load_prac_sets(self.checkpoint_dir)[: self.rounds]


@dataclass(frozen=True)
class Finder:
    """How one finder searches: what :func:`find_ticket` (``tickets.prune``) gets.

    Attributes:
        sampler: the sampler over ``ctx.splits.train`` (a :class:`tickets.PrACSampler`: adaptive,
            replayed, or :func:`full_data_sampler`); its round-0 data order must be the
            reference's (same seed), since every search starts from the reference's round 0.
        options: more keywords of ``tickets.prune`` (``round_steps``, ``selection``,
            ``min_step_fraction``...).
        measure: whether its round tickets are measured on the full split (False only for a
            finder whose rounds already train the full split with the full schedule).
        own_round_0: train its own round 0 instead of taking the reference's: for a selection
            rule that records, during round 0, a score the reference's rule does not (EL2N).
            The same initialization and seed give the same dense network; the table counts
            the extra round 0 in the run's time, not in the finder's steps (round 0 is shared
            cost in every finder).
        round_0_scores: with ``own_round_0``, the scores (name: options) its round 0 records:
            a later finder whose rule needs only scores recorded there starts from its round 0
            instead of training another (``--selection el2n,easiest,budget`` trains one).
    """

    sampler: Any
    options: Mapping[str, Any] = field(default_factory=dict)
    measure: bool = True
    own_round_0: bool = False
    round_0_scores: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


FinderBuilder = Callable[[Context, "Source | None"], Finder]


@dataclass(frozen=True)
class FinderSpec:
    """A registered finder: its ``--finders`` name, its label in tables and plots, what it
    is (one line for ``table.md``), and the function building it (``build(ctx, source)``,
    ``source`` the finished reference search, None for the reference itself)."""

    name: str
    label: str
    description: str
    build: FinderBuilder


FINDERS: dict[str, FinderSpec] = {}


def register_finder(name: str, *, label: str, description: str) -> Callable[[FinderBuilder], FinderBuilder]:
    """Decorator adding a finder to :data:`FINDERS` (selectable with ``--finders name``).

    Example, a selection rule of one's own, searched from the reference's round 0::

        from tickets import PrACSampler, SelectionRule
        from benchmarks.reproduce.ablation import Finder, register_finder

        @register_finder("top30", label="PrAC, top 30%", description="the 30% most forgotten samples")
        def top30(ctx, source):
            sampler = PrACSampler(ctx.splits.train, seed=ctx.config.seed)
            return Finder(sampler, options={"selection": SelectionRule(top_fraction=0.3)})
    """

    def add(build: FinderBuilder) -> FinderBuilder:
        if name in FINDERS:
            raise ValueError(f"finder {name!r} is already registered")
        if not name or "," in name or "/" in name:
            raise ValueError(f"a finder's name is a folder name and an item of --finders; got {name!r}")
        FINDERS[name] = FinderSpec(name, label, description, build)
        return build

    return add


def check_finders(names: Sequence[str]) -> tuple[str, ...]:
    """``names`` (the items of ``--finders``) checked: known, no repeats, at least one; returned
    in the order of :data:`FINDERS` (the table's order).

    Raises:
        ValueError: an empty list, an unknown name (the valid ones listed) or a repeated one.
    """
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise ValueError(f"--finders needs at least one finder; valid: {','.join(FINDERS)}")
    unknown = [n for n in names if n not in FINDERS]
    if unknown:
        raise ValueError(f"unknown finder(s) {unknown}; valid: {','.join(FINDERS)}")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"finder(s) {repeated} given more than once in --finders")
    return tuple(n for n in FINDERS if n in names)


# --------------------------------------------------------------------------- the four finders
@register_finder("full", label="full-data IMP",
                 description="every round trains the whole training split with the full schedule (its rounds are its tickets)")
def _full(ctx: Context, source: Source | None) -> Finder:
    return Finder(full_data_sampler(ctx), measure=False)


@register_finder("prac", label="PrAC IMP",
                 description="round k trains the PrAC set (hard to memorize or easy to forget under pruning) with the "
                 "schedule scaled to its size")
def _prac(ctx: Context, source: Source | None) -> Finder:
    from tickets.prac.sampler import PrACSampler

    return Finder(PrACSampler(ctx.splits.train, seed=ctx.config.seed))


@register_finder("random", label="random subsets",
                 description="round k trains a class-stratified random subset of the split of the PrAC round-k set's "
                 "size, with the same scaled schedule (the same optimizer steps)")
def _random(ctx: Context, source: Source | None) -> Finder:
    from tickets.prac.sampler import PrACSampler, random_sets_like

    sets = random_sets_like(ctx.splits.train, _needed(source, "random").set_sizes, ctx.config.seed)
    return Finder(PrACSampler.replay(ctx.splits.train, sets, seed=ctx.config.seed))


@register_finder("same-steps", label="full data, same steps",
                 description="round k trains the whole split for exactly the PrAC round's optimizer steps, the full "
                 "schedule compressed to them")
def _same_steps(ctx: Context, source: Source | None) -> Finder:
    return Finder(full_data_sampler(ctx), options={"round_steps": _needed(source, "same-steps").round_steps})


# --------------------------------------------------------------------------- selection rules
#: The ``--finders`` name of the PrAC search with the selection rule ``NAME``: ``prac-NAME``.
RULE_PREFIX = "prac-"


def _rule_finder(rule_name: str) -> FinderBuilder:
    def build(ctx: Context, source: Source | None) -> Finder:
        from tickets.prac.rules import SelectionRule
        from tickets.prac.sampler import PrACSampler
        from tickets.prac.score_rules import resolve_rule
        from tickets.prac.scores import score_class

        rule = resolve_rule(rule_name)
        shared = SelectionRule().scores()  # what the reference's round 0 records
        recorded = {n: o for n, o in rule.scores().items() if score_class(n).needs_logits}
        own = any(n not in shared for n in recorded)
        return Finder(PrACSampler(ctx.splits.train, seed=ctx.config.seed, selection=rule), own_round_0=own,
                      round_0_scores=recorded)

    return build


def _register_rules() -> None:
    from tickets.prac.score_rules import RULES

    for rule_name in RULES:
        if rule_name == "paper":  # that is the reference, ``prac``
            continue
        register_finder(
            RULE_PREFIX + rule_name, label=f"PrAC, rule {rule_name}",
            description=f"PrAC IMP choosing each round's set with the selection rule {rule_name!r} "
            f"(tickets.PrACSampler(selection={rule_name!r}); see docs/prac.md)",
        )(_rule_finder(rule_name))


_register_rules()


def selection_finders(names: Sequence[str]) -> tuple[str, ...]:
    """The ``--finders`` names of the selection rules ``names`` (``--selection el2n,budget``):
    ``prac-el2n``, ...; ``paper`` is the reference, ``prac``.

    Raises:
        ValueError: an empty list or an unknown rule (the valid names listed).
    """
    from tickets.prac.score_rules import RULES

    names = [n.strip() for n in names if n.strip()]
    unknown = [n for n in names if n not in RULES]
    if not names or unknown:
        raise ValueError(f"--selection takes rule names separated by commas; unknown or none: {unknown or names}; "
                         f"valid: {','.join(RULES)}")
    return tuple("prac" if n == "paper" else RULE_PREFIX + n for n in names)


def _needed(source: Source | None, name: str) -> Source:
    """``source``, which the finder ``name`` is built from (only the reference gets None)."""
    if source is None:
        raise ValueError(f"the finder {name!r} is built from the finished {REFERENCE!r} search; it cannot be the reference")
    return source


# --------------------------------------------------------------------------- running
@dataclass
class FinderRun:
    """One finder's search and measurements."""

    spec: FinderSpec
    history: list[dict[str, Any]]
    measured: dict[int, dict[str, Any]]
    measure: bool
    search_s: float = 0.0
    measure_s: float = 0.0
    own_round_0: bool = False
    round_0_from: str | None = None


def _round_0_source(finder: Finder, trained: Mapping[str, Finder]) -> str | None:
    """The first finder of ``trained`` (finders that trained their own round 0) whose round 0
    recorded every score ``finder``'s round 0 would record, with the same options; or None."""
    return next((name for name, other in trained.items()
                 if all(other.round_0_scores.get(n) == o for n, o in finder.round_0_scores.items())), None)


def _search(ctx: Context, model: nn.Module, names: Sequence[str],
            reference: FinderSpec | None = None) -> tuple[dict[str, FinderRun], Source]:
    """Run the ``reference`` search (default: PrAC IMP), then every other finder of ``names``
    from its round 0; a finder with ``own_round_0`` starts from the round 0 of an earlier one
    that recorded its scores, or trains its own."""
    reference = reference or FINDERS[REFERENCE]
    reference_dir = ctx.out / "checkpoints" / reference.name
    runs: dict[str, FinderRun] = {}
    started = time.perf_counter()
    ctx.log(f"{reference.label} (the reference: every other finder starts from its round 0)")
    finder = reference.build(ctx, None)
    ticket = find_ticket(ctx, model, finder.sampler, name=reference.name, **finder.options)
    runs[reference.name] = FinderRun(reference, ticket.history, {}, finder.measure, time.perf_counter() - started)
    source = Source(ctx, reference_dir, ticket.history)
    trained: dict[str, Finder] = {}  # finders that trained their own round 0
    for name in names:
        if name == reference.name:
            continue
        spec, started = FINDERS[name], time.perf_counter()
        finder = spec.build(ctx, source)
        donor = _round_0_source(finder, trained) if finder.own_round_0 else None
        own = finder.own_round_0 and donor is None
        start_from = None if own else reference_dir if donor is None else ctx.out / "checkpoints" / donor
        ctx.log(f"{spec.label}: its rule records scores in round 0 that the reference's does not, so it trains its own "
                f"round 0 (the same initialization and seed: the same dense network)" if own else
                f"{spec.label} (start_from={start_from}: its round 0)")
        ticket = find_ticket(ctx, model, finder.sampler, name=name, start_from=start_from, **finder.options)
        runs[name] = FinderRun(spec, ticket.history, {}, finder.measure, time.perf_counter() - started,
                               own_round_0=own, round_0_from=donor)
        if own:
            trained[name] = finder
    order = [*FINDERS] if reference.name in FINDERS else [reference.name, *FINDERS]  # the table's order
    return {n: runs[n] for n in order if n in runs and (n in names)}, source


def _digest(ticket: Any) -> str:
    """A digest of a ticket's masks and rewind weights: equal digests, equal measurements."""
    h = hashlib.sha256()
    for part in (ticket.masks, ticket.rewind_state or {}):
        for key in sorted(part):
            h.update(key.encode())
            h.update(part[key].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _measure(ctx: Context, model: nn.Module, runs: Mapping[str, FinderRun]) -> None:
    """Measure the round tickets (rounds >= 1, or ``--measure-rounds``) of every finder that
    needs it, on the full split: round-major (every finder at a round before the next round),
    so that a run cut short still compares all finders at its first rounds. A ticket equal to
    one measured already (same masks and rewind weights: every finder's round-1 ticket, whose
    mask comes from the shared round 0) reuses that measurement, the same computation."""
    from benchmarks.reproduce.report import write_json

    measured = {name: run for name, run in runs.items() if run.measure}
    tickets = {name: _round_tickets(ctx, name, len(run.history)) for name, run in measured.items()}
    rounds = ctx.config.rounds_to_measure(max((len(r.history) for r in measured.values()), default=0))
    seen: dict[str, tuple[str, dict[str, Any]]] = {}
    for k in rounds:
        for name, run in measured.items():
            if k >= len(run.history):
                continue
            started, ticket, label = time.perf_counter(), tickets[name][k], f"measure_{name}_round{k}"
            digest = _digest(ticket)
            cache = ctx.out / "checkpoints" / f"{label}.json"
            if digest in seen and not cache.exists():
                first, record = seen[digest]
                ctx.log(f"the {run.spec.label} ticket of round {k} equals {first}'s (same masks and rewind weights): "
                        f"its measurement is reused")
                write_json({**record, "same_ticket_as": first}, cache)
            else:
                ctx.log(f"measuring the {run.spec.label} ticket of round {k} (sparsity "
                        f"{100 * run.history[k]['sparsity']:.2f}%) on the full split")
            run.measured[k] = measure_ticket(ctx, model, ticket, name=label)
            seen.setdefault(digest, (label, run.measured[k]))
            run.measure_s += time.perf_counter() - started


@register_experiment("ablation")
def ablation(ctx: Context) -> dict[str, Any]:
    """Full-data IMP, PrAC IMP, random subsets of PrAC's sizes and full data for PrAC's steps
    (or the finders of ``--finders`` / ``--selection``), from one round 0, measured and
    compared at equal cost."""
    cfg = ctx.config  # run() has refused --early-bird, which would make the PrAC rounds' steps vary
    names = check_finders(cfg.finders or DEFAULT_FINDERS)
    model = build_model(cfg.arch, ctx.splits.num_classes, cfg.seed)
    return compare_finders(ctx, model, names, f"Ablation: {cfg.data_label}, {cfg.arch}, preset {cfg.preset.name}")


def compare_finders(ctx: Context, model: nn.Module, names: Sequence[str], title: str,
                    reference: FinderSpec | None = None) -> dict[str, Any]:
    """Search with the ``reference`` finder (default: PrAC IMP) and the finders ``names`` from
    its round 0, measure their tickets, and write ``table.md``, ``accuracy.png`` and
    ``cost.png``; returns the results (``results.json``'s content)."""
    reference = reference or FINDERS[REFERENCE]
    runs, source = _search(ctx, model, names, reference)
    _measure(ctx, model, runs)
    n_test = len(ctx.splits.test)
    rows = ablation_rows(runs, n_test)
    plots = _plots(ctx, runs, rows, title)
    timing = _timing(runs, reference.name)
    found = comparisons(rows, n_test)
    markdown = _markdown(ctx, runs, rows, timing, title, reference) + _comparison_table(runs, found)
    summary = f"{markdown}\n{_summary_line(runs, rows)} Outputs in {ctx.out}."
    return {
        "finders": list(runs),
        "reference": reference.name,
        "reference_ran_only_as_source": reference.name not in names,
        "descriptions": {n: {"label": r.spec.label, "description": r.spec.description} for n, r in runs.items()},
        "rows": rows,
        "comparisons": found,
        "histories": {n: r.history for n, r in runs.items()},
        "measured": {n: {str(k): v for k, v in r.measured.items()} for n, r in runs.items()},
        "reference_set_sizes": source.set_sizes,
        "reference_round_steps": {str(k): v for k, v in source.round_steps.items()},
        "test_images": n_test,
        "timing": timing,
        "plots": plots,
        "markdown": markdown,
        "summary": summary,
    }


# --------------------------------------------------------------------------- accounting
def _savings(run: FinderRun, full: FinderRun | None) -> list[dict[str, Any]] | None:
    """``tickets.iteration_savings`` rows of ``run`` against full-data IMP (None without it)."""
    if full is None:
        return None
    from tickets.search.accounting import iteration_savings

    return list(iteration_savings(run.history, full.history).rows)


def ablation_rows(runs: Mapping[str, FinderRun], n_test: int) -> list[dict[str, Any]]:
    """One row per finder and round (finders in ``runs``' order, then by round).

    Steps: ``steps`` of the round, ``cum_steps`` over rounds 0..k (round 0 in every finder);
    ``steps_to_trained``: steps to a trained sparse model of round k's sparsity: full-data
    IMP's cumulative steps (its round k is that model), a measured finder's cumulative steps
    plus one training of its ticket on the full split (``tickets.iteration_savings``'s
    ``steps_trained_prac``); ``saved_finding`` / ``saved_trained``: 1 - finder / full-data IMP
    for each measure, cumulative (None without the full-data IMP search). Accuracies in
    [0, 1]: ``ticket_test_acc`` (full-data IMP: its round; others: the measurement; round 0:
    the shared dense network) with ``ticket_se`` = sqrt(p (1 - p) / n_test);
    ``round_test_acc`` the round's own network, with ``round_se``.
    """
    full = runs.get("full")
    rows = []
    for name, run in runs.items():
        savings = _savings(run, full) if name != "full" else None
        cum = 0
        for k, entry in enumerate(run.history):
            h = _round(entry)
            cum += int(h["steps"])
            m = run.measured.get(k)
            own = run.measure and k > 0
            ticket_acc = (m or {}).get("test_acc") if own else h["test_acc"]
            s = savings[k] if savings is not None else None
            if not own:
                trained = cum
            elif s is not None:
                trained = int(s["steps_trained_prac"])
            else:
                trained = cum + int(m["steps"]) if m else None
            rows.append({
                "finder": name, **h, "cum_steps": cum,
                "round_test_acc": h["test_acc"], "round_se": standard_error(h["test_acc"], n_test),
                "ticket_test_acc": ticket_acc, "ticket_se": standard_error(ticket_acc, n_test),
                "measure_steps": (m or {}).get("steps"), "measure_wall_s": (m or {}).get("wall_time_s"),
                "steps_to_trained": trained,
                "saved_finding": 0.0 if name == "full" else (None if s is None else float(s["saved"])),
                "saved_trained": 0.0 if name == "full" else (None if s is None else float(s["saved_trained"])),
            })
    for row in rows:  # difference to full-data IMP's ticket at the same round
        base = next((r for r in rows if r["finder"] == "full" and r["round"] == row["round"]), None)
        acc, ref = row["ticket_test_acc"], (base or {}).get("ticket_test_acc")
        row["diff_vs_full"] = None if acc is None or ref is None else acc - ref
    return rows


#: The finders every other measured finder is compared with, in this order, when present.
BASELINES: tuple[str, ...] = ("full", "random", "same-steps")


def comparisons(rows: Sequence[dict[str, Any]], n_test: int) -> list[dict[str, Any]]:
    """Each measured finder's ticket against each baseline's (:data:`BASELINES`) and against
    the reference (``prac``) at the same round (>= 1): ``diff`` (accuracy points / 100),
    ``threshold`` = 2 sqrt(s.e.₁² + s.e.₂²) and ``beyond_noise`` (``|diff| > threshold``).
    Rounds where either ticket is unmeasured are left out."""
    by = {(r["finder"], r["round"]): r for r in rows}
    finders = list(dict.fromkeys(r["finder"] for r in rows))
    out, pairs = [], set()
    for name in finders:
        if name == "full":
            continue
        for base in (*BASELINES, REFERENCE):
            if base == name or base not in finders or frozenset((name, base)) in pairs:
                continue
            pairs.add(frozenset((name, base)))
            for row in rows:
                k = row["round"]
                other = by.get((base, k))
                if row["finder"] != name or k == 0 or other is None:
                    continue
                a, b = row["ticket_test_acc"], other["ticket_test_acc"]
                if a is None or b is None:
                    continue
                threshold = 2 * ((standard_error(a, n_test) or 0.0) ** 2 + (standard_error(b, n_test) or 0.0) ** 2) ** 0.5
                out.append({"finder": name, "against": base, "round": k, "sparsity": row["sparsity"], "diff": a - b,
                            "threshold": threshold, "beyond_noise": abs(a - b) > threshold})
    return out


def _comparison_table(runs: Mapping[str, FinderRun], found: Sequence[dict[str, Any]]) -> str:
    """``table.md``'s second table: the :func:`comparisons`, one line per finder and baseline."""
    if not found:
        return ""
    rounds = sorted({c["round"] for c in found})
    sparsity = {c["round"]: c["sparsity"] for c in found}
    headers = ["ticket of", "against", *(f"round {k} ({fmt(100 * sparsity[k], 2, '%')})" for k in rounds)]
    lines = []
    for name, base in dict.fromkeys((c["finder"], c["against"]) for c in found):
        cells = {c["round"]: c for c in found if c["finder"] == name and c["against"] == base}
        lines.append([runs[name].spec.label, runs[base].spec.label] + [
            "-" if k not in cells else f"{100 * cells[k]['diff']:+.2f} ({'beyond' if cells[k]['beyond_noise'] else 'within'}"
            f" noise, ±{100 * cells[k]['threshold']:.2f})" for k in rounds])
    return ("\nAt equal sparsity: the difference in ticket accuracy (points), and whether it exceeds "
            "2·sqrt(s.e.₁² + s.e.₂²) (the ± value): a difference within it is not evidence that one finder beats the "
            "other.\n\n" + markdown_table(headers, lines))


def _timing(runs: Mapping[str, FinderRun], reference: str = REFERENCE) -> dict[str, Any]:
    """Wall time from the histories (kept across resumes): round 0 once, every search's rounds
    >= 1 (and its own round 0 for a finder that trained one), and the measurements (from their
    records); plus this invocation's seconds."""
    any_run = runs.get(reference) or next(iter(runs.values()))
    round0 = float(any_run.history[0].get("wall_time_s") or 0.0)
    searches = {n: round(sum(float(h.get("wall_time_s") or 0.0) for h in r.history[0 if r.own_round_0 else 1:]), 1)
                for n, r in runs.items()}
    measures = {n: round(sum(float(m.get("wall_time_s") or 0.0) for m in r.measured.values() if "same_ticket_as" not in m), 1)
                for n, r in runs.items()}  # a reused measurement took no time
    return {
        "round0_s": round(round0, 1), "search_rounds_s": searches, "measure_s": measures,
        "total_s": round(round0 + sum(searches.values()) + sum(measures.values()), 1),
        "this_invocation": {n: {"search_s": round(r.search_s, 1), "measure_s": round(r.measure_s, 1)} for n, r in runs.items()},
    }


# --------------------------------------------------------------------------- outputs
def _markdown(ctx: Context, runs: Mapping[str, FinderRun], rows: Sequence[dict[str, Any]], timing: dict[str, Any],
              title: str, reference: FinderSpec | None = None) -> str:
    """``table.md``: one table (every finder at every round, round 0 once), notes, totals."""
    cfg, preset, n = ctx.config, ctx.config.preset, len(ctx.splits.test)
    measured = cfg.measure
    headers = ["round", "sparsity", "finder"]
    headers += ["ticket acc ± s.e.", "vs full IMP"] if measured else []
    headers += ["round's own acc ± s.e.", "set trained (% of split)", "epochs", "steps", "steps (cum.)",
                "steps to a trained model (cum.)", "saved: finding", "saved: trained model"]
    cells = []
    for r in rows:
        if r["round"] == 0 and r["finder"] != next(iter(runs)):
            continue  # round 0 is shared: one row
        finder = "all (shared round 0)" if r["round"] == 0 else runs[r["finder"]].spec.label
        line = [str(r["round"]), fmt(100 * r["sparsity"], 2, "%"), finder]
        if measured:
            line += [fmt_acc(r["ticket_test_acc"], n), fmt(None if r["diff_vs_full"] is None else 100 * r["diff_vs_full"], 2)]
        line += [fmt_acc(r["round_test_acc"], n), f"{fmt(r['set_size'])} ({fmt(_pct(r['set_fraction']), 1)}%)",
                 fmt(r["epochs"]), fmt(r["steps"]), fmt(r["cum_steps"]), fmt(r["steps_to_trained"]),
                 fmt(_pct(r["saved_finding"]), 1, "%"), fmt(_pct(r["saved_trained"]), 1, "%")]
        cells.append(line)
    cells.sort(key=lambda c: int(c[0]))  # by round; finders in registry order within a round (stable sort)
    finders = "\n".join(f"- **{r.spec.label}** (`{name}`): {r.spec.description}." for name, r in runs.items())
    val = len(ctx.splits.val) if ctx.splits.val is not None else 0
    se_half = 100 * (standard_error(0.5, n) or 0.0)
    notes = (
        f"Accuracy: test accuracy (%) at the best-validation epoch ± its standard error sqrt(p(1-p)/n) on the n = {n:,} "
        f"test images (at most {se_half:.2f} points, at p = 50%). Two accuracies differ beyond noise only when the "
        f"difference exceeds about 2·sqrt(s.e.₁² + s.e.₂²) (conservative: both are measured on the same test images). "
    )
    if measured:
        notes += ("Ticket acc: full-data IMP's ticket is its own round (trained on the full split from the rewind "
                  "point); every other finder's round-k mask is trained the same way (full split, full schedule, "
                  "from its rewind point), as imp-vs-prac measures PrAC tickets. ")
    else:
        notes += "`--no-measure`: the tickets of the subset and budgeted finders were not trained on the full split. "
    notes += (
        "Round's own acc: the finder's round-k network as that round trained it. Steps: optimizer steps of the "
        "finding round, and over rounds 0..k (round 0, trained once and shared, counted in every finder). Steps to a "
        "trained model: what a user pays for a trained sparse network of that sparsity: full-data IMP's round k is "
        "one; every other finder must still train its ticket once on the full split (one full schedule from the "
        "rewind point). Saved: 1 - finder / full-data IMP, cumulative, for each measure."
    )
    walls = ", ".join(f"`{k}` {fmt(v, 0)} s" for k, v in timing["search_rounds_s"].items())
    own = [r.spec.label for r in runs.values() if r.own_round_0]
    own_round_0 = (f"; {', '.join(own)} trained {'its' if len(own) == 1 else 'their'} own, the same dense network from "
                   f"the same initialization and seed, since {'its rule records' if len(own) == 1 else 'their rules record'}"
                   f" scores in round 0 that the reference's does not (its wall time counts in its rounds, not in "
                   f"its steps)" if own else "")
    own_round_0 += "".join(f"; {r.spec.label} took the round 0 of {runs[r.round_0_from].spec.label}, which recorded "
                           f"its scores" for r in runs.values() if r.round_0_from in runs)
    measures = ", ".join(f"`{k}` {fmt(v, 0)} s" for k, v in timing["measure_s"].items() if v)
    return (
        f"# {title}\n\n"
        f"`{cfg.data_label}`, `{cfg.arch}`, preset `{preset.name}` ({preset.note}); {len(ctx.splits.train):,} training "
        f"images, {val:,} validation, {n:,} test; seed {cfg.seed}. Every finder runs through `tickets.prune` from the "
        f"same initialization and the same round 0 (trained once, by the {(reference or FINDERS[REFERENCE]).label} "
        f"search{own_round_0})." f"\n\n{finders}\n\n{notes}\n\n"
        + markdown_table(headers, cells)
        + f"\nWall time (from the histories): round 0 {fmt(timing['round0_s'], 0)} s (once); rounds >= 1: {walls}"
        + (f"; measuring: {measures}" if measures else "") + f"; {fmt(timing['total_s'], 0)} s in all.\n"
    )


def _summary_line(runs: Mapping[str, FinderRun], rows: Sequence[dict[str, Any]]) -> str:
    """Per finder at the last round: the ticket against full-data IMP's, and both savings."""
    parts = []
    for name, run in runs.items():
        last = [r for r in rows if r["finder"] == name][-1]
        diff = "" if last["diff_vs_full"] is None or name == "full" else f" ({100 * last['diff_vs_full']:+.2f} vs full IMP)"
        acc = fmt(_pct(last["ticket_test_acc"]))
        saved = "" if name == "full" else (f", saved {fmt(_pct(last['saved_finding']), 1, '%')} finding / "
                                            f"{fmt(_pct(last['saved_trained']), 1, '%')} to a trained model")
        parts.append(f"{run.spec.label}: {acc}{diff}{saved}")
    sparsity = 100 * rows[-1]["sparsity"]
    return f"At {sparsity:.2f}% sparsity: " + "; ".join(parts) + "."


def _series(runs: Mapping[str, FinderRun], rows: Sequence[dict[str, Any]], measured: bool,
            x: str) -> dict[str, tuple[list[float], list[float | None], list[float | None]]]:
    """Per finder label: (x values, ticket accuracy %, standard error in points). Without
    measurements the subset finders' lines show their rounds' own networks (labelled so)."""
    out = {}
    for name, run in runs.items():
        mine = [r for r in rows if r["finder"] == name]
        own = not measured and run.measure
        acc, se = ("round_test_acc", "round_se") if own else ("ticket_test_acc", "ticket_se")
        label = run.spec.label + (" (round's own network, not measured)" if own else "")
        xs = [100 * r["sparsity"] if x == "sparsity" else r[x] for r in mine]
        out[label] = (xs, [_pct(r[acc]) for r in mine], [_pct(r[se]) for r in mine])
    return out


def _plots(ctx: Context, runs: Mapping[str, FinderRun], rows: Sequence[dict[str, Any]], title: str) -> list[str]:
    measured = ctx.config.measure
    by_sparsity = _series(runs, rows, measured, "sparsity")
    acc = plot_accuracy({k: (v[0], v[1]) for k, v in by_sparsity.items()}, ctx.out / "accuracy.png", title=title,
                        errors={k: v[2] for k, v in by_sparsity.items()})
    panels = {"optimizer steps spent finding (cumulative)": _series(runs, rows, measured, "cum_steps")}
    if all(r["steps_to_trained"] is not None for r in rows):
        panels["optimizer steps to a trained sparse model"] = _series(runs, rows, measured, "steps_to_trained")
    cost = plot_accuracy_vs_steps(panels, ctx.out / "cost.png", title=title)
    return [acc.name, cost.name]
