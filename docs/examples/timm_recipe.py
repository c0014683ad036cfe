"""A ticket search inside a timm-style recipe: timm's optimizer factory, its cosine scheduler
stepped per update, mixup/cutmix with label smoothing (docs/own-loop.md)."""

from __future__ import annotations

from pathlib import Path

import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from timm.optim import create_optimizer_v2
from timm.scheduler import CosineLRScheduler
from torch import nn
from torch.utils.data import Dataset

import tickets


def find_ticket(model: nn.Module, train_set: Dataset, val_set: Dataset, *, rounds: int = 5, epochs: int = 30,
                lr: float = 0.1, checkpoint_dir: str | Path | None = None) -> tickets.Ticket:
    # [timm]
    search = tickets.TicketSearch(model, tickets.PrACSampler(train_set), rounds=rounds, epochs=epochs,
                                  rewind_to="1ep", checkpoint_dir=checkpoint_dir)
    mixup = Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, label_smoothing=0.1, num_classes=search.classes)
    loss_fn = SoftTargetCrossEntropy()
    loader = search.loader(num_workers=2)
    for rnd in search:
        optimizer = create_optimizer_v2(model, opt="sgd", lr=lr, momentum=0.9, weight_decay=5e-4)
        rnd.attach(optimizer)  # checked fresh, and training the pruned tensors
        # timm's scheduler over the round's steps (PrAC rounds are shorter), from the rewind point
        scheduler = CosineLRScheduler(optimizer, t_initial=rnd.total_steps, warmup_t=rnd.steps_per_epoch,
                                      warmup_lr_init=lr / 100, t_in_epochs=False)
        scheduler.step_update(rnd.step)
        for epoch in rnd:
            model.train()
            for x, y, idx in loader:
                if len(x) % 2 == 0:  # timm's Mixup pairs samples: an odd last batch goes unmixed
                    x, target = mixup(x, y)
                else:
                    target = torch.nn.functional.one_hot(y, search.classes).float() * 0.9 + 0.1 / search.classes
                logits = model(x)
                loss = loss_fn(logits, target)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                optimizer.step()
                rnd.report(idx, logits, target)
                scheduler.step_update(rnd.step)
            rnd.end_epoch(val_acc=tickets.evaluate(model, val_set).accuracy)  # keeps the best epoch
        search.end_round()
    return search.ticket
    # [/timm]
