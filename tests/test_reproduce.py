"""The reproduction harness (benchmarks.reproduce) end to end, on a tiny image folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmarks.reproduce import EXPERIMENTS, PRESETS, main, parse_args
from benchmarks.reproduce.config import Preset
from benchmarks.reproduce.experiments import compare_rows

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_image_folder(root: Path, train_per_class: int, test_per_class: int) -> Path:
    """A CIFAR-10-shaped image folder of class-coloured noise (learnable, lossless PNG)."""
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for k, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = torch.tensor([(37 * k) % 256, (91 * k) % 256, (151 * k) % 256]).view(3, 1, 1)
                image = (base + torch.randint(-40, 41, (3, 32, 32), generator=g)).clamp(0, 255).to(torch.uint8)
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    return root


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 30 train images per class: the smoke preset keeps 120 of the 250 left after 50 validation
    return write_image_folder(tmp_path_factory.mktemp("tiny_cifar"), train_per_class=30, test_per_class=4)


def test_presets_follow_the_paper_and_quick_hits_paper_sparsities() -> None:
    paper = PRESETS["paper"]
    assert (paper.epochs, paper.lr, paper.milestones, paper.weight_decay, paper.batch_size) == (182, 0.1, (91, 136), 1e-4, 128)
    assert (paper.rounds, paper.amount, paper.rewind_epoch, paper.kinds, paper.keep_dense) == (16, 0.2, 3, ("conv",), ("classifier",))
    assert round(100 * paper.sparsity(15), 2) == 96.48
    quick = PRESETS["quick"]
    assert [round(100 * quick.sparsity(k), 2) for k in range(1, quick.rounds)] == [36.0, 59.04, 73.79, 83.22]
    assert quick.rounds >= 5 and quick.train_size is None and quick.test_images is None  # the issue-9 regime
    paper_sparsities = {round(100 * paper.sparsity(k), 2) for k in range(1, 16)}
    assert all(round(100 * quick.sparsity(k), 2) in paper_sparsities for k in range(1, quick.rounds))


def test_early_bird_variant_writes_beside_the_plain_run() -> None:
    from benchmarks.reproduce.config import RunConfig

    quick = PRESETS["quick"]
    assert RunConfig("cifar10", "res20s", quick).suffix == ""
    assert RunConfig("cifar10", "res20s", quick.replace(early_bird=True)).suffix == "-early-bird"
    with pytest.raises(ValueError, match="lr_schedule"):
        quick.replace(lr_schedule="linear")


def test_bad_presets_and_names_are_rejected_with_the_value() -> None:
    with pytest.raises(ValueError, match="amount must be a fraction in \\(0, 1\\), got 1.5"):
        Preset(name="x", epochs=2, lr=0.1, milestones=(1,), batch_size=8, rounds=2, amount=1.5, rewind_epoch=0)
    with pytest.raises(ValueError, match="rewind_epoch"):
        Preset(name="x", epochs=2, lr=0.1, milestones=(1,), batch_size=8, rounds=2, amount=0.2, rewind_epoch=2)



def test_unknown_arch_fails_before_touching_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = tmp_path / "absent"
    assert main(["cifar10", "--arch", "res21", "--preset", "smoke", "--data-dir", str(data_dir), "--out", str(tmp_path / "o")]) == 2
    assert "unknown model 'res21'" in capsys.readouterr().err and not data_dir.exists()


def test_cli_overrides_scale_the_milestones() -> None:
    config = parse_args(["cifar10", "--preset", "paper", "--epochs", "20", "--rounds", "3", "--out", "x"])
    assert config.preset.epochs == 20 and config.preset.milestones == (10, 15) and config.preset.rounds == 3
    assert set(EXPERIMENTS) >= {"imp-vs-prac", "transfer"}


def test_savings_are_cumulative_with_round_zero_in_both() -> None:
    full = [{"round": k, "sparsity": s, "steps": 100, "test_acc": 0.5, "set_size": None, "set_fraction": 1.0,
             "epochs": 10, "wall_time_s": 1.0} for k, s in enumerate((0.0, 0.2, 0.36))]
    prac = [dict(r) for r in full]
    prac[1]["steps"], prac[2]["steps"] = 50, 20
    rows = compare_rows(full, prac, {1: {"test_acc": 0.6, "steps": 100}, 2: {"test_acc": 0.4, "steps": 100}})
    assert [round(r["saved"], 4) for r in rows] == [0.0, 0.25, round(1 - 170 / 300, 4)]
    assert rows[0]["prac_test_acc"] == rows[0]["full_test_acc"] == 0.5  # round 0 is the same dense training


def test_smoke_preset_end_to_end_and_resume(tiny_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["cifar10", "--preset", "smoke", "--data-dir", str(tiny_cifar), "--out", str(out), "--quiet", "--threads", "1"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    rows = results["rows"]
    smoke = PRESETS["smoke"]
    assert [r["round"] for r in rows] == list(range(smoke.rounds))
    assert all(abs(r["sparsity"] - smoke.sparsity(r["round"])) < 1e-3 for r in rows)
    assert all(r["prac_test_acc"] is not None and 0.0 <= r["prac_test_acc"] <= 1.0 for r in rows)
    assert all(0 < r["prac_set_fraction"] <= 1.0 for r in rows)
    assert rows[-1]["cum_prac_steps"] <= rows[-1]["cum_full_steps"]
    assert results["config"]["preset"]["name"] == "smoke" and results["command"].startswith("python -m benchmarks.reproduce")
    for name in ("table.md", "accuracy.png", "prac_cost.png"):
        assert (out / name).stat().st_size > 0
    assert "| round | sparsity |" in (out / "table.md").read_text()
    # a rerun resumes: nothing is trained again, the numbers are identical
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == rows


def test_transfer_reuses_the_source_sets(tiny_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "transfer"
    args = ["cifar10", "--preset", "smoke", "--experiment", "transfer", "--transfer-from", "res20s",
            "--arch", "res20s", "--data-dir", str(tiny_cifar), "--out", str(out), "--quiet", "--threads", "1",
            "--rounds", "2"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    sizes = results["source"]["set_sizes"]
    assert results["finders"] == ["transfer", "full", "random"]
    histories = results["histories"]
    assert [h["set_size"] for h in histories["transfer"]] == sizes  # round k trained on the source's set k
    assert [h["set_size"] for h in histories["random"]] == sizes  # random sets of the same sizes
    assert [h["steps"] for h in histories["random"]] == [h["steps"] for h in histories["transfer"]]
    assert histories["full"][1]["set_size"] == sizes[0]
    rows = {(r["finder"], r["round"]): r for r in results["rows"]}
    assert rows[("transfer", 1)]["ticket_test_acc"] is not None and rows[("random", 1)]["ticket_test_acc"] is not None
    table = (out / "table.md").read_text()
    assert "PrAC sets of res20s" in table and "random subsets" in table and "set sizes per round" in table
    checkpoints = out / "checkpoints"
    assert {p.stem for p in checkpoints.glob("measure_*.json")} == {"measure_transfer_round1", "measure_random_round1"}


def test_measure_flag_reaches_the_run_config() -> None:
    from benchmarks.reproduce import parse_args

    assert parse_args(["cifar10", "--device", "cpu"]).measure is True
    config = parse_args(["cifar10", "--device", "cpu", "--no-measure", "--early-bird"])
    assert config.measure is False and config.preset.early_bird and config.suffix == "-early-bird"


def test_min_step_fraction_flag_reaches_the_preset() -> None:
    from benchmarks.reproduce import parse_args

    assert parse_args(["cifar10", "--device", "cpu"]).preset.min_step_fraction == 0.1
    config = parse_args(["cifar10", "--device", "cpu", "--min-step-fraction", "0.2"])
    assert config.preset.min_step_fraction == 0.2 and config.preset.name == "quick*"


def test_transfer_finders_pick_the_baselines(tiny_cifar: Path, tmp_path: Path) -> None:
    """``--finders random`` with ``--experiment transfer`` leaves out full-data IMP (no savings
    columns), and names that need PrAC round-0 statistics are refused."""
    from benchmarks.reproduce import parse_args

    out = tmp_path / "transfer"
    args = ["cifar10", "--preset", "smoke", "--experiment", "transfer", "--transfer-from", "res20s",
            "--arch", "res20s", "--data-dir", str(tiny_cifar), "--out", str(out), "--quiet", "--threads", "1",
            "--rounds", "2", "--finders", "random"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["finders"] == ["transfer", "random"]
    assert not (out / "checkpoints" / "full").exists()
    assert [h["set_size"] for h in results["histories"]["random"]] == results["source"]["set_sizes"]
    assert all(r["saved_finding"] is None for r in results["rows"])
    for bad in ("prac", "prac-el2n", "nope"):
        with pytest.raises(ValueError, match="cannot be compared in --experiment transfer"):
            parse_args(["cifar10", "--device", "cpu", "--experiment", "transfer", "--finders", bad])
    with pytest.raises(ValueError, match="--selection applies to --experiment ablation only"):
        parse_args(["cifar10", "--device", "cpu", "--experiment", "transfer", "--selection", "el2n"])
    with pytest.raises(ValueError, match="more than once"):
        parse_args(["cifar10", "--device", "cpu", "--experiment", "transfer", "--finders", "random,random"])
