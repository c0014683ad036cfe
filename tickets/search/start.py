"""How a search starts from what its folders hold.

:func:`restore` puts a saved run back onto the model and the sampler (masks, weights, sampler
state, data order); :func:`adopt_round_0` takes another search's finished round 0
(``start_from``); :func:`advance` extends a finished search with more rounds. All three leave
the search as an uninterrupted run would be at that point.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any
import torch
from torch import nn
from torch.utils.data import Sampler
import tickets.pruning.methods as methods
from tickets.pruning.rewind import rewind as rewind_weights
from tickets.prac.sampler import PrACSampler
from tickets.prac.score_rules import carries, record_for
from tickets.search.checks import _apply_masks, _current_masks, _state
from tickets.search.closing import SearchState, prune_and_rewind, select_next
from tickets.search.identity import _AFTER_ROUND_0_KEYS, _config_diff, _describe_diff, _origin
from tickets.search.run_folder import _Run, _load_round_0

__all__: list[str] = []


log = logging.getLogger("tickets")


def restore(run: _Run, model: nn.Module, parameters: list[tuple[nn.Module, str]], names: list[str],
            sampler: Sampler[int]) -> None:
    """Put a saved ``run`` back: its masks and weights on ``model``, its state on ``sampler``
    (a :class:`PrACSampler`) and on the sampler's ``generator`` (the data order)."""
    if run.masks is not None:
        _apply_masks(parameters, names, run.masks)
    if run.model is not None:
        rewind_weights(model, run.model) if methods.pruned_parameters(model) else model.load_state_dict(run.model)
    if run.sampler is not None and isinstance(sampler, PrACSampler):
        sampler.load_state_dict(run.sampler)
    generator = getattr(sampler, "generator", None)
    if isinstance(generator, torch.Generator) and run.sampler_generator is not None:
        generator.set_state(run.sampler_generator)


def adopt_round_0(search: SearchState, source: Path, origin: dict[str, Any]) -> None:
    """Take the finished round 0 of the search saved in ``source`` as this search's round 0
    (``start_from``): checked against its settings and ``origin`` (what this search's round 0
    would start from), then installed as a finished round 0 that :func:`advance` continues."""
    journal = search._journal
    record = _load_round_0(source)
    diff = _config_diff(json.loads(record["config"]), json.loads(journal.fingerprint), ignore=_AFTER_ROUND_0_KEYS)
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
    if search.adaptive and record.get("stats") is None:
        raise ValueError(
            f"start_from={str(source)!r}: that search recorded no per-sample statistics in round 0 (full-data "
            f"IMP or a replayed sampler), and a PrAC search needs them to pick its first PrAC set. Run the PrAC "
            f"search first and start the full-data search from its checkpoint_dir: round 0 is the same "
            f"computation in both"
        )
    run, n = journal.run, search.num_samples
    entry = {key: v for key, v in json.loads(record["entry"]).items() if not key.startswith("stats_") and key != "next_set"}
    run.stats = None
    if search.adaptive:
        stats = record_for(search.rule, n)
        try:
            stats.load_state_dict(record["stats"])
        except ValueError as e:  # a score this search's rule records that round 0 there did not
            raise ValueError(
                f"start_from={str(source)!r}: {e}. Its round 0 cannot pick this search's first set: run the search "
                f"with this rule first and start the others from its checkpoint_dir (every search records the "
                f"forgetting statistics)"
            ) from None
        entry.update({f"stats_{key}": v for key, v in stats.summary().items()})
        run.stats = record["stats"]
    search.model.load_state_dict(record["model"])
    run.history = [entry]
    run.rewind_state = record["rewind_state"]
    run.round_start, run.trainer, run.dense_predictions, run.targets = None, None, None, None
    run.origin = {**origin, "start_from": str(source)}  # kept in the run: meta says so after a resume too
    run.masks = _current_masks(search.parameters, search.names)
    run.model = _state(search.model)
    run.round, run.phase = 0, "done"
    if search.is_prac:
        search.sampler.begin_round(0)  # type: ignore[attr-defined]
    generator = getattr(search.sampler, "generator", None)
    if isinstance(generator, torch.Generator) and record.get("sampler_generator") is not None:
        generator.set_state(record["sampler_generator"])  # the data order goes on as after their round 0
    search.meta["start_from"] = str(source)
    if journal.directory is not None:
        run.sets = {0: torch.as_tensor(record["set"]).long()}
        journal.save_sets()
        journal.save_round_ticket(run.masks, 0)
        journal.save_round_0(entry, run.stats, search.model, n)
    journal.checkpoint()
    journal.note(f"round 0 taken from {str(source)!r} (finished there, not trained again)")  # stderr, with the other progress lines


def advance(search: SearchState) -> None:
    """Continue a finished search with more rounds: what its last round skipped because it
    was the last (pick the next PrAC set, prune, rewind), exactly as a run with that many
    rounds from the start would have done; its round ticket is rewritten (its history entry
    gains ``next_set``) and the stale final ticket removed."""
    journal = search._journal
    run, directory = journal.run, journal.directory
    k = run.history[-1]["round"]
    started = time.perf_counter()
    if search.adaptive:
        if run.stats is None:
            raise ValueError(
                f"the finished search in {str(directory)!r} kept no per-sample statistics of its last round "
                f"(it was saved by an older torch-tickets), so its PrAC set for round {k + 1} cannot be picked: run "
                f"rounds={search.rounds} in another checkpoint_dir (or start_from={str(directory)!r} there)"
            )
        stats = record_for(search.rule, search.num_samples)
        stats.load_state_dict(run.stats)
        run.history[-1]["next_set"] = select_next(search, k, stats)
    if directory is not None and journal.writer:
        # its history entry now has next_set, as in a longer run
        journal.save_round_ticket(_current_masks(search.parameters, search.names), k)
        (directory / "ticket.ticket").unlink(missing_ok=True)  # no longer the final ticket
    prune_and_rewind(search, k)
    if not carries(search.rule):  # scores that carry over (EL2N) seed the next round's record
        run.stats = None
    run.masks = _current_masks(search.parameters, search.names)
    run.model = _state(search.model)
    run.extra_wall = time.perf_counter() - started  # counted in the next round's wall time
    journal.checkpoint()
    journal.note(f"search extended to {search.rounds} rounds: round {k + 1} is next")  # stderr, with the other progress lines


def resume(search: SearchState, parameters: list[tuple[nn.Module, str]], sampler: Sampler[int],
           start_from: str | Path | None) -> None:
    """Bring a new search to where its folders say it is: restore its saved run onto the model
    and sampler, take ``start_from``'s round 0 when it has no round of its own, go on past a
    finished run when ``rounds`` grew, and write the final ticket of a finished run."""
    run, model = search._run, search.model
    adopt = start_from is not None and not run.history
    origin = (run.origin or _origin(model, sampler, search.num_samples)) if adopt else None  # before the restore moves anything
    restore(run, model, parameters, search.names, sampler)
    if search.world_size > 1:  # every rank has read the checkpoint before rank 0 writes the next one
        torch.distributed.barrier()
    if adopt:
        adopt_round_0(search, Path(start_from), origin)  # type: ignore[arg-type]
    elif run.origin and run.origin.get("start_from"):
        search.meta["start_from"] = run.origin["start_from"]  # a resumed search that started from another's round 0
    if run.phase == "done" and len(run.history) < search.rounds:
        advance(search)  # more rounds than the finished run had: go on where it stopped
    if run.phase == "done" and search._journal.writer:
        search._journal.finish()
