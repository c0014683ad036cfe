"""A PyTorch Lightning callback that runs a :class:`tickets.TicketSearch` inside ``Trainer.fit``.

One ``fit`` runs every round: the callback begins a round, lets Lightning train it epoch by
epoch on the round's data (``search.loader()`` in your ``train_dataloader``), sets the
learning rate of every step from the round's schedule, reports every batch, and at the end of
the round prunes, rewinds, picks the next PrAC set and starts the next round; when the search
is done it stops the trainer. Install with ``pip install 'torch-tickets[lightning]'``.

Example::

    class Net(L.LightningModule):
        def training_step(self, batch, batch_idx):
            x, y, idx = batch                              # search.loader() batches
            logits = self.model(x)
            loss = F.cross_entropy(logits, y)
            return {"loss": loss, "logits": logits}        # the callback reports the logits
        def train_dataloader(self):
            return search.loader(num_workers=4)
        def configure_optimizers(self):                   # no LR scheduler: the search sets the lr
            return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    net = Net()
    search = tickets.TicketSearch(net.model, PrACSampler(train_set), rounds=5, epochs=30)
    trainer = L.Trainer(max_epochs=-1, reload_dataloaders_every_n_epochs=1,
                        callbacks=[TicketCallback(search, monitor="val_acc")])
    trainer.fit(net)
    ticket = search.ticket
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    try:
        import pytorch_lightning as pl  # type: ignore[no-redef]
    except ImportError as e:
        raise ImportError(
            "tickets.integrations.lightning needs PyTorch Lightning: pip install 'torch-tickets[lightning]'"
        ) from e

from tickets.search.round import Round
from tickets.search.ticket_search import TicketSearch

__all__ = ["TicketCallback"]


class TicketCallback(pl.Callback):
    """Run ``search`` inside ``Trainer.fit``: every round, every epoch, every step.

    Requirements (each checked, with an error naming what to change):

    * the training data comes from ``search.loader()`` (batches ``(input, target, index)``)
      and the trainer reloads it every epoch (``reload_dataloaders_every_n_epochs=1``): a
      round's epochs differ in length (the first after a rewind is partial, PrAC sets shrink);
    * ``training_step`` returns a dict with the ``loss`` and the batch's ``logits``;
    * ``search.model`` is the LightningModule or one of its submodules;
    * ``max_epochs=-1`` (or enough epochs): the callback stops the trainer when the search is
      done, and :attr:`TicketSearch.rounds` times the epochs is an upper bound;
    * no learning-rate scheduler: the callback sets every group's learning rate to its
      initial value times the round's schedule factor before each step. At the start of each
      round the optimizers' state (momentum, Adam moments) is cleared, as a fresh optimizer.

    Args:
        search: the search to run (a new one, or one resumed from its ``checkpoint_dir``).
        monitor: a metric logged in validation (``self.log("val_acc", ...)``), an accuracy in
            [0, 1]: each round keeps its best-validation weights, as ``tickets.prune`` does.
        logits_key: the key of the logits in ``training_step``'s output.
    """

    def __init__(self, search: TicketSearch, *, monitor: str | None = None, logits_key: str = "logits") -> None:
        if not isinstance(search, TicketSearch):
            raise TypeError(f"search must be a tickets.TicketSearch; got {type(search).__name__}")
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a logged metric or None; got {monitor!r}")
        self.search = search
        self.monitor = monitor
        self.logits_key = logits_key
        self._base_lrs: list[list[float]] | None = None

    @property
    def round(self) -> Round | None:
        """The round being trained, or None."""
        return self.search.current

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.world_size > 1:
            raise ValueError(
                f"TicketCallback runs on one process (this trainer has {trainer.world_size}): Lightning's DDP strategy "
                f"shards the data with its own sampler, not the round's. For several processes run tickets.prune or "
                f"a TicketSearch loop under torchrun (docs/distributed.md)"
            )
        if trainer.reload_dataloaders_every_n_epochs != 1:
            raise ValueError(
                "TicketCallback needs pl.Trainer(reload_dataloaders_every_n_epochs=1): each epoch of a round "
                f"has its own length (got {trainer.reload_dataloaders_every_n_epochs})"
            )
        if not any(m is self.search.model for m in pl_module.modules()):
            raise ValueError("search.model is not part of the LightningModule being fitted: build the search over it")
        if not trainer.optimizers:
            raise ValueError("the LightningModule configures no optimizer")
        if any(config.scheduler is not None for config in getattr(trainer, "lr_scheduler_configs", [])):
            raise ValueError("configure no LR scheduler: TicketCallback sets the learning rate from the round's schedule")
        self._base_lrs = [[float(g.get("initial_lr", g["lr"])) for g in opt.param_groups] for opt in trainer.optimizers]
        if self.search.done:
            trainer.should_stop = True
            return
        if self.search.current is None:
            self._begin(trainer)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        rnd = self.search.current
        if rnd is None or self._base_lrs is None:
            return
        factor = rnd.lr_factor()
        for opt, bases in zip(trainer.optimizers, self._base_lrs):
            for group, base in zip(opt.param_groups, bases):
                group["lr"] = base * factor

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        rnd = self.search.current
        if rnd is None:
            return
        if not isinstance(outputs, Mapping) or self.logits_key not in outputs:
            raise ValueError(
                f"training_step must return a dict with the loss and the batch's logits under {self.logits_key!r} "
                f"(return {{'loss': loss, {self.logits_key!r}: logits}}); got {type(outputs).__name__}"
                + (f" with keys {sorted(outputs)}" if isinstance(outputs, Mapping) else "")
            )
        if not isinstance(batch, Sequence) or len(batch) < 3:
            raise ValueError("training batches must be (input, target, index): use search.loader() in train_dataloader()")
        rnd.report(batch[2], outputs[self.logits_key], batch[1])

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rnd = self.search.current
        if rnd is None or rnd._epoch_steps == 0:
            return
        val = None
        if self.monitor is not None:
            value = trainer.callback_metrics.get(self.monitor)
            if value is None:
                raise ValueError(
                    f"monitor {self.monitor!r} was not logged (logged: {sorted(trainer.callback_metrics)}): "
                    f"log it in validation_step, and validate every epoch"
                )
            val = float(value.item() if isinstance(value, torch.Tensor) else value)
        rnd.end_epoch(val_acc=val)
        if not rnd.done:
            return
        self.search.end_round()
        if self.search.done:
            trainer.should_stop = True
        else:
            self._begin(trainer)

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.search.round, "done": self.search.done}

    # ------------------------------------------------------------------ internals
    def _begin(self, trainer: pl.Trainer) -> None:
        self.search.begin_round()
        for opt in trainer.optimizers:  # a fresh optimizer for the round: no momentum from the last one
            opt.state.clear()
