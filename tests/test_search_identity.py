"""A search's identity: the optimizer in the resume fingerprint, an already-pruned model refused,
``rounds`` growing on a finished search, and a search that starts from another's round 0.
Tiny models and data, CPU fp32, bit-for-bit comparisons; seconds each."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import RandomSampler, TensorDataset

from tickets.search.driver import prune
from tickets.prac.sampler import PrACSampler
from tickets.search.ticket_search import TicketSearch
from tickets.search.identity import describe_optimizer
from tickets.ticket.ticket import Ticket

torch.set_num_threads(1)


def _data(n: int, seed: int) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 10, generator=g)
    w = torch.randn(10, 3, generator=torch.Generator().manual_seed(42))
    y = (x @ w + 0.5 * torch.randn(n, 3, generator=g)).argmax(1)
    return TensorDataset(x, y)


def _model(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(10, 24), nn.BatchNorm1d(24), nn.ReLU(), nn.Linear(24, 24), nn.ReLU(), nn.Linear(24, 3))


TRAIN, VAL = _data(160, 0), _data(48, 1)
COMMON: dict[str, Any] = dict(epochs=4, lr=0.05, batch_size=32, rewind_to="1ep", amount=0.3, eval_data=VAL,
                              quiet=True, seed=0, precision="fp32")


def _full(seed: int = 0) -> PrACSampler:
    """Full-data IMP with the data order of PrAC IMP (as the harness's full_data_sampler)."""
    return PrACSampler.replay(TRAIN, [torch.arange(len(TRAIN))], seed=seed)


def _strip(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if "wall_time" not in k} for h in history]


def _assert_same(a: Ticket, b: Ticket, model_a: nn.Module, model_b: nn.Module) -> None:
    assert _strip(a.history) == _strip(b.history)
    assert a.masks.keys() == b.masks.keys()
    for key in a.masks:
        assert torch.equal(a.masks[key], b.masks[key]), key
    for key, value in a.rewind_state.items():  # type: ignore[union-attr]
        assert torch.equal(value, b.rewind_state[key]), key  # type: ignore[index]
    sa, sb = model_a.state_dict(), model_b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


# ---------------------------------------------------------------------- item 2: the optimizer
def _adamw(lr: float) -> Any:
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.01)


def test_changed_optimizer_factory_is_refused_and_meta_records_what_trained(tmp_path: Path) -> None:
    kwargs = dict(COMMON, rounds=2, epochs=2, checkpoint_dir=tmp_path / "run")
    ticket = prune(_model(), PrACSampler(TRAIN), optimizer=_adamw(1e-3), **kwargs)
    recorded = ticket.meta["optimizer"]
    assert recorded["class"] == "torch.optim.adamw.AdamW"
    group = recorded["param_groups"][0]
    assert group["lr"] == 1e-3 and group["weight_decay"] == 0.01 and group["betas"] == [0.9, 0.999]
    assert not {"lr", "momentum", "weight_decay", "nesterov"} & set(ticket.meta["schedule"])  # SGD defaults never ran
    assert all(h["optimizer"] == recorded for h in ticket.history)
    # another lr, another optimizer: refused, naming what differs
    with pytest.raises(ValueError, match=r"other settings.*optimizer\.param_groups\[0\]\.lr.*0\.001.*0\.01"):
        prune(_model(), PrACSampler(TRAIN), optimizer=_adamw(1e-2), **kwargs)
    with pytest.raises(ValueError, match=r"optimizer\.class"):
        prune(_model(), PrACSampler(TRAIN), optimizer=lambda p: torch.optim.SGD(p, lr=1e-3), **kwargs)
    again = prune(_model(), PrACSampler(TRAIN), optimizer=_adamw(1e-3), **kwargs)  # the same recipe resumes
    assert _strip(again.history) == _strip(ticket.history)
    # without a factory, the Schedule's SGD is what trained, and meta says so
    plain = prune(_model(), PrACSampler(TRAIN), rounds=1, **dict(COMMON, epochs=2))
    assert plain.meta["schedule"]["lr"] == 0.05
    assert plain.meta["optimizer"]["class"] == "torch.optim.sgd.SGD"
    assert plain.meta["optimizer"]["param_groups"][0]["momentum"] == 0.9


def test_describe_optimizer_covers_every_group_and_the_base_lr() -> None:
    model = _model()
    opt = torch.optim.SGD([{"params": model[0].parameters()}, {"params": model[3].parameters(), "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)
    torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5)  # the scheduler halves lr: the record keeps the base
    record = describe_optimizer(opt)
    assert record["class"] == "torch.optim.sgd.SGD" and len(record["param_groups"]) == 2
    assert [g["weight_decay"] for g in record["param_groups"]] == [5e-4, 0.0]
    assert all(g["lr"] == 0.1 and g["nesterov"] is True and "params" not in g for g in record["param_groups"])


def _own_loop(search: TicketSearch, model: nn.Module, make_optimizer: Any, stop_at: int | None = None) -> None:
    loader = search.loader()
    for rnd in search:
        if stop_at is not None and rnd.index == stop_at:
            return
        optimizer = make_optimizer(rnd.index, model)
        scheduler = rnd.lr_scheduler(optimizer)
        for _ in rnd:
            for x, y, idx in rnd.batches(loader):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                rnd.report(idx, logits, y)


def test_own_loop_records_its_optimizer_and_refuses_another_one_after_a_resume(tmp_path: Path) -> None:
    kwargs = dict(rounds=3, epochs=2, batch_size=32, quiet=True, precision="fp32", checkpoint_dir=tmp_path / "own")
    model = _model()
    search = TicketSearch(model, PrACSampler(TRAIN), **kwargs)
    _own_loop(search, model, lambda k, m: torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9), stop_at=2)
    assert [h["optimizer"]["param_groups"][0]["lr"] for h in search.history] == [0.05, 0.05]
    model = _model()
    resumed = TicketSearch(model, PrACSampler(TRAIN), **kwargs)
    assert resumed.round == 2
    with pytest.raises(ValueError, match=r"another optimizer than the earlier rounds.*param_groups\[0\]\.lr"):
        _own_loop(resumed, model, lambda k, m: torch.optim.SGD(m.parameters(), lr=0.5, momentum=0.9))


# ---------------------------------------------------------------------- item 4: a pruned model
def test_an_already_pruned_model_is_refused_and_a_fresh_model_resumes(tmp_path: Path) -> None:
    kwargs = dict(COMMON, rounds=2, epochs=2, checkpoint_dir=tmp_path / "run")
    model = _model()
    ticket = prune(model, PrACSampler(TRAIN), **kwargs)
    # the notebook habit: the same (now pruned) model object again, with or without its folder
    for again in (kwargs, dict(kwargs, checkpoint_dir=tmp_path / "other")):
        with pytest.raises(ValueError, match=r"already pruned: 1 tensor\(s\) carry masks \(3\.weight\), 30\.0% of their weights.*fresh model.*ticket\.apply"):
            prune(model, PrACSampler(TRAIN), **again)
    with pytest.raises(ValueError, match="already pruned"):
        TicketSearch(model, PrACSampler(TRAIN), rounds=2)
    resumed = prune(_model(), PrACSampler(TRAIN), **kwargs)  # a fresh model resumes (here: the finished run)
    assert _strip(resumed.history) == _strip(ticket.history)


# ---------------------------------------------------------------------- item 5: more rounds
@pytest.mark.parametrize("kind", ["prac", "full", "random"])
@pytest.mark.parametrize("first", [1, 2])
def test_a_finished_search_extended_equals_one_run_with_that_many_rounds(tmp_path: Path, kind: str, first: int) -> None:
    def sampler() -> Any:
        if kind == "random":
            return RandomSampler(TRAIN, generator=torch.Generator().manual_seed(3))
        return PrACSampler(TRAIN) if kind == "prac" else _full()

    whole_model = _model()
    whole = prune(whole_model, sampler(), rounds=3, checkpoint_dir=tmp_path / "whole", **COMMON)
    short = prune(_model(), sampler(), rounds=first, checkpoint_dir=tmp_path / "grown", **COMMON)
    assert len(short.history) == first and (tmp_path / "grown" / "ticket.ticket").is_file()
    grown_model = _model()
    grown = prune(grown_model, sampler(), rounds=3, checkpoint_dir=tmp_path / "grown", **COMMON)
    _assert_same(whole, grown, whole_model, grown_model)
    # the folder says the same: round tickets rewritten with next_set, the final ticket is the new last round
    for k in range(3):
        a = Ticket.load(tmp_path / "whole" / f"round_{k}.ticket")
        b = Ticket.load(tmp_path / "grown" / f"round_{k}.ticket")
        assert _strip(a.history) == _strip(b.history), k
    final = Ticket.load(tmp_path / "grown" / "ticket.ticket")
    assert final.meta["round"] == 2 and _strip(final.history) == _strip(whole.history)
    # rounds may not shrink below what the folder has finished
    with pytest.raises(ValueError, match=r"rounds=2 is fewer than .* finished 3 round\(s\).*rounds >= 3"):
        prune(_model(), sampler(), rounds=2, checkpoint_dir=tmp_path / "grown", **COMMON)


def test_rounds_may_grow_on_a_running_search_but_not_shrink_below_the_round_it_is_in(tmp_path: Path) -> None:
    whole_model = _model()
    whole = prune(whole_model, PrACSampler(TRAIN), rounds=4, **COMMON)

    class Stop(RuntimeError):
        pass

    def stop(entry: dict[str, Any]) -> None:
        if entry["round"] == 1:
            raise Stop

    with pytest.raises(Stop):
        prune(_model(), PrACSampler(TRAIN), rounds=3, checkpoint_dir=tmp_path / "run", on_round=stop, **COMMON)
    with pytest.raises(ValueError, match=r"rounds=2 is fewer than .* begun round 2.*rounds >= 3"):
        prune(_model(), PrACSampler(TRAIN), rounds=2, checkpoint_dir=tmp_path / "run", **COMMON)
    grown_model = _model()
    grown = prune(grown_model, PrACSampler(TRAIN), rounds=4, checkpoint_dir=tmp_path / "run", **COMMON)
    _assert_same(whole, grown, whole_model, grown_model)


# ---------------------------------------------------------------------- item 9: start from another's round 0
def test_a_search_started_from_another_round_0_equals_one_that_computed_it(tmp_path: Path) -> None:
    dense = _model()
    # the PrAC search computes round 0 (here it stops there: rounds=1; any number of rounds works)
    prune(copy.deepcopy(dense), PrACSampler(TRAIN), rounds=1, checkpoint_dir=tmp_path / "prac0", **COMMON)
    assert (tmp_path / "prac0" / "round_0.pt").is_file()
    for name, sampler in (("prac", lambda: PrACSampler(TRAIN)), ("full", _full)):
        alone_model, started_model = copy.deepcopy(dense), copy.deepcopy(dense)
        alone = prune(alone_model, sampler(), rounds=3, checkpoint_dir=tmp_path / f"{name}-alone", **COMMON)
        started = prune(started_model, sampler(), rounds=3, checkpoint_dir=tmp_path / f"{name}-started",
                        start_from=tmp_path / "prac0", **COMMON)
        _assert_same(alone, started, alone_model, started_model)
        assert started.meta["start_from"] == str(tmp_path / "prac0")
        source = Ticket.load(tmp_path / "prac0" / "ticket.ticket").history[0]
        assert started.history[0]["wall_time_s"] == source["wall_time_s"]  # taken, not trained again
        assert torch.equal(torch.load(tmp_path / f"{name}-started" / "prac_sets.pt")[1],
                           torch.load(tmp_path / f"{name}-alone" / "prac_sets.pt")[1])
        # a rerun resumes its own folder (start_from no longer matters)
        again = prune(copy.deepcopy(dense), sampler(), rounds=3, checkpoint_dir=tmp_path / f"{name}-started",
                      start_from=tmp_path / "prac0", **COMMON)
        assert _strip(again.history) == _strip(alone.history)
        assert again.meta["start_from"] == str(tmp_path / "prac0")  # the resumed ticket still says where round 0 came from
    # without a checkpoint_dir of its own, and from a search that went on past round 0
    free_model = copy.deepcopy(dense)
    free = prune(free_model, _full(), rounds=3, start_from=tmp_path / "prac-alone", **COMMON)
    _assert_same(Ticket.load(tmp_path / "full-alone" / "ticket.ticket"), free, alone_model, free_model)


def test_a_mismatched_start_is_refused(tmp_path: Path) -> None:
    dense = _model()
    prune(copy.deepcopy(dense), PrACSampler(TRAIN), rounds=1, checkpoint_dir=tmp_path / "prac0", **COMMON)
    prune(copy.deepcopy(dense), _full(), rounds=1, checkpoint_dir=tmp_path / "full0", **COMMON)
    source = tmp_path / "prac0"
    with pytest.raises(ValueError, match=r"other settings.*\['optimizer\.param_groups\[0\]\.lr', 'schedule'\]"):
        prune(copy.deepcopy(dense), _full(), rounds=2, start_from=source, **dict(COMMON, lr=0.1))
    with pytest.raises(ValueError, match=r"\['rewind_to'\]"):
        prune(copy.deepcopy(dense), _full(), rounds=2, start_from=source, **dict(COMMON, rewind_to="2ep"))
    with pytest.raises(ValueError, match="initial weights"):
        prune(_model(seed=7), _full(), rounds=2, start_from=source, **COMMON)
    with pytest.raises(ValueError, match="the data order"):
        prune(copy.deepcopy(dense), _full(seed=5), rounds=2, start_from=source, **COMMON)
    with pytest.raises(ValueError, match=r"\['sampler'\]"):
        prune(copy.deepcopy(dense), RandomSampler(TRAIN), rounds=2, start_from=source, **COMMON)
    with pytest.raises(ValueError, match="recorded no per-sample statistics.*Run the PrAC search first"):
        prune(copy.deepcopy(dense), PrACSampler(TRAIN), rounds=2, start_from=tmp_path / "full0", **COMMON)
    with pytest.raises(ValueError, match="holds no finished round 0"):
        prune(copy.deepcopy(dense), _full(), rounds=2, start_from=tmp_path, **COMMON)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        prune(copy.deepcopy(dense), _full(), rounds=2, start_from=tmp_path / "nowhere", **COMMON)


def test_checkpoints_of_the_older_format_still_resume_and_say_why_they_cannot_grow(tmp_path: Path) -> None:
    """A state.pt written before the optimizer was in the fingerprint, without the kept
    statistics and the origin: it resumes; growing its PrAC search is refused with the reason."""
    import json

    kwargs = dict(COMMON, rounds=2, checkpoint_dir=tmp_path / "old")
    ticket = prune(_model(), PrACSampler(TRAIN), **kwargs)
    path = tmp_path / "old" / "state.pt"
    payload = torch.load(path, weights_only=True)
    config = json.loads(payload["fingerprint"])
    del config["optimizer"]
    payload["fingerprint"] = json.dumps(config, sort_keys=True)
    for key in ("stats", "origin"):
        payload.pop(key, None)
    torch.save(payload, path)
    again = prune(_model(), PrACSampler(TRAIN), **kwargs)
    assert _strip(again.history) == _strip(ticket.history)
    with pytest.raises(ValueError, match=r"kept no per-sample statistics of its last round.*round 2 cannot be picked"):
        prune(_model(), PrACSampler(TRAIN), **dict(kwargs, rounds=3))
    with pytest.raises(ValueError, match=r"other settings.*\['seed'\]"):  # the other settings are still checked
        prune(_model(), PrACSampler(TRAIN), **dict(kwargs, seed=1))
