"""TicketSearch driven by a hand-written loop: same sets and accounting as the engine,
clear errors for the mistakes of hand-written loops, resume."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import tickets
from tickets import PrACSampler, TicketSearch


def blobs(n: int = 96, classes: int = 3, dim: int = 8, seed: int = 0, noise: float = 1.2) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(classes, dim, generator=g) * 1.5
    y = torch.arange(n) % classes
    x = centers[y] + noise * torch.randn(n, dim, generator=g)
    return TensorDataset(x, y)


def mlp(seed: int = 0, dim: int = 8, classes: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, classes))


COMMON = dict(rounds=3, epochs=4, batch_size=16, amount=0.3, rewind_to="1ep", precision="fp32", quiet=True,
              parameters=None)


def own_loop(search: TicketSearch, model: nn.Module, val, *, stop_in_round: int | None = None,
             net: nn.Module | None = None) -> None:
    """The loop users write (the engine's arithmetic: SGD, cross-entropy, the round's schedule);
    ``net`` is the module to train through (a DistributedDataParallel around ``model``)."""
    net = net if net is not None else model
    loader = search.loader()
    for rnd in search:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        scheduler = rnd.lr_scheduler(optimizer)
        for _ in rnd:
            model.train()
            for x, y, idx in loader:
                logits = net(x)
                loss = F.cross_entropy(logits, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                rnd.report(idx, logits, y)
                if stop_in_round == rnd.index and rnd.steps == 2:
                    raise KeyboardInterrupt
            rnd.end_epoch(val_acc=tickets.evaluate(model, val, precision="fp32").accuracy)
        search.end_round()


KEYS = ("round", "sparsity", "set_size", "set_fraction", "epochs", "start_step", "end_step", "steps", "samples",
        "val_acc", "best_epoch", "early_stopped", "stats_seen", "stats_forgotten", "stats_never_learned", "next_set")


def test_own_loop_matches_the_engine_sets_and_accounting():
    train, val = blobs(96, seed=0), blobs(48, seed=1)
    engine_model = mlp()
    engine_sampler = PrACSampler(train, seed=0)
    ticket = tickets.prune(engine_model, engine_sampler, eval_data=val, **COMMON)

    model = mlp()
    sampler = PrACSampler(train, seed=0)
    search = TicketSearch(model, sampler, **COMMON)
    own_loop(search, model, val)
    assert search.done
    mine = search.ticket
    # the same PrAC sets, round by round, and the same accounting
    assert [h["size"] for h in sampler.history] == [h["size"] for h in engine_sampler.history]
    assert torch.equal(sampler.indices, engine_sampler.indices)
    assert len(mine.history) == len(ticket.history) == 3
    for a, b in zip(mine.history, ticket.history):
        for key in KEYS:
            assert a.get(key) == b.get(key), (a["round"], key, a.get(key), b.get(key))
    assert mine.history[1]["set_size"] < 96  # a real PrAC round, not the full set
    assert mine.masks.keys() == ticket.masks.keys()
    for key in mine.masks:
        assert torch.equal(mine.masks[key], ticket.masks[key])
    for key, value in mine.rewind_state.items():
        assert torch.equal(value, ticket.rewind_state[key]), key
    for a, b in zip(model.state_dict().values(), engine_model.state_dict().values()):
        assert torch.equal(a, b)
    savings = tickets.iteration_savings(mine, ticket)
    assert savings.saved == 0.0


def test_vanilla_imp_with_a_random_sampler_and_rnd_batches():
    train = blobs(64)
    model = mlp()
    search = TicketSearch(model, RandomSampler(train, generator=torch.Generator().manual_seed(0)),
                          rounds=2, epochs=2, batch_size=16, rewind_to=3, quiet=True)
    loader = DataLoader(tickets.IndexedDataset(train), batch_size=16, sampler=search.sampler)
    for rnd in search:
        assert rnd.set_size == 64 and rnd.stats is None
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        for _ in rnd:
            for x, y, idx in rnd.batches(loader):
                for group in optimizer.param_groups:
                    group["lr"] = 0.05 * rnd.lr_factor()
                logits = model(x)
                optimizer.zero_grad()
                F.cross_entropy(logits, y).backward()
                optimizer.step()
                rnd.report(idx, logits, y)
    history = search.ticket.history
    assert [h["steps"] for h in history] == [8, 8 - 3]  # round 1 starts at the rewind point (step 3)
    assert history[1]["start_step"] == 3 and history[1]["sparsity"] == pytest.approx(0.2, abs=0.01)
    assert search.ticket.meta["method"] == "imp"


def test_own_loop_resumes_at_the_round_it_was_in(tmp_path):
    train, val = blobs(96), blobs(48, seed=1)
    reference_model = mlp()
    reference = TicketSearch(reference_model, PrACSampler(train), checkpoint_dir=tmp_path / "a", **COMMON)
    own_loop(reference, reference_model, val)

    model = mlp()
    search = TicketSearch(model, PrACSampler(train), checkpoint_dir=tmp_path / "b", **COMMON)
    with pytest.raises(KeyboardInterrupt):
        own_loop(search, model, val, stop_in_round=2)
    assert search.round == 2
    model = mlp(seed=5)  # a fresh process: another model object (its init is replaced by the checkpoint)
    resumed = TicketSearch(model, PrACSampler(train), checkpoint_dir=tmp_path / "b", **COMMON)
    assert resumed.round == 2 and len(resumed.history) == 2
    own_loop(resumed, model, val)
    a, b = reference.ticket, resumed.ticket
    for key in a.masks:
        assert torch.equal(a.masks[key], b.masks[key])
    for x, y in zip(a.history, b.history):
        for key in KEYS:
            assert x.get(key) == y.get(key), key
    assert (tmp_path / "b" / "ticket.ticket").is_file()
    # a finished search returns at once and refuses more rounds
    done = TicketSearch(mlp(), PrACSampler(train), checkpoint_dir=tmp_path / "b", **COMMON)
    assert done.done and list(done) == []
    with pytest.raises(RuntimeError, match="finished"):
        done.begin_round()
    # an engine run is another run: the checkpoint says so
    with pytest.raises(ValueError, match="other settings"):
        tickets.prune(mlp(), PrACSampler(train), checkpoint_dir=tmp_path / "b", **COMMON)


def test_mistakes_of_hand_written_loops_get_clear_errors():
    train = blobs(96)
    model = mlp()
    search = TicketSearch(model, PrACSampler(train), rounds=3, epochs=2, batch_size=16, amount=0.5, quiet=True)
    with pytest.raises(RuntimeError, match="no round is open"):
        search.end_round()
    rnd = search.begin_round()
    with pytest.raises(RuntimeError, match="still open"):
        search.begin_round()
    with pytest.raises(RuntimeError, match="before any step"):
        search.end_round()
    x, y = train.tensors
    logits = model(x[:4])
    with pytest.raises(ValueError, match="index 96 is outside the training set"):
        rnd.report(torch.tensor([0, 1, 2, 96]), logits, y[:4])
    with pytest.raises(ValueError, match=r"logits must be a \[batch, classes\] tensor; got \(4,\)"):
        rnd.report(torch.arange(4), logits[:, 0], y[:4])
    with pytest.raises(ValueError, match="logits have 2 classes; the model gave 3"):
        rnd.report(torch.arange(4), logits[:, :2], y[:4])
    with pytest.raises(ValueError, match="3 indices for 4 logits"):
        rnd.report(torch.arange(3), logits, y[:4])
    with pytest.raises(ValueError, match="targets must be 4 class labels"):
        rnd.report(torch.arange(4), logits, y[:3])
    with pytest.raises(TypeError, match="1-d integer tensor"):
        rnd.report(torch.arange(4).float(), logits, y[:4])
    with pytest.raises(ValueError, match="does not train '2.weight'"):
        rnd.attach(torch.optim.SGD(mlp().parameters(), lr=0.1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = rnd.lr_scheduler(optimizer)
    loader = search.loader()
    for _ in rnd:
        for xb, yb, idx in loader:
            out = model(xb)
            optimizer.zero_grad()
            F.cross_entropy(out, yb).backward()
            optimizer.step()
            scheduler.step()
            rnd.report(idx, out, yb)
    assert rnd.done and rnd.steps == 12
    with pytest.raises(RuntimeError, match="all were reported"):
        rnd.report(torch.arange(4), logits, y[:4])
    search.end_round()
    with pytest.raises(RuntimeError, match="closed"):
        rnd.report(torch.arange(4), logits, y[:4])
    rnd = search.begin_round()
    assert rnd.set_size < 96
    with pytest.raises(ValueError, match="optimizer of an earlier round"):
        rnd.attach(optimizer)
    stale = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    stale.state[next(model.parameters())]["momentum_buffer"] = torch.zeros(1)
    with pytest.raises(ValueError, match="already holds state"):
        rnd.attach(stale)
    outside = int((~rnd._member).nonzero()[0])
    inside = rnd.indices[:3]
    with pytest.raises(ValueError, match=f"sample {outside} is not in it"):
        rnd.report(torch.cat([inside, torch.tensor([outside])]), model(x[:4]), y[:4])
    with pytest.raises(ValueError, match=r"val_acc must be an accuracy in \[0, 1\]"):
        rnd.report(inside, model(x[inside]), y[inside])
        rnd.end_epoch(val_acc=87.5)


def test_soft_targets_count_by_their_argmax_and_metrics_reach_the_history():
    train = blobs(48)
    model = mlp()
    search = TicketSearch(model, PrACSampler(train), rounds=1, epochs=1, batch_size=48, quiet=True)
    rnd = search.begin_round()
    x, y, idx = next(iter(search.loader()))
    logits = model(x)
    soft = F.one_hot(y, 3).float() * 0.9 + 0.1 / 3  # label smoothing
    rnd.report(idx, logits, soft)
    assert int(rnd.stats.seen.sum()) == 48
    assert int(rnd.stats.ever_correct.sum()) == int(logits.argmax(1).eq(y).sum())
    entry = search.end_round(val_acc=0.5, test_acc=0.25, ema_decay=0.99)
    assert entry["val_acc"] == 0.5 and entry["test_acc"] == 0.25 and entry["metrics"] == {"ema_decay": 0.99}
    assert search.done and search.ticket.history[0]["steps"] == 1


def test_early_bird_stops_an_own_loop_round():
    train = blobs(96)
    model = mlp()
    bird = tickets.EarlyBird(eps=0.99, window=1)  # stops at the second epoch of a pruned round
    search = TicketSearch(model, RandomSampler(train), rounds=2, epochs=5, batch_size=32, early_bird=bird, quiet=True)
    for rnd in search:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
        epochs = 0
        for _ in rnd:
            epochs += 1
            for x, y, idx in search.loader():
                out = model(x)
                optimizer.zero_grad()
                F.cross_entropy(out, y).backward()
                optimizer.step()
                rnd.report(idx, out, y)
        assert epochs == (5 if rnd.index == 0 else 2)
    assert [h["early_stopped"] for h in search.history] == [False, True]
    assert search.history[1]["steps"] == 6


def test_option_groups_and_the_old_keywords_are_one_thing():
    sched, pruning, prac, runtime = tickets.search.resolve_options(
        tickets.Schedule(epochs=3), tickets.Pruning(amount=0.5), None, None, rewind_to="1ep", lr=0.2, quiet=True)
    assert (sched.epochs, sched.lr, pruning.amount, pruning.rewind_to, runtime.quiet) == (3, 0.2, 0.5, "1ep", True)
    assert prac == tickets.PrACOptions()
    with pytest.raises(TypeError, match=r"unknown argument\(s\) \['amout'\]; valid option keywords: \[.*'amount'"):
        tickets.search.resolve_options(amout=0.2)
    with pytest.raises(TypeError, match="pruning must be a tickets.Pruning"):
        tickets.search.resolve_options(pruning=tickets.Runtime())
    with pytest.raises(ValueError, match="amount must be a fraction"):
        tickets.Pruning(amount=1.5)
    with pytest.raises(ValueError, match="min_step_fraction"):
        tickets.PrACOptions(min_step_fraction=2)
    with pytest.raises(ValueError, match="num_workers"):
        tickets.Runtime(num_workers=-1)
    with pytest.raises(TypeError, match="unknown argument"):
        tickets.prune(mlp(), PrACSampler(blobs(12)), rounds=1, epochs=1, amout=0.2)


def test_from_model_keeps_the_current_weights_by_default(tmp_path):
    model = mlp()
    tickets.global_magnitude_prune(tickets.prunable_parameters(model, keep_dense=()), 0.6)
    with torch.no_grad():
        model[0].weight_orig.add_(1.0)
    tickets.enforce_masks(model)
    tickets.Ticket.from_model(model).save(tmp_path / "t.ticket")
    fresh = tickets.Ticket.load(tmp_path / "t.ticket").apply(mlp(seed=3))
    x = torch.randn(5, 8)
    assert torch.equal(fresh(x), model(x))
    assert tickets.Ticket.from_model(model, weights=False).rewind_state is None
    with pytest.raises(TypeError, match="weights must be True"):
        tickets.Ticket.from_model(model, weights="no")


def test_end_epoch_takes_an_eval_result_and_names_other_types():
    """``rnd.end_epoch(val_acc=tickets.evaluate(...))``: the EvalResult's accuracy is the
    validation number and its loss the validation loss (unless val_loss is given); anything
    else that is not a number is a TypeError naming its type."""
    train, val = blobs(48), blobs(24, seed=1)
    model = mlp()
    search = TicketSearch(model, PrACSampler(train), rounds=1, epochs=3, batch_size=16, quiet=True)
    rnd = search.begin_round()
    loader = search.loader()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = rnd.lr_scheduler(optimizer)

    def one_epoch() -> None:
        for x, y, idx in rnd.batches(loader):
            logits = model(x)
            optimizer.zero_grad()
            F.cross_entropy(logits, y).backward()
            optimizer.step()
            scheduler.step()
            rnd.report(idx, logits, y)

    one_epoch()
    result = tickets.evaluate(model, val, precision="fp32")
    assert isinstance(result, tickets.training.results.EvalResult)
    rnd.end_epoch(val_acc=result)
    assert rnd.log[-1]["val_acc"] == result.accuracy and rnd.log[-1]["val_loss"] == result.loss
    one_epoch()
    rnd.end_epoch(val_acc=tickets.evaluate(model, val, precision="fp32"), val_loss=0.125)
    assert rnd.log[-1]["val_loss"] == 0.125
    one_epoch()
    for wrong in ({"accuracy": 0.5}, "0.5", [0.5]):
        with pytest.raises(TypeError, match=f"val_acc must be a number .* or the EvalResult .*; got {type(wrong).__name__}"):
            rnd.end_epoch(val_acc=wrong)
    rnd.end_epoch(val_acc=torch.tensor(0.5))  # a 0-d tensor is a number
    entry = search.end_round()
    assert entry["val_acc"] == max(h["val_acc"] for h in rnd.log)
