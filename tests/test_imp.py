"""tickets.prune, retrain and the accounting: tiny models, tiny data, seconds each."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, RandomSampler, SequentialSampler, TensorDataset

from tickets.search.options import EarlyBird, RunInterrupted
from tickets.search.accounting import iteration_savings
from tickets.search.run_folder import load_prac_sets
from tickets.search.driver import prune
from tickets.ticket.ticket import retrain
from tickets.prac.sampler import PrACSampler
from tickets.prac.rules import SelectionRule
from tickets.ticket.ticket import Ticket
from tickets.training.schedule import Schedule
from tickets.training.loop import train

torch.set_num_threads(1)


def _data(n: int = 240, seed: int = 0, noise: float = 0.3) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    w = torch.randn(12, 3, generator=torch.Generator().manual_seed(42))
    y = (x @ w + noise * torch.randn(n, 3, generator=g)).argmax(1)
    return TensorDataset(x, y)


def _model(seed: int = 1) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))


TRAIN, VAL, TEST = _data(240, 0), _data(60, 1), _data(60, 2)
COMMON: dict[str, Any] = dict(epochs=6, lr=0.05, batch_size=32, eval_data=VAL, test_data=TEST, quiet=True, seed=0)


def _strip(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in h.items() if "wall_time" not in k} for h in history]


# ---------------------------------------------------------------------- accounting
def test_accounting_sums_are_exact() -> None:
    ticket = prune(_model(), PrACSampler(TRAIN), rounds=3, rewind_to="1ep", **COMMON)
    total_steps = total_samples = 0
    for h in ticket.history:
        spe = math.ceil(h["set_size"] / 32)
        assert h["epochs"] == (6 if h["round"] == 0 else max(1, int(6 * h["set_fraction"])))
        assert h["steps"] == h["end_step"] - h["start_step"] == h["epochs"] * spe - h["start_step"]
        full_epochs, rest = divmod(h["start_step"], spe)
        first = (spe - rest) if rest else 0
        # samples: every full epoch shows the whole set; a partial first epoch shows its first batches
        expected = (h["epochs"] - full_epochs - (1 if rest else 0)) * h["set_size"] + min(first * 32, h["set_size"])
        assert h["samples"] == expected
        total_steps += h["steps"]
        total_samples += h["samples"]
        assert h["total_steps"] == total_steps and h["total_samples"] == total_samples
        assert h["set_size"] == round(h["set_fraction"] * len(TRAIN))
    assert ticket.history[0]["set_size"] == len(TRAIN) and ticket.history[0]["start_step"] == 0
    assert ticket.history[1]["sparsity"] == pytest.approx(0.2, abs=1e-3)
    assert ticket.history[2]["sparsity"] == pytest.approx(0.36, abs=1e-3)
    json.dumps(ticket.history)


def test_iteration_savings_counts_round_zero_in_both() -> None:
    prac = [{"round": 0, "steps": 100}, {"round": 1, "steps": 30}, {"round": 2, "steps": 20}]
    full = [{"round": 0, "steps": 100}, {"round": 1, "steps": 90}, {"round": 2, "steps": 90}]
    s = iteration_savings(prac, full, retrain_steps=500)
    assert (s.total_prac, s.total_full) == (150, 280)
    assert s.saved == pytest.approx(1 - 150 / 280)
    assert [r["saved"] for r in s.rows] == pytest.approx([0.0, 1 - 130 / 190, 1 - 150 / 280])
    assert "500" in str(s)
    # to a trained model: round k's PrAC ticket still trains once on the full data (full's round-k steps)
    assert [r["steps_trained_prac"] for r in s.rows] == [100, 130 + 90, 150 + 90]
    assert [r["steps_trained_full"] for r in s.rows] == [100, 190, 280]
    assert [r["saved_trained"] for r in s.rows] == pytest.approx([0.0, 1 - 220 / 190, 1 - 240 / 280])
    assert (s.total_prac_trained, s.total_full_trained) == (240, 280)
    assert s.saved_trained == pytest.approx(1 - 240 / 280)
    assert "to a trained model" in str(s) and "240" in str(s)
    # a round on the whole set without a budget is a trained model already; a budgeted one is not
    whole = [{"round": 0, "steps": 100, "set_fraction": 1.0}, {"round": 1, "steps": 90, "set_fraction": 1.0},
             {"round": 2, "steps": 30, "set_fraction": 1.0, "round_steps": 30}]
    t = iteration_savings(whole, full)
    assert [r["steps_trained_prac"] for r in t.rows] == [100, 190, 220 + 90]
    # a whole-set round cut short by the early-bird stop is not a trained model either
    cut = [dict(whole[0]), dict(whole[1], steps=40, early_stopped=True), dict(whole[1], round=2)]
    assert [r["steps_trained_prac"] for r in iteration_savings(cut, full).rows] == [100, 140 + 90, 230]
    with pytest.raises(ValueError, match="same number of rounds"):
        iteration_savings(prac, full[:2])


# ---------------------------------------------------------------------- the set
def test_the_set_shrinks_when_forgetting_is_rare() -> None:
    easy = _data(240, 0, noise=0.0)
    ticket = prune(_model(), PrACSampler(easy), rounds=2, epochs=8, lr=0.05, batch_size=32, quiet=True)
    first = ticket.history[0]
    assert first["next_set"]["size"] < len(easy) / 2
    assert ticket.history[1]["set_size"] == first["next_set"]["size"]
    assert ticket.history[1]["epochs"] < 8


def test_disagreement_samples_re_enter_the_set(tmp_path: Path) -> None:
    ticket = prune(_model(), PrACSampler(TRAIN), rounds=3, amount=0.9, epochs=6, lr=0.05, batch_size=32,
                   quiet=True, checkpoint_dir=tmp_path)
    sets = [set(s.tolist()) for s in load_prac_sets(tmp_path)]
    # samples left out of round 1 were not trained on, so only disagreement can bring them back
    returned = sets[2] - sets[1]
    assert returned and ticket.history[1]["next_set"]["added_by_disagreement"] >= len(returned)


def test_reused_sets_replay_on_another_architecture(tmp_path: Path) -> None:
    prune(_model(), PrACSampler(TRAIN), rounds=3, checkpoint_dir=tmp_path / "a", **COMMON)
    sets = load_prac_sets(tmp_path / "a")
    assert len(sets) == 3 and len(sets[0]) == len(TRAIN)
    torch.manual_seed(5)
    other = nn.Sequential(nn.Linear(12, 48), nn.ReLU(), nn.Linear(48, 16), nn.ReLU(), nn.Linear(16, 3))
    ticket = prune(other, PrACSampler.replay(TRAIN, sets), rounds=3, **COMMON)
    assert [h["set_size"] for h in ticket.history] == [len(s) for s in sets]
    assert "next_set" not in ticket.history[1]


# ---------------------------------------------------------------------- one code path
def test_vanilla_and_prac_imp_share_the_code_path(monkeypatch: pytest.MonkeyPatch) -> None:
    import tickets.search.driver as imp

    calls: list[str] = []
    real = imp.Trainer

    class Spy(real):  # type: ignore[misc, valid-type]
        def run(self):  # type: ignore[no-untyped-def]
            calls.append(type(self.sampler).__name__)
            return super().run()

    monkeypatch.setattr(imp, "Trainer", Spy)
    vanilla = prune(_model(), SequentialSampler(TRAIN), rounds=2, **COMMON)
    prac = prune(_model(), PrACSampler(TRAIN, shuffle=False), rounds=2, **COMMON)
    assert calls == ["SequentialSampler"] * 2 + ["PrACSampler"] * 2
    # round 0 is the same dense training: same steps, accuracy and the same first mask
    assert _strip(vanilla.history)[0] == {k: v for k, v in _strip(prac.history)[0].items()
                                          if not k.startswith(("stats_", "next_set"))}
    for key in vanilla.masks:
        assert torch.equal(vanilla.masks[key], prac.masks[key])
    assert all(h["set_fraction"] == 1.0 for h in vanilla.history)
    assert prac.history[1]["set_fraction"] < 1.0


# ---------------------------------------------------------------------- resume
class _Crash(RuntimeError):
    pass


def test_killed_and_resumed_run_equals_uninterrupted(tmp_path: Path) -> None:
    kwargs = dict(rounds=3, rewind_to="1ep", **COMMON)
    whole = prune(_model(), PrACSampler(TRAIN, seed=4), checkpoint_dir=tmp_path / "whole", **kwargs)

    def kill(round_index: int, entry: dict[str, Any]) -> None:
        if round_index == 1 and entry["epoch"] == 2:
            raise _Crash("killed mid-round")

    with pytest.raises(_Crash):
        prune(_model(), PrACSampler(TRAIN, seed=4), checkpoint_dir=tmp_path / "resumed", on_epoch=kill, **kwargs)
    assert (tmp_path / "resumed" / "state.pt").exists() and not (tmp_path / "resumed" / "ticket.ticket").exists()
    resumed = prune(_model(), PrACSampler(TRAIN, seed=4), checkpoint_dir=tmp_path / "resumed", **kwargs)
    assert _strip(resumed.history) == _strip(whole.history)
    for key, mask in whole.masks.items():
        assert torch.equal(resumed.masks[key], mask)
    for key, value in whole.rewind_state.items():  # type: ignore[union-attr]
        assert torch.equal(resumed.rewind_state[key], value)  # type: ignore[index]
    # a finished run returns its ticket without training
    again = prune(_model(), PrACSampler(TRAIN, seed=4), checkpoint_dir=tmp_path / "resumed", **kwargs)
    assert _strip(again.history) == _strip(whole.history)
    assert Ticket.load(tmp_path / "resumed" / "round_1.ticket").history[-1]["round"] == 1


class _FailingOnce(Dataset):
    """The training data, raising once at its n-th read (a crash mid-epoch, before any checkpoint)."""

    def __init__(self, base: Dataset, fail_at: int) -> None:
        self.base, self.reads, self.fail_at = base, 0, fail_at

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        self.reads += 1
        if self.reads == self.fail_at:
            raise RunInterrupted("crash mid-epoch")
        return self.base[i]


def test_crash_mid_epoch_of_a_vanilla_run_resumes_exactly(tmp_path: Path) -> None:
    kwargs = dict(rounds=2, rewind_to=3, **COMMON)
    whole = prune(_model(), RandomSampler(TRAIN, generator=torch.Generator().manual_seed(0)), **kwargs)
    flaky = _FailingOnce(TRAIN, fail_at=240 * 6 + 240 * 2 + 50)  # round 1, epoch 3
    with pytest.raises(RunInterrupted):
        prune(_model(), RandomSampler(flaky, generator=torch.Generator().manual_seed(0)),
              checkpoint_dir=tmp_path, **kwargs)
    resumed = prune(_model(), RandomSampler(flaky, generator=torch.Generator().manual_seed(0)),
                    checkpoint_dir=tmp_path, **kwargs)
    assert _strip(resumed.history) == _strip(whole.history)
    for key, mask in whole.masks.items():
        assert torch.equal(resumed.masks[key], mask)


def test_a_checkpoint_dir_of_other_settings_is_refused(tmp_path: Path) -> None:
    prune(_model(), PrACSampler(TRAIN), rounds=1, checkpoint_dir=tmp_path, **COMMON)
    with pytest.raises(ValueError, match="other settings.*amount"):
        prune(_model(), PrACSampler(TRAIN), rounds=1, amount=0.5, checkpoint_dir=tmp_path, **COMMON)


# ---------------------------------------------------------------------- rewinding
def test_late_rewinding_restores_the_weights_of_step_k() -> None:
    ticket = prune(_model(), PrACSampler(TRAIN), rounds=2, rewind_to=5, **COMMON)
    reference = _model()
    train(reference, TRAIN, Schedule(epochs=6, lr=0.05, batch_size=32), seed=0, stop_step=5,
          sampler=PrACSampler(TRAIN, seed=0))
    state = reference.state_dict()
    for key, value in ticket.rewind_state.items():  # type: ignore[union-attr]
        mask = ticket.masks.get(key)
        expected = state[key] * mask if mask is not None else state[key]
        assert torch.allclose(value, expected), key
    assert ticket.meta["rewind_step"] == 5 and ticket.history[1]["start_step"] >= 0


def test_learning_rate_rewinding_keeps_trained_weights() -> None:
    model = _model()
    ticket = prune(model, RandomSampler(TRAIN, generator=torch.Generator().manual_seed(0)), rounds=2,
                   rewind="lr", **COMMON)
    # the round-1 start weights are the round-0 trained weights, masked: not the initialization
    init = _model().state_dict()
    key = next(iter(ticket.masks))
    assert not torch.allclose(ticket.rewind_state[key], init[key] * ticket.masks[key])  # type: ignore[index]
    assert ticket.history[1]["start_step"] == 0 and ticket.meta["rewind"] == "lr"


def test_early_bird_stops_a_round_when_the_mask_settles() -> None:
    ticket = prune(_model(), RandomSampler(TRAIN, generator=torch.Generator().manual_seed(0)), rounds=2,
                   early_bird=EarlyBird(eps=0.99, window=1), **COMMON)
    assert ticket.history[1]["early_stopped"] and ticket.history[1]["epochs_trained"] == 2
    assert not ticket.history[0]["early_stopped"]


def test_retrain_measures_the_ticket_on_the_full_data() -> None:
    ticket = prune(_model(), PrACSampler(TRAIN), rounds=2, rewind_to="2ep", **COMMON)
    result = retrain(ticket, _model, TRAIN, epochs=6, lr=0.05, batch_size=32, eval_data=VAL, test_data=TEST)
    assert result.start_step == 16 and result.steps == 6 * 8 - 16
    assert 0.0 <= result.test_acc <= 1.0 and dict(result)["steps"] == result.steps
    assert ticket.history[-1]["total_steps"] == sum(h["steps"] for h in ticket.history)  # retraining not added
    with pytest.raises(ValueError, match="trained no step.*rewind point"):  # a schedule that ends at the rewind point
        retrain(ticket, _model, TRAIN, epochs=2, lr=0.05, batch_size=32)


# ---------------------------------------------------------------------- bad input
class _Unlabelled(Dataset):
    def __len__(self) -> int:
        return 10

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.randn(12)


def test_bad_input_fails_before_training() -> None:
    with pytest.raises(ValueError, match="rounds must be an int >= 1.*0"):
        prune(_model(), PrACSampler(TRAIN), rounds=0, epochs=1)
    with pytest.raises(ValueError, match="no labels"):
        prune(_model(), PrACSampler(_Unlabelled()), rounds=1, epochs=1)
    with pytest.raises(ValueError, match="not from train_data"):
        prune(_model(), PrACSampler(VAL), rounds=1, epochs=1, train_data=TRAIN)
    wrong = nn.Sequential(nn.Linear(12, 2))
    with pytest.raises(ValueError, match="label 2.*outputs 2 classes"):
        prune(wrong, PrACSampler(TRAIN), rounds=1, epochs=1, parameters=[(wrong[0], "weight")])
    with pytest.raises(ValueError, match="amount"):
        prune(_model(), PrACSampler(TRAIN), rounds=2, amount=1.5, epochs=1)
    with pytest.raises(ValueError, match="rewind_to"):
        prune(_model(), PrACSampler(TRAIN), rounds=2, epochs=2, batch_size=32, rewind_to="2ep")
    with pytest.raises(TypeError, match="unknown schedule argument"):
        prune(_model(), PrACSampler(TRAIN), rounds=2, schedule=dict(epochs=2, momentun=0.9))


def test_selection_variants_reach_prune() -> None:
    ticket = prune(_model(), PrACSampler(TRAIN), rounds=2, selection=SelectionRule(top_fraction=0.5, per_class=True),
                   **COMMON)
    counts = torch.bincount(TRAIN.tensors[1])
    expected = sum(int(round(0.5 * int(c))) for c in counts)
    assert ticket.history[0]["next_set"]["hard"] == expected
    assert ticket.meta["selection"]["per_class"] is True


def test_train_with_amp_and_channels_last_on_a_conv_net() -> None:
    torch.manual_seed(0)
    conv = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(4, 2))
    images = TensorDataset(torch.randn(40, 1, 6, 6), torch.randint(0, 2, (40,)))
    result = train(conv, images, epochs=2, batch_size=8, lr=0.05, amp=True, channels_last=True, eval_data=images)
    assert result.steps == 10 and result.val_acc is not None
    assert all(torch.isfinite(p).all() for p in conv.parameters())


def test_demo_runs_end_to_end_on_the_bundled_digits(tmp_path: Path) -> None:
    from tickets.demo import run_demo

    result = run_demo(rounds=2, epochs=2, out=tmp_path, measure=False, quiet=True)
    assert Ticket.load(result["paths"]["prac"]).sparsity == pytest.approx(0.3, abs=0.01)
    assert "saved (cum.)" in result["table"] and "total optimizer steps" in result["table"]
    assert "saved to a trained model" in result["table"] and "steps to a trained" in result["table"]
    assert result["imp"].history[0]["steps"] == result["prac"].history[0]["steps"]
