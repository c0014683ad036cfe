"""The training engine's speed features: precision, memory format, the batched data path,
the non-finite-loss stop, plain progress lines and the small-PrAC-set floor."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from tickets.pruning import methods
from tickets.data.transforms import Augment, Normalize, _Compose
from tickets.data.images import BatchLoader, ImageDataset, batch_loader
from tickets.search.checks import _time_ratio
from tickets.search.driver import prune
from tickets.data.sampling import IndexedDataset
from tickets.prac.sampler import PrACSampler
from tickets.training.results import NonFiniteLossError
from tickets.training.schedule import Schedule
from tickets.training.trainer import Trainer
from tickets.training.evaluation import evaluate
from tickets.training.precision import resolve_channels_last, resolve_precision
from tickets.training.loop import train

torch.set_num_threads(1)


def _images(n: int = 40, size: int = 8, classes: int = 4, seed: int = 0) -> tuple[torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=g), [i % classes for i in range(n)]


def _conv_model(classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, classes))


# ---------------------------------------------------------------------- batched data path
@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 9), size=st.integers(2, 9), padding=st.integers(0, 4), seed=st.integers(0, 2**16))
def test_batched_augment_gives_each_image_a_crop_of_its_padded_self(n: int, size: int, padding: int, seed: int) -> None:
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    out = Augment(size, padding).batch(images)
    assert out.shape == images.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    for i in range(n):
        candidates = [padded[i, :, t:t + size, l:l + size] for t in range(2 * padding + 1) for l in range(2 * padding + 1)]
        assert any(torch.equal(out[i], c) or torch.equal(out[i], c.flip(-1)) for c in candidates)


def test_batched_augment_draws_independent_offsets_and_is_seeded() -> None:
    images = torch.arange(64, dtype=torch.uint8).view(1, 1, 8, 8).repeat(64, 3, 1, 1)
    torch.manual_seed(3)
    a = Augment(8, 4).batch(images)
    torch.manual_seed(3)
    b = Augment(8, 4).batch(images)
    assert torch.equal(a, b)
    distinct = {tuple(img.flatten().tolist()) for img in a}
    assert len(distinct) > 10  # not one crop for the whole batch


def test_batched_normalize_equals_per_sample() -> None:
    images, _ = _images(5)
    norm = Normalize((0.4, 0.5, 0.6), (0.2, 0.25, 0.3))
    expected = torch.stack([norm(img) for img in images])
    torch.testing.assert_close(norm.batch(images), expected, rtol=1e-6, atol=1e-6)


def test_batch_loader_follows_the_sampler_like_a_dataloader() -> None:
    images, targets = _images(37)
    ds = ImageDataset(images, targets, transform=Normalize((0.5,) * 3, (0.25,) * 3))
    sampler = PrACSampler(ds, seed=4)
    sampler.set_epoch(2)
    fast = list(BatchLoader(ds, 8, sampler))
    sampler.set_epoch(2)
    slow = list(DataLoader(IndexedDataset(ds), batch_size=8, sampler=sampler))
    assert len(fast) == len(slow) == len(BatchLoader(ds, 8, sampler)) == math.ceil(37 / 8)
    for (xf, yf, i_f), (xs, ys, i_s) in zip(fast, slow):
        assert torch.equal(i_f, i_s) and torch.equal(yf, ys)
        torch.testing.assert_close(xf, xs)


def test_batch_loader_is_used_only_where_it_can_be() -> None:
    images, targets = _images(10)
    assert isinstance(batch_loader(ImageDataset(images, targets, transform=_Compose(Augment(8), Normalize((0.5,) * 3, (0.5,) * 3))), 4), BatchLoader)
    assert batch_loader(ImageDataset(images, targets, transform=lambda x: x.float()), 4) is None  # no batched form
    assert batch_loader(ImageDataset([f"{i}.png" for i in range(10)], targets), 4) is None  # on disk
    assert batch_loader(TensorDataset(torch.zeros(3, 2), torch.zeros(3)), 4) is None
    with pytest.raises(TypeError, match="get_batch"):
        BatchLoader(TensorDataset(torch.zeros(3, 2)), 4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(ImageDataset(images, targets), 0)
    with pytest.raises(IndexError, match="positions"):
        ImageDataset(images, targets).get_batch(torch.tensor([10]))


def test_training_on_in_memory_images_uses_the_batched_path_and_keeps_masks() -> None:
    images, targets = _images(48, size=8)
    ds = ImageDataset(images, targets, transform=_Compose(Augment(8, 2), Normalize((0.5,) * 3, (0.25,) * 3)))
    model = _conv_model()
    methods.global_magnitude_prune([(model[0], "weight"), (model[3], "weight")], 0.5)
    trainer = Trainer(model, ds, Schedule(epochs=2, batch_size=16, lr=0.05), seed=0)
    assert isinstance(trainer.loader, BatchLoader)
    result = trainer.run()
    assert result.steps == 6
    for module in (model[0], model[3]):
        mask = methods._current_mask(module, "weight").bool()
        assert torch.count_nonzero(module.weight[~mask]) == 0
        assert torch.count_nonzero(module.weight_orig[~mask]) == 0
    assert not isinstance(Trainer(model, ds, Schedule(epochs=1, batch_size=16), num_workers=1).loader, BatchLoader)


# ---------------------------------------------------------------------- precision and memory format
def test_resolve_precision_choices_and_errors() -> None:
    cpu = torch.device("cpu")
    assert resolve_precision(cpu, "fp32") == "fp32"
    assert resolve_precision(cpu, "bf16") == "bf16"
    assert resolve_precision(cpu, None, amp=False) == "fp32"
    assert resolve_precision(cpu, None, amp=True) == "bf16"
    assert resolve_precision(cpu, "fp32", amp=True) == "fp32"  # an explicit precision wins
    assert resolve_precision(cpu, "auto") in ("bf16", "fp32")
    with pytest.raises(ValueError, match="'fp16' is not supported on the CPU"):
        resolve_precision(cpu, "fp16")
    with pytest.raises(ValueError, match="precision must be"):
        resolve_precision(cpu, "half")


def test_resolve_channels_last_rule() -> None:
    assert resolve_channels_last(_conv_model()) is True
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    assert resolve_channels_last(mlp) is False
    vit_like = nn.Sequential(nn.Conv2d(3, 4, 2, stride=2), nn.Flatten(), nn.Linear(64, 512), nn.Linear(512, 10))
    assert resolve_channels_last(vit_like) is False  # only a patch embedding is a convolution
    assert resolve_channels_last(mlp, True) is True and resolve_channels_last(_conv_model(), False) is False


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_each_precision_keeps_pruned_weights_zero_and_fp32_state(precision: str) -> None:
    images, targets = _images(32)
    ds = ImageDataset(images, targets, transform=Normalize((0.5,) * 3, (0.25,) * 3))
    model = _conv_model()
    methods.global_magnitude_prune([(model[0], "weight"), (model[3], "weight")], 0.6)
    result = train(model, ds, epochs=2, batch_size=8, lr=0.05, precision=precision, channels_last=True)
    assert result.precision == precision and result.channels_last is True
    for p in model.parameters():
        assert p.dtype == torch.float32
    for module in (model[0], model[3]):
        mask = methods._current_mask(module, "weight").bool()
        assert torch.count_nonzero(module.weight[~mask]) == 0


def test_pruning_channels_last_weights_with_ties_is_exact() -> None:
    model = _conv_model().to(memory_format=torch.channels_last)
    with torch.no_grad():
        model[0].weight.fill_(1.0)  # every score ties
    methods.global_magnitude_prune([(model[0], "weight")], 0.25)
    mask = methods._current_mask(model[0], "weight")
    assert int(mask.sum()) == model[0].weight.numel() - round(0.25 * model[0].weight.numel())


def test_history_records_the_precision_that_ran() -> None:
    images, targets = _images(32)
    ds = ImageDataset(images, targets, transform=Normalize((0.5,) * 3, (0.25,) * 3))
    ticket = prune(_conv_model(), PrACSampler(ds), rounds=2, epochs=2, batch_size=8, lr=0.05, quiet=True,
                   precision="bf16", parameters=None)
    assert {h["precision"] for h in ticket.history} == {"bf16"}
    assert all(h["channels_last"] is True for h in ticket.history)


# ---------------------------------------------------------------------- divergence
def test_a_diverging_run_stops_at_the_first_non_finite_loss(tmp_path: Any) -> None:
    x = torch.randn(64, 6)
    y = (x[:, 0] > 0).long()
    ds = TensorDataset(x * 1e3, y)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))
    with pytest.raises(NonFiniteLossError, match=r"round 0, step \d+ .*lower the learning rate") as error:
        prune(model, PrACSampler(ds), rounds=2, epochs=3, batch_size=16, lr=1e8, quiet=True,
              precision="fp32", checkpoint_dir=tmp_path)
    step = int(str(error.value).split("step ")[1].split()[0])
    assert step >= 1
    state = torch.load(tmp_path / "state.pt", weights_only=True)  # the checkpoint is still a valid one
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


# ---------------------------------------------------------------------- output to files
def test_progress_to_a_file_is_one_line_per_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    images, targets = _images(32)
    ds = ImageDataset(images, targets, transform=Normalize((0.5,) * 3, (0.25,) * 3))
    prune(_conv_model(), PrACSampler(ds), rounds=2, epochs=2, batch_size=8, lr=0.05, quiet=False)
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    epoch_lines = [line for line in captured.err.splitlines() if "epoch" in line]
    assert len(epoch_lines) >= 3 and "round 0: epoch 1/2" in epoch_lines[0] and "samples/s" in epoch_lines[0]
    summaries = [line for line in captured.err.splitlines() if "sparsity" in line]  # the per-round summaries
    assert len(summaries) == 2 and summaries[1].startswith("round 1:")
    assert captured.out == ""  # all progress on stderr: stdout is the caller's (``> log.txt 2>&1`` keeps all)


# ---------------------------------------------------------------------- small PrAC sets
def test_small_set_floor_raises_the_epochs_only_below_its_threshold() -> None:
    sched = Schedule(epochs=10, batch_size=10)
    assert _time_ratio(sched, 1000, 500, 0.1) == (0.5, False)  # r**2 = 0.25 >= 0.1: the paper's schedule
    ratio, floored = _time_ratio(sched, 1000, 100, 0.1)  # r**2 = 0.01: raised to 10% of the steps
    assert floored and int(sched.epochs * ratio + 1e-9) * 10 >= 0.1 * sched.total_steps(1000)
    assert _time_ratio(sched, 1000, 100, 0.0) == (0.1, False)
    assert _time_ratio(sched, 1000, 10, 0.5)[0] == 1.0  # never more than a full round's epochs


def test_small_set_floor_in_a_search_and_its_errors() -> None:
    x = torch.randn(200, 6, generator=torch.Generator().manual_seed(0))
    ds = TensorDataset(x, (x[:, 0] > 0).long())  # easy data: the PrAC set collapses
    kwargs: dict[str, Any] = dict(rounds=2, epochs=8, batch_size=20, lr=0.1, quiet=True, precision="fp32")

    def model() -> nn.Module:
        torch.manual_seed(0)
        return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2))

    floored = prune(model(), PrACSampler(ds), min_step_fraction=0.3, **kwargs).history[1]
    plain = prune(model(), PrACSampler(ds), min_step_fraction=0.0, **kwargs).history[1]
    full_steps = 8 * 10
    assert plain["set_fraction"] ** 2 < 0.3
    assert floored.get("step_floor") == 0.3 and "step_floor" not in plain
    spe = math.ceil(floored["set_size"] / 20)
    assert floored["epochs"] == min(8, math.ceil(0.3 * full_steps / spe))  # never more epochs than a full round
    assert floored["steps"] > plain["steps"]
    with pytest.raises(ValueError, match="min_step_fraction"):
        prune(model(), PrACSampler(ds), min_step_fraction=1.5, **kwargs)


def test_evaluate_defaults_to_fp32_and_takes_a_precision() -> None:
    images, targets = _images(16)
    ds = ImageDataset(images, targets, transform=Normalize((0.5,) * 3, (0.25,) * 3))
    model = _conv_model()
    a = evaluate(model, ds)
    b = evaluate(model, ds, precision="fp32")
    assert a == b
    assert evaluate(model, ds, precision="bf16").samples == 16


# ---------------------------------------------------------------------- torch.compile
def test_compiled_training_keeps_the_mask_contract_without_recompiling() -> None:
    import torch._dynamo

    images, targets = _images(48)
    ds = ImageDataset(images, targets, transform=_Compose(Augment(8, 2), Normalize((0.5,) * 3, (0.25,) * 3)))
    model = _conv_model()
    pairs = [(model[0], "weight"), (model[3], "weight")]
    methods.global_magnitude_prune(pairs, 0.5)
    torch._dynamo.reset()
    graphs: list[int] = []
    trainer = Trainer(model, ds, Schedule(epochs=3, batch_size=16, lr=0.05), precision="fp32", compile=True,
                      on_epoch=lambda t, e: graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"]))
    trainer.run()
    assert graphs[0] >= 1 and graphs[-1] == graphs[0]  # compiled once, not every step or epoch
    for module, name in pairs:
        mask = methods._current_mask(module, name).bool()
        assert torch.count_nonzero(module.weight_orig[~mask]) == 0
        assert isinstance(module.weight, methods.MaskedWeight)  # eager state restored after the epoch
    model.eval()
    x = ds.get_batch(torch.arange(8))[0]
    with torch.no_grad():
        torch.testing.assert_close(trainer.forward(x), model(x), rtol=1e-4, atol=1e-5)
    import copy

    copy.deepcopy(model)  # trap 4 of torch.nn.utils.prune stays fixed after compiled steps


# ---------------------------------------------------------------------- resume with the fast path
def test_a_bf16_prac_run_on_in_memory_images_resumes_exactly(tmp_path: Any) -> None:
    from tickets.search.options import RunInterrupted

    images, targets = _images(64, size=8)
    train_set = ImageDataset(images, targets, transform=_Compose(Augment(8, 2), Normalize((0.5,) * 3, (0.25,) * 3)))
    plain = ImageDataset(images, targets, transform=Normalize((0.5,) * 3, (0.25,) * 3))
    kwargs: dict[str, Any] = dict(rounds=3, epochs=4, batch_size=16, lr=0.05, rewind_to="1ep", quiet=True,
                                  precision="bf16", train_eval_data=plain, eval_data=plain, seed=3)
    whole = prune(_conv_model(), PrACSampler(train_set, seed=3), **kwargs)

    def crash(round_index: int, entry: dict[str, Any]) -> None:
        if round_index == 1 and entry["epoch"] >= 2:
            raise RunInterrupted("stop in round 1")

    with pytest.raises(RunInterrupted):
        prune(_conv_model(), PrACSampler(train_set, seed=3), checkpoint_dir=tmp_path, on_epoch=crash, **kwargs)
    resumed = prune(_conv_model(), PrACSampler(train_set, seed=3), checkpoint_dir=tmp_path, **kwargs)
    strip = lambda h: [{k: v for k, v in e.items() if "wall_time" not in k} for e in h]  # noqa: E731
    assert strip(resumed.history) == strip(whole.history)
    assert all(h["precision"] == "bf16" for h in whole.history)
    for key, mask in whole.masks.items():
        assert torch.equal(resumed.masks[key], mask)


def test_train_speed_benchmark_runs_and_tabulates() -> None:
    from benchmarks.train_speed import markdown, run

    rows = run(["res20s"], steps=1, warmup=1, batch_size=4, compile_models=[], data_dir=None)
    assert {r["loop"] for r in rows} == {"plain fp32 loop", "tickets defaults", "tickets"}
    assert len(rows) == 2 * 6 and all(r["img_s"] > 0 for r in rows)
    defaults = [r for r in rows if r["loop"] == "tickets defaults"]
    assert all(r["precision"] == resolve_precision("cpu") and r["channels_last"] for r in defaults)
    assert markdown(rows).count("\n") == len(rows) + 2
