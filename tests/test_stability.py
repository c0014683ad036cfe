"""Stability analysis: interpolation, error barriers, instability (tiny models, seconds)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import tickets
from tickets.stability.interpolation import error_barrier, interpolate, interpolated_model, recompute_bn_statistics
from tickets.training.schedule import Schedule


def xor_task(n: int = 512, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Points in [-2, 2]^2 labelled by the quadrant parity: needs a nonlinear model."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g) * 4 - 2
    return x, ((x[:, 0] > 0) ^ (x[:, 1] > 0)).long()


def batches(x: torch.Tensor, y: torch.Tensor, size: int = 128) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[i : i + size], y[i : i + size]) for i in range(0, len(x), size)]


def mlp(seed: int, width: int = 32) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(2, width), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(),
        nn.Linear(width, 2),
    )


def fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, seed: int, steps: int = 300) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    model.train()
    for _ in range(steps):
        i = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
        tickets.enforce_masks(model)
    return model.eval()


@pytest.fixture(scope="module")
def data() -> dict[str, list]:
    x, y = xor_task(512, 0)
    xt, yt = xor_task(512, 1)
    return {"train": batches(x, y), "test": batches(xt, yt), "x": x, "y": y}


@pytest.fixture(scope="module")
def two_solutions(data: dict) -> tuple[nn.Module, nn.Module]:
    """Two independently initialized MLPs that both solve the task."""
    return fit(mlp(0), data["x"], data["y"], 0), fit(mlp(1), data["x"], data["y"], 1)


def pruned_pair(data: dict) -> tuple[nn.Module, nn.Module]:
    """Two copies of one ticket (same masks) trained with different data order."""
    start = mlp(3)
    tickets.global_magnitude_prune(tickets.prunable_parameters(start, keep_dense=()), 0.5)
    a = fit(copy.deepcopy(start), data["x"], data["y"], 10, steps=150)
    b = fit(copy.deepcopy(start), data["x"], data["y"], 11, steps=150)
    return a, b


# ---------------------------------------------------------------------- barrier
def test_barrier_is_zero_for_identical_models(data: dict, two_solutions: tuple) -> None:
    a, _ = two_solutions
    result = error_barrier(a, copy.deepcopy(a), data["train"], data["test"], alphas=7)
    assert result.train_barrier == pytest.approx(0.0, abs=1e-12)
    assert result.test_barrier == pytest.approx(0.0, abs=1e-12)
    assert len(set(result.train.errors)) == 1
    assert result.stable()


def test_independent_solutions_have_a_positive_barrier(data: dict, two_solutions: tuple) -> None:
    a, b = two_solutions
    result = error_barrier(a, b, data["train"], data["test"], alphas=11)
    assert max(result.train.errors[0], result.train.errors[-1]) < 0.05  # both solve the task
    assert result.train_barrier > 0.05
    assert result.test_barrier > 0.05
    assert not result.stable()
    assert result.train.loss_barrier > 0


def test_interpolated_statistics_inflate_the_barrier(data: dict, two_solutions: tuple) -> None:
    a, b = two_solutions
    recomputed = error_barrier(a, b, data["train"], alphas=11)
    interpolated = error_barrier(a, b, data["train"], alphas=11, recompute_bn=False)
    assert interpolated.train_barrier > recomputed.train_barrier > 0


def test_barrier_does_not_change_the_models(data: dict, two_solutions: tuple) -> None:
    a, b = two_solutions
    before = [copy.deepcopy(a.state_dict()), copy.deepcopy(b.state_dict())]
    error_barrier(a, b, data["train"], alphas=3)
    for model, state in zip((a, b), before):
        for key, value in model.state_dict().items():
            assert torch.equal(value, state[key]), key


def test_interpolation_result_fields(data: dict, two_solutions: tuple) -> None:
    a, b = two_solutions
    line = interpolate(a, b, data["test"], bn_data=data["train"], alphas=5)
    assert line.alphas == (0.0, 0.25, 0.5, 0.75, 1.0)
    assert len(line.errors) == len(line.losses) == 5
    assert line.samples == 512
    assert line.recompute_bn
    assert line.to_dict()["barrier"] == pytest.approx(line.barrier)
    assert line.barrier == max(line.errors) - (line.errors[0] + line.errors[-1]) / 2


def test_endpoints_without_recompute_are_the_models_themselves(data: dict, two_solutions: tuple) -> None:
    a, b = two_solutions
    line = interpolate(a, b, data["test"], alphas=[0.0, 1.0], recompute_bn=False)
    assert not line.recompute_bn
    for model, error in zip((a, b), line.errors):
        with torch.no_grad():
            wrong = sum(int((model(x).argmax(1) != y).sum()) for x, y in data["test"])
        assert error == wrong / 512


def test_a_dataset_is_read_in_batches(data: dict, two_solutions: tuple) -> None:
    a, b = two_solutions
    x, y = xor_task(300, 5)
    line = interpolate(a, b, TensorDataset(x, y), bn_data=data["train"], alphas=2)
    assert line.samples == 300


def test_recompute_bn_statistics_uses_a_plain_average(data: dict, two_solutions: tuple) -> None:
    model = copy.deepcopy(two_solutions[0])
    bn = model[1]
    momentum = bn.momentum
    recompute_bn_statistics(model, data["train"])
    with torch.no_grad():
        hidden = torch.cat([model[0](x) for x, _ in data["train"]])
    # equal batches: the plain average of batch means is the mean over all samples
    assert torch.allclose(bn.running_mean, hidden.mean(0), atol=1e-5)
    assert bn.momentum == momentum and not model.training


# ---------------------------------------------------------------------- tickets
def test_interpolation_keeps_masks(data: dict) -> None:
    a, b = pruned_pair(data)
    mid = interpolated_model(a, b, 0.5, bn_data=data["train"])
    want = tickets.masks(a)
    got = tickets.masks(mid)
    assert want.keys() == got.keys() and want
    for name, mask in want.items():
        assert torch.equal(got[name], mask), name
    for name, module, tensor in tickets.pruned_parameters(mid):
        orig = getattr(module, tensor + "_orig")
        expected = 0.5 * (tickets.snapshot(a)[name] + tickets.snapshot(b)[name])
        assert torch.allclose(orig.detach() * want[name], expected, atol=1e-6)
        assert (orig.detach()[~want[name]] == 0).all()
    line = interpolate(a, b, data["test"], bn_data=data["train"], alphas=3)
    assert line.errors[0] < 0.2 and line.errors[-1] < 0.2


def test_interpolating_a_ticket_leaves_its_copies_pruned(data: dict) -> None:
    a, b = pruned_pair(data)
    interpolate(a, b, data["test"], bn_data=data["train"], alphas=3)
    assert tickets.masks(a).keys() == tickets.masks(b).keys()
    assert all(torch.equal(m, tickets.masks(b)[k]) for k, m in tickets.masks(a).items())


# ---------------------------------------------------------------------- errors
def test_different_masks_name_the_tensor(data: dict) -> None:
    a, b = pruned_pair(data)
    mask = tickets.masks(b)["3.weight"]
    flipped = mask.clone()
    flipped.view(-1)[0] = ~flipped.view(-1)[0]
    b[3].weight_mask.copy_(flipped)
    with pytest.raises(ValueError, match=r"'3\.weight' differ in 1 of"):
        interpolate(a, b, data["test"], bn_data=data["train"], alphas=2)


def test_pruned_in_one_model_only_is_an_error(data: dict, two_solutions: tuple) -> None:
    a = copy.deepcopy(two_solutions[0])
    b = copy.deepcopy(two_solutions[1])
    tickets.magnitude_prune(a[0], "weight", 0.5)
    with pytest.raises(ValueError, match=r"'0\.weight' is pruned in model_a but not in model_b"):
        interpolate(a, b, data["test"], bn_data=data["train"])


def test_different_architectures_name_the_tensor(data: dict) -> None:
    with pytest.raises(ValueError, match=r"tensor '0\.weight' has shape \(32, 2\) in model_a but \(16, 2\)"):
        interpolate(mlp(0), mlp(1, width=16), data["test"], bn_data=data["train"])
    deeper = nn.Sequential(*mlp(1), nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"model_b has tensor '7\.weight' that model_a lacks"):
        interpolate(mlp(0), deeper, data["test"], bn_data=data["train"])


@pytest.mark.parametrize("alphas, message", [
    (1, "at least 2"),
    ([0.0, 1.5], r"in \[0, 1\]; got 1.5"),
    ([], "must not be empty"),
    (True, "int >= 2"),
])
def test_bad_alphas_are_named(data: dict, alphas: object, message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        interpolate(mlp(0), mlp(1), data["test"], bn_data=data["train"], alphas=alphas)  # type: ignore[arg-type]


def test_barrier_needs_the_end_points(data: dict, two_solutions: tuple) -> None:
    line = interpolate(*two_solutions, data["test"], bn_data=data["train"], alphas=[0.0, 0.5])
    with pytest.raises(ValueError, match="do not contain 1.0"):
        line.barrier


def test_bad_data_sources_are_explained(data: dict) -> None:
    with pytest.raises(TypeError, match="one-shot iterator"):
        interpolate(mlp(0), mlp(1), iter(data["test"]), bn_data=data["train"])
    with pytest.raises(ValueError, match="bn_data"):
        interpolated_model(mlp(0), mlp(1), 0.5)
    with pytest.raises(TypeError, match="model_b must be an nn.Module"):
        interpolate(mlp(0), "model", data["test"])  # type: ignore[arg-type]


# ---------------------------------------------------------------------- instability
def tiny_train(model: nn.Module, data: tuple, *, seed: int, start_step: int, stop_step: int | None,
               device: object, steps: int = 120, lr: float = 0.01) -> dict:
    """A step-exact TrainFn: batch of step t depends only on (seed, t)."""
    x, y = data
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    stop = steps if stop_step is None else stop_step
    for step in range(start_step, stop):
        g = torch.Generator().manual_seed(1000 * seed + step)
        i = torch.randint(0, len(x), (64,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[i]), y[i]).backward()
        opt.step()
        tickets.enforce_masks(model)
    return {"steps": stop - start_step}


def stability_kwargs(data: dict, **changes: object) -> dict:
    kwargs = dict(rewind_to=0, seeds=(1, 2), schedule={"steps": 120}, test_data=data["test"],
                  train_eval_data=data["train"], alphas=5, train_fn=tiny_train)
    kwargs.update(changes)
    return kwargs


def test_instability_of_a_dense_network_trains_two_copies(data: dict) -> None:
    start = mlp(4)
    before = copy.deepcopy(start.state_dict())
    result = tickets.stability.instability(start, (data["x"], data["y"]), keep_models=True,
                                           **stability_kwargs(data))
    assert all(acc > 0.8 for acc in result.accuracies)
    assert result.histories == ({"steps": 120}, {"steps": 120})
    a, b = result.models
    assert not torch.equal(a[0].weight, b[0].weight)  # different SGD noise
    assert result.barrier.test is not None and result.barrier.train_barrier >= 0
    assert result.sparsity == 0.0 and result.seeds == (1, 2)
    for key, value in start.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert result.to_dict()["barrier"]["test_barrier"] == result.barrier.test_barrier


def test_instability_of_a_ticket_keeps_its_mask_in_both_copies(data: dict) -> None:
    dense = mlp(5)
    w0 = tickets.snapshot(dense)
    tickets.global_magnitude_prune(tickets.prunable_parameters(dense, keep_dense=()), 0.6)
    ticket = tickets.Ticket.from_model(dense, rewind_state=w0)
    result = tickets.stability.instability(ticket, (data["x"], data["y"]), model=mlp(0), keep_models=True,
                                           **stability_kwargs(data, rewind_to="0it"))
    assert result.sparsity == pytest.approx(ticket.sparsity)
    for copy_ in result.models:
        for name, mask in tickets.masks(copy_).items():
            assert torch.equal(mask, ticket.masks[name]), name
        for name, module, tensor in tickets.pruned_parameters(copy_):
            assert (getattr(module, tensor + "_orig").detach()[~ticket.masks[name]] == 0).all()


def test_instability_from_init_forks_after_the_rewind_step(data: dict) -> None:
    calls: list[tuple[int, int, int | None]] = []

    def recording(model: nn.Module, d: tuple, *, seed: int, start_step: int, stop_step: int | None,
                  device: object, **schedule: object) -> dict:
        calls.append((seed, start_step, stop_step))
        return tiny_train(model, d, seed=seed, start_step=start_step, stop_step=stop_step, device=device, steps=40)

    tickets.stability.instability(mlp(6), (data["x"], data["y"]), from_init=True,
                                  **stability_kwargs(data, rewind_to=10, schedule={}, train_fn=recording, alphas=2))
    assert calls == [(1, 0, 10), (1, 10, None), (2, 10, None)]


def test_instability_rejects_bad_arguments_before_training(data: dict) -> None:
    run = tickets.stability.instability
    xy = (data["x"], data["y"])
    with pytest.raises(ValueError, match=r"seeds must differ.*\(3, 3\)"):
        run(mlp(0), xy, **stability_kwargs(data, seeds=(3, 3)))
    with pytest.raises(ValueError, match="rewind_to must be >= 0"):
        run(mlp(0), xy, **stability_kwargs(data, rewind_to=-1))
    with pytest.raises(ValueError, match="'2ep' is not understood"):
        run(mlp(0), xy, **stability_kwargs(data, rewind_to="2ep"))
    with pytest.raises(ValueError, match=r"schedule must not set \['seed'\]"):
        run(mlp(0), xy, **stability_kwargs(data, schedule={"seed": 3}))
    pruned = mlp(0)
    tickets.global_magnitude_prune(tickets.prunable_parameters(pruned, keep_dense=()), 0.5)
    with pytest.raises(ValueError, match="needs model="):
        run(tickets.Ticket.from_model(pruned, rewind_state=tickets.snapshot(pruned)), xy, **stability_kwargs(data))
    with pytest.raises(ValueError, match="no rewind state"):
        run(tickets.Ticket.from_model(pruned, weights=False), xy, model=mlp(0), **stability_kwargs(data))


# ---------------------------------------------------------------------- the rewinding experiment
def _rewinding_module():  # type: ignore[no-untyped-def]
    from benchmarks import rewinding  # the repository root is on pytest's pythonpath

    return rewinding


def test_rewind_steps_are_distinct_and_never_round_to_zero() -> None:
    rw = _rewinding_module()
    assert rw.rewind_steps(310, (0.0, 0.005, 0.02, 0.07)) == [0, 2, 6, 22]
    assert rw.rewind_steps(8, (0.0, 0.005, 0.02)) == [0, 1]


def test_rewinding_schedule_follows_the_settings() -> None:
    rw = _rewinding_module()
    schedule = rw.make_schedule(rw.SETTINGS["paper"])
    assert (schedule.epochs, schedule.lr, schedule.milestones, schedule.batch_size) == (160, 0.1, (80.0, 120.0), 128)
    assert schedule.total_steps(50_000) == 160 * 391


def test_rewinding_quick_settings_train_in_the_quick_presets_regime() -> None:
    """The quick rewinding run trains exactly like a round of the harness's quick preset
    (45,000 images, 7-epoch cosine rounds: the regime where the dense network passes 80%)."""
    rw = _rewinding_module()
    from benchmarks.reproduce.config import PRESETS
    from benchmarks.reproduce.experiments import schedule_of

    settings = rw.SETTINGS["quick"]
    assert rw.make_schedule(settings) == Schedule(**schedule_of(PRESETS["quick"]))
    assert settings.train_images is None and settings.test_images is None and settings.data_pool is None
    total = rw.make_schedule(settings).total_steps(45_000)
    assert total == 7 * 176
    assert rw.rewind_steps(total, settings.rewind_fractions) == [0, 86]  # 7%: about the preset's half-epoch rewind (88)
    assert rw.settings_for(PRESETS["quick"]) is settings


def test_rewinding_settings_name_a_bad_schedule_kind() -> None:
    rw = _rewinding_module()
    with pytest.raises(ValueError, match="kind must be 'step' or 'cosine'; got 'linear'"):
        rw.RewindingSettings(name="x", epochs=2, lr=0.1, milestones=(), batch_size=8, levels=1, amount=0.5,
                             kind="linear")


def test_instability_with_the_training_engine(data: dict) -> None:
    """The default trainer is tickets.training.train; epochs in rewind_to use its batch arithmetic."""
    train_set = TensorDataset(data["x"], data["y"])
    result = tickets.stability.instability(
        mlp(7), train_set, rewind_to="1ep", seeds=(1, 2), schedule=dict(epochs=3, batch_size=64, lr=0.05),
        test_data=data["test"], train_eval_data=data["train"], alphas=3, keep_models=True,
    )
    assert result.rewind_to == 8  # 512 samples / 64 per batch
    assert [h.start_step for h in result.histories] == [8, 8]
    assert [h.end_step for h in result.histories] == [24, 24]
    a, b = result.models
    assert not torch.equal(a[0].weight, b[0].weight)


def test_rewinding_refuses_to_resume_a_run_with_other_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rw = _rewinding_module()
    cache = rw._Cache(tmp_path / "rewinding")
    cache.check_settings({"epochs": 5, "arch": "res20s"})
    cache.check_settings({"epochs": 5, "arch": "res20s"})  # same settings: resumes
    with pytest.raises(ValueError, match=r"other settings \(differences in \['epochs'\]\)"):
        cache.check_settings({"epochs": 6, "arch": "res20s"})


def test_rewinding_experiment_runs_end_to_end_on_a_tiny_folder(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json

    from test_reproduce import write_image_folder

    _rewinding_module()
    from benchmarks.reproduce import main

    folder = write_image_folder(tmp_path / "data", train_per_class=20, test_per_class=4)
    out = tmp_path / "out"
    argv = ["cifar10", "--experiment", "rewinding", "--preset", "smoke", "--data-dir", str(folder),
            "--out", str(out), "--quiet", "--device", "cpu"]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["rewind_steps"] == [0, 1]
    assert {r["sparsity"] for r in results["rows"]} == {0.0, 0.5, 0.75}
    assert all(0 <= st["dense_test_barrier"] <= 1 for st in results["stability"])
    assert (out / "accuracy_vs_sparsity.png").exists() and (out / "barrier_vs_k.png").exists()
    assert main(argv) == 0  # resumes from the cache
