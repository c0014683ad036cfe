"""A ticket search inside PyTorch Lightning: one ``Trainer.fit`` runs every round through
:class:`tickets.integrations.lightning.TicketCallback` (docs/own-loop.md)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

import tickets
from tickets.integrations.lightning import TicketCallback


# [lightning]
class Classifier(L.LightningModule):
    def __init__(self, model: nn.Module, train_set: Dataset, val_set: Dataset, lr: float = 0.1) -> None:
        super().__init__()
        self.model, self.train_set, self.val_set, self.lr = model, train_set, val_set, lr
        self.search: tickets.TicketSearch | None = None

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        return {"loss": loss, "logits": logits}  # the callback reports the logits

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", self.model(x).argmax(1).eq(y).float().mean())

    def train_dataloader(self):
        return self.search.loader()  # the round's data, cut to the round's epochs

    def val_dataloader(self):
        return DataLoader(self.val_set, batch_size=256)

    def configure_optimizers(self):  # no LR scheduler: the callback follows the round's schedule
        return torch.optim.SGD(self.parameters(), lr=self.lr, momentum=0.9, weight_decay=5e-4)


def find_ticket(model: nn.Module, train_set: Dataset, val_set: Dataset, *, rounds: int = 5, epochs: int = 30,
                lr: float = 0.1, checkpoint_dir: str | Path | None = None) -> tickets.Ticket:
    net = Classifier(model, train_set, val_set, lr)
    net.search = tickets.TicketSearch(model, tickets.PrACSampler(train_set), rounds=rounds, epochs=epochs,
                                      rewind_to="1ep", checkpoint_dir=checkpoint_dir)
    trainer = L.Trainer(max_epochs=-1, reload_dataloaders_every_n_epochs=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[TicketCallback(net.search, monitor="val_acc")])
    trainer.fit(net)
    return net.search.ticket
# [/lightning]
