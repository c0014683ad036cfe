"""tickets.prune inside a 2-process torch.distributed job (torchrun, gloo, CPU): the ranks
agree, split the work, resume after a kill, and only rank 0 writes; the relation to one
process with the same global batch."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import tickets
from tickets.prac.stats import DistributedStats
from tickets.parallel import ShardSampler, check_identical, mask_checksum

JOB = Path(__file__).with_name("_dist_job.py")
KEYS = ("round", "sparsity", "set_size", "epochs", "start_step", "end_step", "steps", "samples", "val_acc",
        "best_epoch", "stats_seen", "stats_forgotten", "stats_never_learned", "next_set")


def launch(out: Path, mode: str, checkpoint_dir: Path | None, processes: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    args = [str(out), mode, str(checkpoint_dir or "")]
    if processes == 1:
        command = [sys.executable, str(JOB), *args]
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                   str(JOB), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def results(out: Path, processes: int = 2) -> list[dict]:
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(processes)]


def same_run(a: dict, b: dict) -> None:
    assert a["masks"].keys() == b["masks"].keys()
    for key in a["masks"]:
        assert torch.equal(a["masks"][key], b["masks"][key]), key
    assert torch.equal(a["indices"], b["indices"])
    assert len(a["history"]) == len(b["history"])
    for x, y in zip(a["history"], b["history"]):
        for key in KEYS:
            assert x.get(key) == y.get(key), (x["round"], key, x.get(key), y.get(key))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    base = tmp_path_factory.mktemp("dist")
    done = launch(base / "full", "full", base / "ck-full")
    assert done.returncode == 0, done.stderr[-3000:]
    single = launch(base / "single", "full", None, processes=1)
    assert single.returncode == 0, single.stderr[-3000:]
    return base


def test_two_ranks_agree_split_the_reads_and_only_rank_0_writes(runs):
    r0, r1 = results(runs / "full")
    assert (r0["rank"], r0["world"], r1["rank"]) == (0, 2, 1)
    same_run(r0, r1)  # identical masks, PrAC sets and history on both ranks
    single = results(runs / "single", 1)[0]
    reads = single["reads"]
    assert abs(r0["reads"] - reads / 2) <= 0.1 * reads and abs(r1["reads"] - reads / 2) <= 0.1 * reads
    assert r1["writes"] == []
    assert {"state.pt", "prac_sets.pt", "round_0.ticket", "ticket.ticket"} <= set(r0["writes"])
    assert sorted(p.name for p in (runs / "ck-full").iterdir()) == [
        "metrics.jsonl", "prac_sets.pt", "round_0.pt", "round_0.ticket", "round_1.ticket", "round_2.ticket", "state.pt", "ticket.ticket"]


def test_two_ranks_relate_to_one_process_with_the_same_global_batch(runs):
    r0 = results(runs / "full")[0]
    single = results(runs / "single", 1)[0]
    for d, s in zip(r0["history"], single["history"]):
        # the same schedule: steps, positions and epochs are equal by design
        for key in ("epochs", "start_step", "end_step", "steps"):
            assert d[key] == s[key], (d["round"], key)
        # the same global batches up to float summation order: the sets agree within 10% of the data
        assert abs(d["set_size"] - s["set_size"]) <= 10, (d["round"], d["set_size"], s["set_size"])
    assert r0["history"][0]["samples"] == single["history"][0]["samples"]  # 100 is a multiple of 2: no padding


def test_a_killed_distributed_run_resumes_to_the_same_result(runs, tmp_path):
    killed = launch(tmp_path / "killed", "kill", tmp_path / "ck")
    assert killed.returncode != 0  # every process was killed in round 1
    assert (tmp_path / "ck" / "state.pt").is_file() and not (tmp_path / "ck" / "ticket.ticket").exists()
    resumed = launch(tmp_path / "resumed", "full", tmp_path / "ck")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a, b = results(tmp_path / "resumed")
    same_run(a, b)
    same_run(a, results(runs / "full")[0])
    assert "round_0.ticket" not in a["writes"]  # round 0 was not trained again


# ---------------------------------------------------------------------- the pieces, in one process
def test_shard_sampler_pads_and_splits_like_distributed_sampler():
    base = list(range(10))
    shards = [list(ShardSampler(base, r, 4)) for r in range(4)]
    assert [len(s) for s in shards] == [3, 3, 3, 3]
    assert sorted(sum(shards, [])) == sorted(base + [0, 1])  # padded by repeating the start
    global_batches = [sum((s[i:i + 2] for s in shards), []) for i in (0, 2)]
    assert sorted(global_batches[0]) == list(range(8))  # chunks of the shards form the global batches
    with pytest.raises(ValueError, match="rank must be in"):
        ShardSampler(base, 4, 4)


def test_distributed_stats_apply_whole_epochs_in_one_process():
    stats, plain = DistributedStats(6), tickets.SampleStats(6)
    for correct in ([1, 1, 0, 0, 1, 0], [0, 1, 1, 0, 1, 1]):
        c = torch.tensor(correct, dtype=torch.bool)
        stats.record(torch.tensor([5, 4, 3]), c[[5, 4, 3]])
        stats.record(torch.tensor([0, 1, 2]), c[[0, 1, 2]])
        stats.flush()
        plain.record(torch.arange(6), c)
    assert torch.equal(stats.scores(), plain.scores())
    assert stats.summary() == plain.summary()


def test_checks_are_free_without_a_process_group():
    check_identical({"masks": 1.0})  # no process group: nothing to compare
    assert mask_checksum({"a": torch.tensor([True, False])}) != mask_checksum({"a": torch.tensor([False, True])})


def test_the_harness_runs_under_torchrun(tmp_path):
    from test_reproduce import write_image_folder

    data = write_image_folder(tmp_path / "data", train_per_class=30, test_per_class=4)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "benchmarks.reproduce",
         "cifar10", "--preset", "smoke", "--data-dir", str(data), "--out", str(out), "--quiet", "--threads", "1"],
        env=env, capture_output=True, text=True, timeout=600, cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr[-3000:]
    import json

    results = json.loads((out / "results.json").read_text())
    assert results["environment"]["processes"] == 2
    assert (out / "table.md").read_text().strip()
    assert len(results["rows"]) >= 2 and all(r["prac_steps"] > 0 for r in results["rows"])
    assert done.stdout.count("PrAC") == results.get("summary", "").count("PrAC")  # printed once, by rank 0


def test_an_own_ddp_loop_finds_what_the_engine_finds(runs, tmp_path):
    done = launch(tmp_path / "own", "own", tmp_path / "ck")
    assert done.returncode == 0, done.stderr[-3000:]
    a, b = results(tmp_path / "own")
    engine = results(runs / "full")[0]
    for key in engine["masks"]:
        assert torch.equal(a["masks"][key], engine["masks"][key]) and torch.equal(b["masks"][key], engine["masks"][key])
    assert torch.equal(a["indices"], engine["indices"]) and a["sizes"] == engine["sizes"]
    for x, y in zip(a["history"], engine["history"]):
        for key in ("set_size", "start_step", "end_step", "steps", "samples", "best_epoch", "next_set"):
            assert x.get(key) == y.get(key), (x["round"], key)
    assert b["writes"] == [] and a["writes"]
