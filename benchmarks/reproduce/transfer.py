"""``--experiment transfer``: does a PrAC set found with one architecture serve another?

1. PrAC IMP with the source architecture (``--transfer-from``, default ``res20s``; checkpoint
   ``out/checkpoints/source``) records the set each round trained on.
2. The target architecture (``--arch``) runs IMP on those sets (the reference finder
   ``transfer``: :meth:`tickets.PrACSampler.replay`, round k on the source's round-k set, the
   schedule scaled the same way).
3. From its round 0, the target also runs full-data IMP (``full``) and IMP on class-stratified
   random subsets of the same sizes (``random``: the same optimizer steps), so that the
   transferred sets are judged against random sets of equal cost, not only against full IMP.
   ``--finders`` picks others among :data:`TRANSFER_CHOICES` (``--finders random`` leaves out
   full-data IMP, the costliest search; the table then has no savings columns).

The transferred and random tickets are measured on the full split like the ablation's
(``--measure-rounds`` picks the rounds); the table, ``results.json`` and plots have the
ablation's form (:func:`benchmarks.reproduce.ablation.compare_finders`). The source search's
steps are reported on their own: a set found once can serve many architectures.
"""

from __future__ import annotations

from typing import Any

from benchmarks.reproduce.ablation import Finder, FinderSpec, Source, compare_finders
from benchmarks.reproduce.experiments import Context, build_model, find_ticket, register_experiment

__all__ = ["TRANSFER_FINDERS", "TRANSFER_CHOICES", "check_transfer_finders", "transfer"]

#: The finders the transferred sets are compared with by default (each from the target's round 0).
TRANSFER_FINDERS: tuple[str, ...] = ("full", "random")
#: The finders ``--finders`` may name with ``--experiment transfer``: those that need only the
#: reference search's set sizes and steps (the PrAC finders need round-0 statistics that a
#: replayed source set does not record).
TRANSFER_CHOICES: tuple[str, ...] = ("full", "random", "same-steps")


def check_transfer_finders(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``--finders`` for ``--experiment transfer`` checked: at least one of
    :data:`TRANSFER_CHOICES`, no repeats; returned in the ablation table's order. The
    transferred sets' finder (``transfer``) always runs and may be named too.

    Raises:
        ValueError: an empty list, a name outside :data:`TRANSFER_CHOICES` (``transfer``
            aside), or a repeated name.
    """
    from benchmarks.reproduce.ablation import FINDERS

    names = [n.strip() for n in names if n.strip() and n.strip() != "transfer"]
    unknown = [n for n in names if n not in TRANSFER_CHOICES]
    if unknown:
        raise ValueError(f"finder(s) {unknown} cannot be compared in --experiment transfer; valid: "
                         f"{','.join(TRANSFER_CHOICES)} (the transferred sets' finder always runs)")
    if not names:
        raise ValueError(f"--finders for --experiment transfer needs at least one of {','.join(TRANSFER_CHOICES)} "
                         f"to compare the transferred sets with")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"finder(s) {repeated} given more than once in --finders")
    return tuple(n for n in FINDERS if n in names)


def _replay_source(ctx: Context, source: Source | None) -> Finder:
    from tickets.prac.sampler import PrACSampler
    from tickets.search.run_folder import load_prac_sets

    sets = load_prac_sets(ctx.out / "checkpoints" / "source")
    return Finder(PrACSampler.replay(ctx.splits.train, sets, seed=ctx.config.seed))


@register_experiment("transfer")
def transfer(ctx: Context) -> dict[str, Any]:
    """PrAC sets found with ``--transfer-from`` reused to find tickets for ``--arch``, against
    full-data IMP and random subsets of the same sizes for ``--arch`` (see the module)."""
    from tickets.prac.sampler import PrACSampler

    cfg = ctx.config
    source_arch = cfg.transfer_arch or "res20s"
    ctx.log(f"PrAC IMP with the source architecture {source_arch}")
    source_model = build_model(source_arch, ctx.splits.num_classes, cfg.seed)
    source = find_ticket(ctx, source_model, PrACSampler(ctx.splits.train, seed=cfg.seed), name="source")
    reference = FinderSpec(
        "transfer", label=f"PrAC sets of {source_arch}",
        description=f"round k trains the set PrAC IMP with {source_arch} trained in its round k, with the schedule "
        f"scaled to its size", build=_replay_source,
    )
    title = f"PrAC set transfer {source_arch} -> {cfg.arch}: {cfg.data_label}, preset {cfg.preset.name}"
    model = build_model(cfg.arch, ctx.splits.num_classes, cfg.seed)
    results = compare_finders(ctx, model, ("transfer", *(cfg.finders or TRANSFER_FINDERS)), title, reference)
    source_steps = sum(int(h["steps"]) for h in source.history)
    sizes = [int(h["set_size"]) for h in source.history]
    note = (f"\nThe PrAC sets came from PrAC IMP with `{source_arch}` ({source_steps:,} steps, not counted above; "
            f"set sizes per round: {', '.join(str(n) for n in sizes)}).\n")
    results["markdown"] += note
    results["summary"] += note
    results["source"] = {"arch": source_arch, "history": source.history, "set_sizes": sizes}
    return results
