"""tickets.integrations.lightning: one Trainer.fit runs the whole search, with the engine's
sets and accounting; misconfigurations are clear errors. Runs where Lightning is installed
(CI installs the extra)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

L = pytest.importorskip("lightning.pytorch")

import tickets  # noqa: E402
from tickets import PrACSampler, TicketSearch  # noqa: E402
from tickets.integrations.lightning import TicketCallback  # noqa: E402

from test_own_loop import COMMON, KEYS, blobs, mlp  # noqa: E402


class Module(L.LightningModule):
    def __init__(self, model, search=None, output="dict"):
        super().__init__()
        self.model, self.search, self.output = model, search, output

    def training_step(self, batch, batch_idx):
        x, y, idx = batch
        logits = self.model(x)
        loss = F.cross_entropy(logits, y)
        return {"loss": loss, "logits": logits} if self.output == "dict" else loss

    def train_dataloader(self):
        return self.search.loader()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def fit(module, callback, **kwargs):
    trainer = L.Trainer(max_epochs=-1, reload_dataloaders_every_n_epochs=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[callback], **kwargs)
    trainer.fit(module)
    return trainer


def test_lightning_callback_matches_the_engine():
    train = blobs(96)
    engine_sampler = PrACSampler(train)
    ticket = tickets.prune(mlp(), engine_sampler, **COMMON)
    model = mlp()
    sampler = PrACSampler(train)
    search = TicketSearch(model, sampler, **COMMON)
    fit(Module(model, search), TicketCallback(search))
    assert search.done
    assert torch.equal(sampler.indices, engine_sampler.indices)
    for a, b in zip(search.ticket.history, ticket.history):
        for key in KEYS:
            assert a.get(key) == b.get(key), (a["round"], key)
    for key in ticket.masks:
        assert torch.equal(search.ticket.masks[key], ticket.masks[key])


def test_lightning_misconfigurations_are_named():
    train = blobs(48)
    model = mlp()
    search = TicketSearch(model, PrACSampler(train), rounds=2, epochs=1, batch_size=16, quiet=True)
    with pytest.raises(ValueError, match="reload_dataloaders_every_n_epochs=1"):
        L.Trainer(max_epochs=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                  enable_model_summary=False, callbacks=[TicketCallback(search)]).fit(Module(model, search))
    with pytest.raises(ValueError, match="not part of the LightningModule"):
        fit(Module(mlp(), search), TicketCallback(search))
    with pytest.raises(ValueError, match="training_step must return a dict with the loss and the batch's logits"):
        fit(Module(model, search, output="loss"), TicketCallback(search))
    with pytest.raises(TypeError, match="search must be a tickets.TicketSearch"):
        TicketCallback(object())
