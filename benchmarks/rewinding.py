"""The rewinding experiment: IMP with rewinding to step k, and the stability of what it finds.

``python -m benchmarks.reproduce cifar10 --experiment rewinding [--preset quick]`` runs, for
the preset's rewind points k (``paper``: about 0%, 0.5%, 2% and 7% of training; ``quick``: 0
and 7%) (Frankle et al., "Linear Mode Connectivity and the Lottery Ticket Hypothesis", ICML
2020):

1. one dense training run (seed ``s``), keeping its weights ``W_k`` at every k;
2. for each k, IMP with rewinding: prune ``amount`` of the surviving weights by global
   magnitude, rewind the survivors to ``W_k``, train from k to the end (seed ``s``), repeat
   for ``levels`` levels; the test accuracy of every level gives accuracy vs sparsity;
3. for each k, the instability of the dense network (two copies from ``W_k``) and of the
   sparsest ticket (two copies from ``m * W_k``), with :func:`tickets.stability.instability`
   (seeds ``s + 1`` and ``s + 2``): both accuracies and the error barrier on training and
   test data.

Outputs in ``--out``: ``table.md``, ``results.json``, ``accuracy_vs_sparsity.png`` (one line
per k) and ``barrier_vs_k.png`` (dense and ticket barriers against the rewind step).
Every training run goes through ``tickets.training.train`` and is cached under
``checkpoints/rewinding/``, so rerunning resumes.

The schedule is this experiment's own (the LMC paper's for ``paper``; reduced for ``quick``
and ``smoke``, see :data:`SETTINGS`); ``--epochs``, ``--rounds`` (levels + 1) and
``--train-size`` override it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import tickets
from benchmarks.reproduce.config import PRESETS, Preset
from benchmarks.reproduce.experiments import Context, build_model, register_experiment
from benchmarks.reproduce.report import fmt, markdown_table, plot_accuracy, write_json
from tickets.data.splits import balanced_subset
from tickets.data.datasets import load_dataset
from tickets.stability.instability import instability
from tickets.training.schedule import Schedule
from tickets.training.loop import train as train_run

__all__ = ["RewindingSettings", "SETTINGS", "settings_for", "rewinding", "rewind_steps", "make_schedule"]


@dataclass(frozen=True)
class RewindingSettings:
    """The schedule and sizes of one rewinding run.

    Args:
        name: the preset it belongs to.
        epochs: epochs of every training run (dense, each IMP level, each stability copy).
        lr, momentum, weight_decay, nesterov: SGD settings.
        kind: the learning-rate schedule, ``"step"`` (multiplied by ``gamma`` at each of
            ``milestones``, in epochs) or ``"cosine"`` (to 0 at the end).
        warmup_epochs: linear warm-up from ~0 to ``lr`` over this many epochs.
        batch_size: images per optimizer step.
        levels: pruning levels after the dense run (sparsity ``1 - (1 - amount) ** level``).
        amount: fraction of the surviving weights pruned at each level.
        rewind_fractions: rewind points as fractions of the total number of steps.
        alphas: points on the interpolation line (the paper: 30).
        bn_batches: training batches used to recompute batch-norm statistics at each point.
        train_images: training images used (class-balanced subset of the split); None: all.
        test_images: test images used; None: all.
        train_eval_images: training images (no augmentation) for the training barrier.
        kinds, keep_dense: which weights are pruned (``tickets.prunable_parameters``).
        data_pool: ``(training, test)`` images drawn first, class-balanced with the run's
            seed, by ``tickets.data.load_dataset``; ``train_images`` and ``test_images`` are
            then drawn from them. None takes the splits the harness loaded for its preset.
            Fixing it keeps a preset's images independent of the harness's presets.
    """

    name: str
    epochs: int
    lr: float
    milestones: tuple[int, ...]
    batch_size: int
    levels: int
    amount: float
    rewind_fractions: tuple[float, ...] = (0.0, 0.005, 0.02, 0.07)
    alphas: int = 30
    bn_batches: int | None = None
    train_images: int | None = None
    test_images: int | None = None
    train_eval_images: int | None = None
    momentum: float = 0.9
    weight_decay: float = 1e-4
    gamma: float = 0.1
    kinds: tuple[str, ...] = ("conv",)
    keep_dense: tuple[str, ...] = ("classifier",)
    data_pool: tuple[int, int] | None = None
    kind: str = "step"
    warmup_epochs: float = 0.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        if self.kind not in ("step", "cosine"):
            raise ValueError(f"kind must be 'step' or 'cosine'; got {self.kind!r}")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1; got {self.epochs}")
        if self.levels < 1:
            raise ValueError(f"levels must be >= 1 (at least one pruned ticket); got {self.levels}")
        if not 0.0 < self.amount < 1.0:
            raise ValueError(f"amount must be a fraction in (0, 1); got {self.amount}")
        if not self.rewind_fractions or any(not 0.0 <= f < 1.0 for f in self.rewind_fractions):
            raise ValueError(f"rewind_fractions must be fractions in [0, 1); got {self.rewind_fractions}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SETTINGS: dict[str, RewindingSettings] = {
    # The LMC paper's ResNet-20 schedule; levels of 20% down to ~16.8% of weights remaining.
    "paper": RewindingSettings(
        name="paper", epochs=160, lr=0.1, milestones=(80, 120), batch_size=128, levels=8, amount=0.2,
        alphas=30, bn_batches=40,
    ),
    # The harness's quick preset regime (dense ResNet-20s above 80% test accuracy): all 45,000
    # training images, 7 epochs of 176 steps (1 warm-up epoch, cosine, nesterov, wd 5e-4, lr 0.2,
    # batch 256), two levels of 50% (50% and 75% sparse), rewind points 0 and 7% of training (close to the
    # quick preset's rewind point, half an epoch = 88 steps), 7 points on each line, the whole test set;
    # 11 training runs of about 8.5 minutes, about 1.6 hours on 2 CPU cores.
    "quick": RewindingSettings(
        name="quick", epochs=7, lr=0.2, milestones=(), batch_size=256, levels=2, amount=0.5,
        rewind_fractions=(0.0, 0.07), alphas=7, bn_batches=4, train_eval_images=2000,
        weight_decay=5e-4, kind="cosine", warmup_epochs=1.0, nesterov=True,
    ),
    "smoke": RewindingSettings(
        name="smoke", epochs=2, lr=0.05, milestones=(1,), batch_size=16, levels=2, amount=0.5,
        alphas=3, bn_batches=2, train_images=64, test_images=32, train_eval_images=32,
    ),
}


def settings_for(preset: Preset) -> RewindingSettings:
    """This experiment's settings for a harness preset, with the command line's overrides.

    ``--epochs`` sets the epochs (milestones scale along), ``--rounds`` sets ``levels`` to
    rounds - 1 and ``--train-size`` the training images.
    """
    base_name = preset.name.rstrip("*")
    if base_name not in SETTINGS:
        raise ValueError(f"the rewinding experiment has no settings for preset {preset.name!r}; valid: {sorted(SETTINGS)}")
    settings = SETTINGS[base_name]
    base = PRESETS.get(base_name)
    if base is None or preset == base:
        return settings
    changes: dict[str, Any] = {}
    if preset.epochs != base.epochs:
        scale = preset.epochs / settings.epochs
        changes["epochs"] = preset.epochs
        changes["milestones"] = tuple(sorted({max(1, min(preset.epochs, round(m * scale))) for m in settings.milestones}))
    if preset.rounds != base.rounds:
        changes["levels"] = max(1, preset.rounds - 1)
    if preset.train_size != base.train_size:
        changes["train_images"] = preset.train_size
    return dataclasses.replace(settings, name=preset.name, **changes) if changes else settings


def rewind_steps(total_steps: int, fractions: Sequence[float]) -> list[int]:
    """The rewind steps for ``fractions`` of ``total_steps``, rounded, distinct, ascending.

    A nonzero fraction never rounds down to step 0 (it becomes step 1 at least).
    """
    steps = []
    for f in fractions:
        k = 0 if f == 0 else max(1, round(f * total_steps))
        if k not in steps:
            steps.append(k)
    return sorted(steps)


# --------------------------------------------------------------------------- training
def make_schedule(settings: RewindingSettings) -> Schedule:
    """The :class:`tickets.training.Schedule` of every training run of the experiment."""
    return Schedule(
        epochs=settings.epochs, batch_size=settings.batch_size, lr=settings.lr, momentum=settings.momentum,
        weight_decay=settings.weight_decay, milestones=settings.milestones, gamma=settings.gamma,
        kind=settings.kind, warmup_epochs=settings.warmup_epochs, nesterov=settings.nesterov,
    )


@torch.no_grad()
def _accuracy(model: nn.Module, data: Any, device: str) -> float:
    model.eval()
    loader = torch.utils.data.DataLoader(data, batch_size=256, shuffle=False)
    right = n = 0
    for x, y in loader:
        right += int((model(x.to(device)).argmax(1) == y.to(device)).sum())
        n += int(y.shape[0])
    return right / n


# --------------------------------------------------------------------------- experiment
class _Cache:
    """Finished pieces of the run under ``out/checkpoints/rewinding`` (rerunning resumes)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def check_settings(self, settings: dict[str, Any]) -> None:
        """Refuse to resume a run made with other settings (its pieces would be mixed in)."""
        path = self.folder / "settings.json"
        current = json.loads(json.dumps(settings))
        if path.exists():
            saved = json.loads(path.read_text())
            if saved != current:
                changed = sorted(k for k in set(saved) | set(current) if saved.get(k) != current.get(k))
                raise ValueError(
                    f"{self.folder} holds a rewinding run with other settings (differences in {changed}); "
                    f"pass another --out, or delete that folder to start over"
                )
        else:
            write_json(current, path)

    def json(self, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.folder / f"{name}.json"
        if path.exists():
            return json.loads(path.read_text())
        value = compute()
        write_json(value, path)
        return value

    def tensors(self, name: str, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        path = self.folder / f"{name}.pt"
        if path.exists():
            return torch.load(path, map_location="cpu", weights_only=True)
        value = compute()
        tickets.ticket.atomic_save(value, path)
        return value


def _subset(dataset: Any, size: int | None, seed: int) -> Any:
    if size is None or size >= len(dataset):
        return dataset
    return dataset.subset(balanced_subset(dataset.targets, size, seed))


@register_experiment("rewinding")
def rewinding(ctx: Context) -> dict[str, Any]:
    """IMP with rewinding to k in (0, ~0.5%, ~2%, ~7%) of training, and its stability."""
    cfg = ctx.config
    if tickets.distributed.is_active():
        raise ValueError(
            "the rewinding experiment runs in one process (its many short trainings gain nothing from "
            "torchrun on CPU); run it without torchrun, or use --experiment imp-vs-prac / transfer"
        )
    s = settings_for(cfg.preset)
    device = cfg.device
    seed = cfg.seed
    splits = ctx.splits
    if s.data_pool is not None and (len(splits.train), len(splits.test)) != s.data_pool:
        ctx.log(f"rewinding: drawing its own {s.data_pool[0]} training and {s.data_pool[1]} test images")
        splits = load_dataset(cfg.dataset, cfg.data_dir, train_size=s.data_pool[0], test_size=s.data_pool[1],
                              seed=seed, progress=not cfg.quiet)
    train = _subset(splits.train, s.train_images, seed)
    train_eval = _subset(splits.train_eval, s.train_eval_images, seed + 3)
    test = _subset(splits.test, s.test_images, seed + 4)
    schedule = make_schedule(s)
    per_epoch = schedule.steps_per_epoch(len(train))
    total = schedule.total_steps(len(train))
    ks = rewind_steps(total, s.rewind_fractions)
    ctx.log(
        f"rewinding: {len(train)} training images, {len(test)} test images, {s.epochs} epochs x "
        f"{per_epoch} steps = {total} steps; rewind steps {ks}; {s.levels} levels of {s.amount:.0%}"
    )
    cache = _Cache(ctx.out / "checkpoints" / "rewinding")
    cache.check_settings({"settings": s.to_dict(), "arch": cfg.arch, "dataset": cfg.dataset, "seed": seed,
                          "train": len(train), "test": len(test), "train_eval": len(train_eval),
                          "pool": [len(splits.train), len(splits.test)]})
    eval_loader = torch.utils.data.DataLoader
    test_batches = eval_loader(test, batch_size=250)
    train_eval_batches = eval_loader(train_eval, batch_size=250)
    bn_batches = eval_loader(train, batch_size=max(s.batch_size, 128), shuffle=True,
                             generator=torch.Generator().manual_seed(seed + 5))
    started = time.time()

    def build() -> nn.Module:
        return build_model(cfg.arch, ctx.splits.num_classes, seed)

    def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
        return tickets.prunable_parameters(model, keep_dense=s.keep_dense, kinds=s.kinds)

    # 1. the dense run, keeping W_k
    def dense_run() -> dict[str, Any]:
        model = build()
        states: dict[str, Any] = {}

        def keep(step: int, m: nn.Module) -> None:
            if step in ks:
                states[f"W_{step}"] = tickets.snapshot(m)

        states["W_0"] = tickets.snapshot(model)
        history = train_run(model, train, schedule, seed=seed, device=device, on_step=keep)
        states["final"] = tickets.snapshot(model)
        states["test_acc"] = torch.tensor(_accuracy(model, test, device))
        states["wall_time_s"] = torch.tensor(history.wall_time_s)
        return states

    ctx.log("dense run")
    dense = cache.tensors("dense", dense_run)
    dense_acc = float(dense["test_acc"])
    ctx.log(f"dense test accuracy {100 * dense_acc:.2f}%")

    def model_at(state: dict[str, torch.Tensor]) -> nn.Module:
        model = build()
        model.load_state_dict(state)
        return model

    rows: list[dict[str, Any]] = []
    stability: list[dict[str, Any]] = []
    for k in ks:
        w_k = dense[f"W_{k}"]
        # 2. IMP with rewinding to W_k
        mask_source = model_at(dense["final"])
        levels = [{"k": k, "level": 0, "sparsity": 0.0, "test_acc": dense_acc}]
        ticket = None
        for level in range(1, s.levels + 1):
            tickets.global_magnitude_prune(prunable(mask_source), s.amount)
            ticket = tickets.Ticket.from_model(mask_source, rewind_state=w_k, meta={"rewind_to": k})
            if level == s.levels:
                break  # the last level is trained by the stability test below

            def imp_level(ticket: tickets.Ticket = ticket) -> dict[str, Any]:
                model = ticket.apply(build())
                history = train_run(model, train, schedule, seed=seed, start_step=k, device=device)
                return {"final": tickets.snapshot(model), "masks": tickets.masks(model),
                        "test_acc": torch.tensor(_accuracy(model, test, device)),
                        "wall_time_s": torch.tensor(history.wall_time_s)}

            ctx.log(f"k={k}: IMP level {level} (sparsity {100 * ticket.sparsity:.1f}%)")
            done = cache.tensors(f"imp_k{k}_level{level}", imp_level)
            levels.append({"k": k, "level": level, "sparsity": ticket.sparsity, "test_acc": float(done["test_acc"])})
            mask_source = model_at(done["final"])
            tickets.Ticket(done["masks"]).apply(mask_source, rewind=False)
        assert ticket is not None

        common = dict(
            rewind_to=k, seeds=(seed + 1, seed + 2), schedule=schedule, test_data=test_batches,
            train_eval_data=train_eval_batches, bn_data=bn_batches, alphas=s.alphas,
            bn_batches=s.bn_batches, device=device,
        )
        # 3. stability of the sparsest ticket and of the dense network at W_k
        ctx.log(f"k={k}: instability of the ticket at sparsity {100 * ticket.sparsity:.1f}%")
        sparse = cache.json(f"instability_ticket_k{k}", lambda: instability(ticket, train, model=build(), **common).to_dict())
        levels.append({"k": k, "level": s.levels, "sparsity": ticket.sparsity,
                       "test_acc": sparse["accuracies"][0], "test_acc_copy2": sparse["accuracies"][1]})
        ctx.log(f"k={k}: instability of the dense network")
        dense_stab = cache.json(f"instability_dense_k{k}", lambda: instability(model_at(w_k), train, **common).to_dict())
        rows.extend(levels)
        stability.append({
            "k": k, "k_fraction": k / total,
            "dense_acc": dense_stab["accuracies"], "dense_train_barrier": dense_stab["barrier"]["train_barrier"],
            "dense_test_barrier": dense_stab["barrier"]["test_barrier"],
            "ticket_sparsity": ticket.sparsity, "ticket_acc": sparse["accuracies"],
            "ticket_train_barrier": sparse["barrier"]["train_barrier"],
            "ticket_test_barrier": sparse["barrier"]["test_barrier"],
            "dense_curve": dense_stab["barrier"], "ticket_curve": sparse["barrier"],
        })
        ctx.log(
            f"k={k}: ticket {100 * ticket.sparsity:.1f}% sparse acc {fmt(100 * sparse['accuracies'][0])}% / "
            f"{fmt(100 * sparse['accuracies'][1])}%, barrier test {fmt(100 * sparse['barrier']['test_barrier'])}; "
            f"dense barrier test {fmt(100 * dense_stab['barrier']['test_barrier'])}"
        )

    plots = _plots(ctx.out, rows, stability, ks, total, cfg, s)
    markdown = _markdown(rows, stability, ks, total, dense_acc, cfg, s, len(train), len(test), len(train_eval))
    summary = markdown + f"\nOutputs in {ctx.out}; this invocation {time.time() - started:.0f} s."
    return {
        "settings": s.to_dict(),
        "schedule": schedule.to_dict(),
        "total_steps": total,
        "rewind_steps": ks,
        "dense_test_acc": dense_acc,
        "rows": rows,
        "stability": stability,
        "plots": plots,
        "markdown": markdown,
        "summary": summary,
    }


def _pct(x: float | None) -> float | None:
    return None if x is None else 100 * x


def _markdown(
    rows: list[dict[str, Any]], stability: list[dict[str, Any]], ks: list[int], total: int, dense_acc: float,
    cfg: Any, s: RewindingSettings, n_train: int, n_test: int, n_train_eval: int,
) -> str:
    title = f"IMP with rewinding and stability: {cfg.dataset}, {cfg.arch}, preset {s.name}"
    if s.kind == "cosine":
        lr_text = f"lr {s.lr}, cosine to 0"
    else:
        lr_text = f"lr {s.lr}, x{s.gamma} at epochs {list(s.milestones)}"
    if s.warmup_epochs:
        lr_text += f" after {s.warmup_epochs:g} warm-up epoch(s)"
    if s.nesterov:
        lr_text += ", nesterov"
    head = (
        f"## {title}\n\n{n_train} training images, {n_test} test images, {s.epochs} epochs of "
        f"{total // s.epochs} steps (batch {s.batch_size}, {lr_text}, weight decay {s.weight_decay}), {s.levels} levels of {s.amount:.0%}, convolutions pruned "
        f"(classifier dense). Barriers: {s.alphas} points, batch-norm statistics recomputed "
        f"on {s.bn_batches} training batches per point, training barrier on {n_train_eval} "
        f"training images. Dense test accuracy {dense_acc:.2%}.\n\n"
    )
    sparsities = sorted({r["sparsity"] for r in rows})
    acc_rows = []
    for sp in sparsities:
        row: list[Any] = [f"{100 * sp:.1f}"]
        for k in ks:
            hit = [r for r in rows if r["k"] == k and r["sparsity"] == sp]
            row.append(_pct(hit[0]["test_acc"]) if hit else None)
        acc_rows.append(row)
    table1 = markdown_table(
        ["sparsity (%)"] + [f"test acc k={k} ({100 * k / total:.1f}%)" for k in ks], acc_rows
    )
    stab_rows = [
        [str(st["k"]), f"{100 * st['k_fraction']:.1f}",
         f"{fmt(_pct(st['dense_acc'][0]))} / {fmt(_pct(st['dense_acc'][1]))}",
         _pct(st["dense_train_barrier"]), _pct(st["dense_test_barrier"]),
         f"{100 * st['ticket_sparsity']:.1f}",
         f"{fmt(_pct(st['ticket_acc'][0]))} / {fmt(_pct(st['ticket_acc'][1]))}",
         _pct(st["ticket_train_barrier"]), _pct(st["ticket_test_barrier"])]
        for st in stability
    ]
    table2 = markdown_table(
        ["k (steps)", "k (% of training)", "dense acc, 2 copies (%)", "dense barrier train", "dense barrier test",
         "ticket sparsity (%)", "ticket acc, 2 copies (%)", "ticket barrier train", "ticket barrier test"],
        stab_rows,
    )
    return (head + "### Ticket test accuracy vs sparsity, per rewind step k\n\n" + table1
            + "\n### Instability (error barrier, points of error) from W_k\n\n" + table2)


def _plots(out: Path, rows: list[dict[str, Any]], stability: list[dict[str, Any]], ks: list[int], total: int,
           cfg: Any, s: RewindingSettings) -> list[str]:
    title = f"{cfg.dataset}, {cfg.arch}, preset {s.name}"
    series = {}
    for k in ks:
        mine = sorted((r for r in rows if r["k"] == k), key=lambda r: r["sparsity"])
        series[f"rewind to k={k} ({100 * k / total:.1f}%)"] = (
            [100 * r["sparsity"] for r in mine], [_pct(r["test_acc"]) for r in mine])
    acc = plot_accuracy(series, out / "accuracy_vs_sparsity.png", title=f"IMP with rewinding: {title}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    xs = [st["k"] for st in stability]
    positions = list(range(len(xs)))
    for key, label, style in [
        ("dense_test_barrier", "dense, test", "o-"), ("dense_train_barrier", "dense, train", "o--"),
        ("ticket_test_barrier", f"ticket ({100 * stability[0]['ticket_sparsity']:.0f}% sparse), test", "s-"),
        ("ticket_train_barrier", "ticket, train", "s--"),
    ]:
        ax.plot(positions, [100 * st[key] for st in stability], style, label=label)
    ax.axhline(2.0, color="grey", linewidth=0.8, linestyle=":", label="2-point stability line")
    ax.set_xticks(positions, [f"{k}\n({100 * k / total:.1f}%)" for k in xs])
    ax.set_xlabel("rewind step k (share of training)")
    ax.set_ylabel("error barrier (points)")
    ax.set_title(f"Instability vs rewind step: {title}", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "barrier_vs_k.png"
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return [acc.name, path.name]

