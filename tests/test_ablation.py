"""``--experiment ablation`` (issue 19): full-data IMP, PrAC IMP, random subsets of PrAC's
sizes and full data for PrAC's steps, from one round 0, on a tiny image folder."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from PIL import Image

from benchmarks.reproduce import main, parse_args
from benchmarks.reproduce.ablation import DEFAULT_FINDERS, FINDERS, check_finders

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
COMMON = ["--preset", "smoke", "--quiet", "--threads", "1", "--device", "cpu"]


def write_image_folder(root: Path, train_per_class: int, test_per_class: int, classes: list[str] = CLASSES,
                       size: int = 32) -> Path:
    """An image folder of class-coloured noise (learnable, lossless PNG)."""
    g = torch.Generator().manual_seed(0)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for k, name in enumerate(classes if count else []):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                base = torch.tensor([(37 * k) % 256, (91 * k) % 256, (151 * k) % 256]).view(3, 1, 1)
                image = (base + torch.randint(-40, 41, (3, size, size), generator=g)).clamp(0, 255).to(torch.uint8)
                Image.fromarray(image.permute(1, 2, 0).numpy()).save(folder / f"{i:04d}.png")
    return root


def round0_epochs(folder: Path) -> int:
    """Epoch lines of round 0 in a search's metrics.jsonl: how often it trained round 0."""
    path = folder / "metrics.jsonl"
    if not path.exists():
        return 0
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sum(1 for line in lines if line.get("kind") == "epoch" and line.get("round") == 0)


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """(size, mtime) of every file under the checkpoints: a rerun that trains nothing leaves them."""
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted((out / "checkpoints").rglob("*")) if p.is_file() and p.suffix in (".json", ".jsonl", ".ticket", ".pt")}


@pytest.fixture(scope="module")
def tiny_cifar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 30 train images per class: the smoke preset keeps 120 of the 250 left after 50 validation
    return write_image_folder(tmp_path_factory.mktemp("tiny_cifar"), train_per_class=30, test_per_class=4)


@pytest.fixture(scope="module")
def ablation_run(tiny_cifar: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], dict]:
    """The whole ablation (the default four finders), once for the tests below."""
    out = tmp_path_factory.mktemp("ablation") / "run"
    args = ["cifar10", "--experiment", "ablation", "--data-dir", str(tiny_cifar), "--out", str(out), *COMMON]
    assert main(args) == 0
    return out, args, json.loads((out / "results.json").read_text())


def test_random_and_same_steps_use_the_prac_sizes_and_steps(ablation_run: tuple[Path, list[str], dict]) -> None:
    out, _, results = ablation_run
    assert results["finders"] == list(DEFAULT_FINDERS)
    h = results["histories"]
    prac, random, same, full = h["prac"], h["random"], h["same-steps"], h["full"]
    n = results["data"]["train"]
    assert len(prac) == len(random) == len(same) == len(full) == 3
    # random subsets: round k trains a set of exactly the PrAC round-k set's size, for exactly its steps
    assert [e["set_size"] for e in random] == [e["set_size"] for e in prac] == results["reference_set_sizes"]
    assert [e["steps"] for e in random] == [e["steps"] for e in prac]
    assert [e["epochs"] for e in random] == [e["epochs"] for e in prac]
    # full data, same steps: the whole split, for exactly the PrAC round's steps
    assert all(e["set_size"] == n for e in same)
    assert [e["steps"] for e in same] == [e["steps"] for e in prac]
    assert {int(k): v for k, v in results["reference_round_steps"].items()} == {e["round"]: e["steps"] for e in prac[1:]}
    # full-data IMP trains more than that wherever the PrAC set is smaller than the split (its rounds are full rounds)
    assert all(f["steps"] > p["steps"] for f, p in zip(full[1:], prac[1:]) if p["set_size"] < n)
    # the random sets are class-stratified subsets of the split (not PrAC's sets)
    from tickets.search.run_folder import load_prac_sets

    random_sets = load_prac_sets(out / "checkpoints" / "random")
    prac_sets = load_prac_sets(out / "checkpoints" / "prac")
    assert [len(s) for s in random_sets] == [len(s) for s in prac_sets]
    assert torch.equal(random_sets[0], torch.arange(n))
    for k, (r, p) in enumerate(zip(random_sets, prac_sets)):
        if k and len(p) < n:
            assert not torch.equal(r, p)


def test_round_0_is_trained_once_and_shared(ablation_run: tuple[Path, list[str], dict]) -> None:
    out, _, results = ablation_run
    checkpoints = out / "checkpoints"
    assert round0_epochs(checkpoints / "prac") == results["config"]["preset"]["epochs"]  # trained here, epoch by epoch
    for name in ("full", "random", "same-steps"):
        assert round0_epochs(checkpoints / name) == 0, name  # taken, not trained
    keys = ("round", "sparsity", "set_size", "steps", "samples", "val_acc", "test_acc", "epochs")
    first = results["histories"]["prac"][0]
    for name, history in results["histories"].items():
        assert {k: history[0].get(k) for k in keys} == {k: first.get(k) for k in keys}, name
    assert results["timing"]["round0_s"] == pytest.approx(first["wall_time_s"], abs=0.1)
    # the tickets say where their round 0 came from
    from tickets import Ticket

    for name in ("full", "random", "same-steps"):
        meta = Ticket.load(checkpoints / name / "ticket.ticket").meta
        assert Path(meta["start_from"]) == checkpoints / "prac", name
    assert not Ticket.load(checkpoints / "prac" / "ticket.ticket").meta.get("start_from")


def test_outputs_measurements_and_accounting(ablation_run: tuple[Path, list[str], dict]) -> None:
    out, _, results = ablation_run
    for name in ("table.md", "results.json", "accuracy.png", "cost.png", "log.txt"):
        assert (out / name).stat().st_size > 0, name
    table = (out / "table.md").read_text()
    assert "| round | sparsity | finder | ticket acc ± s.e. |" in table and "standard error" in table
    assert all(FINDERS[name].label in table for name in DEFAULT_FINDERS)
    assert "all (shared round 0)" in table and " ± " in table and "noise, ±" in table
    assert {(c["finder"], c["against"]) for c in results["comparisons"]} == {
        ("prac", "full"), ("prac", "random"), ("prac", "same-steps"), ("random", "full"), ("random", "same-steps"),
        ("same-steps", "full")}
    rows = results["rows"]
    n_test = results["test_images"]
    measured = {name for name in DEFAULT_FINDERS if name != "full"}
    for r in rows:
        p = r["ticket_test_acc"]
        assert p is not None and 0.0 <= p <= 1.0
        assert r["ticket_se"] == pytest.approx((p * (1 - p) / n_test) ** 0.5)
        if r["round"] >= 1 and r["finder"] in measured:
            assert (out / "checkpoints" / f"measure_{r['finder']}_round{r['round']}.json").exists()
            assert r["measure_steps"] > 0
    # every finder's round-1 ticket is the mask pruned from the shared round 0: measured once, reused
    records = {name: json.loads((out / "checkpoints" / f"measure_{name}_round1.json").read_text()) for name in measured}
    assert "same_ticket_as" not in records["prac"]
    assert records["random"]["same_ticket_as"] == records["same-steps"]["same_ticket_as"] == "measure_prac_round1"
    assert records["random"]["test_acc"] == records["prac"]["test_acc"]
    by = {(r["finder"], r["round"]): r for r in rows}
    for k in (1, 2):
        full = by[("full", k)]
        assert full["steps_to_trained"] == full["cum_steps"] and full["saved_finding"] == full["saved_trained"] == 0.0
        for name in measured:
            r = by[(name, k)]
            # a subset search still has to train its ticket once on the full data: full IMP's round k is that training
            # (not a PrAC round that happened to train on every sample: that round is a full round already)
            trained_already = name == "prac" and r["set_fraction"] == 1.0
            assert r["steps_to_trained"] == r["cum_steps"] + (0 if trained_already else full["steps"])
            assert r["saved_finding"] == pytest.approx(1 - r["cum_steps"] / full["cum_steps"])
            assert r["saved_trained"] == pytest.approx(1 - r["steps_to_trained"] / full["cum_steps"])
            assert r["diff_vs_full"] == pytest.approx(r["ticket_test_acc"] - full["ticket_test_acc"])
    assert results["command"].startswith("python -m benchmarks.reproduce cifar10 --experiment ablation")


def test_a_rerun_resumes_without_training(ablation_run: tuple[Path, list[str], dict]) -> None:
    out, args, results = ablation_run
    before = snapshot(out)
    assert main(args) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == results["rows"] and again["histories"] == results["histories"]
    assert snapshot(out) == before  # no search trained, no ticket was measured again
    assert again["wall_time_s_this_invocation"] < 30


def test_finders_selects_and_no_measure_works(tiny_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["cifar10", "--experiment", "ablation", "--data-dir", str(tiny_cifar), "--out", str(out), *COMMON,
            "--rounds", "2", "--finders", "same-steps,full", "--no-measure"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["finders"] == ["full", "same-steps"] and results["config"]["finders"] == ["full", "same-steps"]
    assert results["reference_ran_only_as_source"] is True
    folders = sorted(p.name for p in (out / "checkpoints").iterdir() if p.is_dir())
    assert folders == ["full", "prac", "same-steps"]  # the reference always runs: its round 0 and steps are needed
    assert not list((out / "checkpoints").glob("measure_*.json"))
    table = (out / "table.md").read_text()
    assert "ticket acc" not in table and "--no-measure" in table and "random subsets" not in table
    same = next(r for r in results["rows"] if r["finder"] == "same-steps" and r["round"] == 1)
    assert same["ticket_test_acc"] is None and same["round_test_acc"] is not None
    assert same["steps"] == results["reference_round_steps"]["1"]
    assert same["steps_to_trained"] is not None and same["saved_trained"] is not None
    for name in ("accuracy.png", "cost.png"):
        assert (out / name).stat().st_size > 0
    # adding a finder to a finished run trains only that finder
    before = snapshot(out)
    assert main(args[:-3] + ["--finders", "same-steps,full,random", "--no-measure"]) == 0
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert {Path(k).parts[1] for k in set(after) - set(before)} == {"random"}
    assert json.loads((out / "results.json").read_text())["finders"] == ["full", "random", "same-steps"]


def test_an_imp_vs_prac_run_seeds_the_ablation(tiny_cifar: Path, tmp_path: Path) -> None:
    # imp-vs-prac's PrAC and full-data IMP searches are the ablation's (the same calls): copied into its
    # checkpoints, with the PrAC measurements, they are read back, and only the two baselines are computed
    import shutil

    first, out = tmp_path / "imp-vs-prac", tmp_path / "ablation"
    base = ["cifar10", "--data-dir", str(tiny_cifar), *COMMON, "--rounds", "2"]
    assert main([*base, "--out", str(first)]) == 0
    shutil.copytree(first / "checkpoints", out / "checkpoints")
    before = snapshot(out)
    assert main([*base, "--out", str(out), "--experiment", "ablation"]) == 0
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert {Path(k).parts[1].split("_round")[0] for k in set(after) - set(before)} == {
        "random", "same-steps", "measure_random", "measure_same-steps"}
    old, new = json.loads((first / "results.json").read_text()), json.loads((out / "results.json").read_text())
    assert new["histories"]["prac"] == old["prac_history"] and new["histories"]["full"] == old["full_history"]


def test_folder_data_runs_the_ablation(tmp_path: Path) -> None:
    root = write_image_folder(tmp_path / "shapes", train_per_class=14, test_per_class=0, classes=["cat", "dog", "emu"],
                              size=8)
    out = tmp_path / "run"
    args = ["folder", "--data-dir", str(root), "--experiment", "ablation", "--out", str(out), *COMMON, "--rounds", "2"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["finders"] == list(DEFAULT_FINDERS) and results["data"]["num_classes"] == 3
    assert [e["steps"] for e in results["histories"]["random"]] == [e["steps"] for e in results["histories"]["prac"]]
    assert "folder shapes" in (out / "table.md").read_text()
    assert Counter(r["finder"] for r in results["rows"]) == {name: 2 for name in DEFAULT_FINDERS}


def test_finder_names_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_finders(["random", "full"]) == ("full", "random")  # the table's order
    with pytest.raises(ValueError, match="unknown finder"):
        check_finders(["full", "randm"])
    with pytest.raises(ValueError, match="more than once"):
        check_finders(["full", "full"])
    with pytest.raises(ValueError, match="at least one"):
        check_finders([" "])
    with pytest.raises(ValueError, match="ablation only"):
        parse_args(["cifar10", "--device", "cpu", "--finders", "full"])
    assert parse_args(["cifar10", "--device", "cpu", "--experiment", "ablation"]).finders is None
    assert main(["cifar10", "--experiment", "ablation", "--early-bird", "--data-dir", str(tmp_path / "absent"),
                 "--out", str(tmp_path / "o"), *COMMON]) == 2
    assert "--early-bird" in capsys.readouterr().err and not (tmp_path / "absent").exists()


def test_measure_rounds_measures_those_rounds_and_adds_more_later(tiny_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["cifar10", "--experiment", "ablation", "--data-dir", str(tiny_cifar), "--out", str(out), *COMMON,
            "--rounds", "3", "--finders", "full,random"]
    assert main([*args, "--measure-rounds", "2"]) == 0
    measured = sorted(p.stem for p in (out / "checkpoints").glob("measure_*.json"))
    assert measured == ["measure_random_round2"]  # the reference (PrAC) ran only as the source: not measured
    rows = json.loads((out / "results.json").read_text())["rows"]
    by = {(r["finder"], r["round"]): r for r in rows}
    assert by[("random", 2)]["ticket_test_acc"] is not None and by[("random", 1)]["ticket_test_acc"] is None
    assert by[("full", 1)]["ticket_test_acc"] is not None  # full-data IMP's rounds are their own tickets
    # asking for round 1 as well trains only the round-1 measurements
    before = snapshot(out)
    assert main([*args, "--measure-rounds", "2,1"]) == 0
    after = snapshot(out)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(Path(k).stem for k in set(after) - set(before)) == ["measure_random_round1"]


@pytest.mark.parametrize("value, message", [("0", "rounds 1..4"), ("5", "rounds 1..4"), ("2,2", "twice"),
                                            ("two", "separated by commas")])
def test_measure_rounds_are_checked(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_args(["cifar10", "--device", "cpu", "--experiment", "ablation", "--measure-rounds", value])
    assert parse_args(["cifar10", "--device", "cpu", "--measure-rounds", "4,1"]).measure_rounds == (4, 1)


def test_selection_adds_rule_finders_el2n_with_its_own_round_0(tiny_cifar: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["cifar10", "--experiment", "ablation", "--data-dir", str(tiny_cifar), "--out", str(out), *COMMON,
            "--rounds", "2", "--finders", "full", "--selection", "el2n,forgetting,budget", "--no-measure"]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["finders"] == ["full", "prac-el2n", "prac-forgetting", "prac-budget"]
    checkpoints = out / "checkpoints"
    assert round0_epochs(checkpoints / "prac-forgetting") == 0  # took the reference's round 0
    assert round0_epochs(checkpoints / "prac-el2n") == round0_epochs(checkpoints / "prac") > 0  # trained its own
    assert round0_epochs(checkpoints / "prac-budget") == 0  # took prac-el2n's, which recorded EL2N too
    def round0(name: str) -> list[tuple]:
        lines = [json.loads(x) for x in (checkpoints / name / "metrics.jsonl").read_text().splitlines() if x.strip()]
        return [(x.get("loss"), x.get("val_acc")) for x in lines if x.get("kind") == "epoch" and x.get("round") == 0]

    assert round0("prac-el2n") == round0("prac")  # the same dense network, epoch by epoch
    assert results["histories"]["prac-el2n"][0]["test_acc"] == results["histories"]["full"][0]["test_acc"]
    table = (out / "table.md").read_text()
    assert "PrAC, rule el2n" in table and "PrAC, rule forgetting" in table
    assert "PrAC, rule budget took the round 0 of PrAC, rule el2n" in table


def test_selection_names_are_checked() -> None:
    parsed = parse_args(["cifar10", "--device", "cpu", "--experiment", "ablation", "--selection", "budget,paper"])
    assert parsed.finders == (*DEFAULT_FINDERS, "prac-budget")  # paper is the reference, prac
    with pytest.raises(ValueError, match="valid: paper"):
        parse_args(["cifar10", "--device", "cpu", "--experiment", "ablation", "--selection", "el2m"])
    with pytest.raises(ValueError, match="--selection applies to --experiment ablation only"):
        parse_args(["cifar10", "--device", "cpu", "--selection", "el2n"])
    assert {f"prac-{n}" for n in ("el2n", "easiest", "forgetting", "random", "budget")} <= set(FINDERS)


def test_comparisons_say_which_differences_exceed_the_noise() -> None:
    from benchmarks.reproduce.ablation import comparisons

    def row(finder: str, k: int, acc: float | None) -> dict:
        return {"finder": finder, "round": k, "sparsity": 0.36 * k, "ticket_test_acc": acc}

    rows = [row("full", 0, 0.80), row("full", 1, 0.82), row("full", 2, 0.83),
            row("prac", 0, 0.80), row("prac", 1, 0.815), row("prac", 2, 0.80),
            row("random", 0, 0.80), row("random", 1, 0.81), row("random", 2, None)]
    found = {(c["finder"], c["against"], c["round"]): c for c in comparisons(rows, 10_000)}
    # pairs: prac against full and random; random against full (not again against prac); round 0 and unmeasured left out
    assert set(found) == {("prac", "full", 1), ("prac", "full", 2), ("prac", "random", 1), ("random", "full", 1)}
    se = lambda p: (p * (1 - p) / 10_000) ** 0.5  # noqa: E731
    c = found[("prac", "full", 2)]
    assert c["diff"] == pytest.approx(-0.03) and c["threshold"] == pytest.approx(2 * (se(0.80) ** 2 + se(0.83) ** 2) ** 0.5)
    assert c["beyond_noise"] is True  # 3 points against a threshold of about 1.1
    assert found[("prac", "random", 1)]["beyond_noise"] is False  # 0.5 points: within the noise
