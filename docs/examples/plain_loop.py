"""A ticket search inside a plain PyTorch loop with mixup and an EMA model.

The lines marked ``# tickets`` are all the search adds to the loop (docs/own-loop.md).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import Dataset

import tickets


def mixup(x: torch.Tensor, y: torch.Tensor, classes: int, alpha: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each input with another of the batch; returns the inputs and their soft targets."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0])
    soft = F.one_hot(y, classes).float()
    return lam * x + (1 - lam) * x[perm], lam * soft + (1 - lam) * soft[perm]


def find_ticket(model: nn.Module, train_set: Dataset, val_set: Dataset, *, rounds: int = 5, epochs: int = 30,
                lr: float = 0.1, checkpoint_dir: str | Path | None = None) -> tickets.Ticket:
    # [own-loop]
    search = tickets.TicketSearch(model, tickets.PrACSampler(train_set), rounds=rounds,  # tickets
                                  epochs=epochs, rewind_to="1ep", checkpoint_dir=checkpoint_dir)  # tickets
    loader = search.loader(num_workers=2)  # tickets: (input, target, index) batches of the round
    for rnd in search:  # tickets: begin_round() ... end_round()
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
        scheduler = rnd.lr_scheduler(optimizer)  # tickets: the round's (scaled) schedule
        ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.998), use_buffers=True)
        for epoch in rnd:  # tickets: the round's epochs
            model.train()
            for x, y, idx in loader:
                mixed, soft = mixup(x, y, search.classes)
                logits = model(mixed)
                loss = torch.sum(-soft * F.log_softmax(logits, dim=1), dim=1).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                ema.update_parameters(model)
                rnd.report(idx, logits, soft)  # tickets: statistics, accounting, masks
        model.load_state_dict(ema.module.state_dict())  # the EMA weights are the round's result
        val = tickets.evaluate(model, val_set)
        search.end_round(val_acc=val.accuracy, val_loss=val.loss)  # tickets: prune, rewind, next set
    return search.ticket
    # [/own-loop]
