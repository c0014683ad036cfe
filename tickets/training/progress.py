"""Progress of a training run: a live bar on a terminal, one plain line per epoch otherwise.

:func:`interactive` says which (``tickets.prune``'s round bar uses it too);
:class:`RunProgress` is the display of one :class:`tickets.training.Trainer` run.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ['interactive', 'RunProgress']


def interactive() -> bool:
    """Whether progress goes to a terminal (stderr is a tty): live bars there, and one plain
    line per epoch or round when the output is a file or a pipe."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class RunProgress:
    """The progress display of one training run over steps ``start`` to ``stop``.

    Quiet: nothing. On a terminal: a tqdm bar of steps with the last loss and validation
    accuracy. To a file or a pipe: one line per epoch on stderr (no bar frames).
    """

    def __init__(self, desc: str, *, start: int, step: int, stop: int, quiet: bool) -> None:
        from tqdm.auto import tqdm

        self.desc = desc
        self.lines = not quiet and not interactive()  # a file or a pipe: a line per epoch, no bar frames
        self.bar = tqdm(total=stop - start, initial=step - start, desc=desc, unit="it",
                        disable=quiet or self.lines, leave=False, dynamic_ncols=True)

    def stepped(self) -> None:
        """One optimizer step done."""
        self.bar.update(1)

    def epoch(self, entry: dict[str, Any], *, epochs: int, stop_step: int, steps_taken: int, samples: int,
              precision: str) -> None:
        """Show an epoch's log ``entry`` (``samples`` = the samples it trained, over all ranks)."""
        self.bar.set_postfix(loss=f"{entry['train_loss']:.3f}", **({"val": f"{entry['val_acc']:.3f}"} if "val_acc" in entry else {}))
        if self.lines:
            val = f", val {100 * entry['val_acc']:.2f}%" if "val_acc" in entry else ""
            # "schedule step" = the position in the schedule (a rewound round starts past 0);
            # "trained" = steps run, the count round summaries and the history call "steps"
            print(f"{self.desc}: epoch {entry['epoch']}/{epochs}, schedule step {entry['step']}/{stop_step} "
                  f"({steps_taken} trained), "
                  f"loss {entry['train_loss']:.4f}, train {100 * entry['train_acc']:.2f}%{val}, "
                  f"{entry['seconds']:.1f}s ({samples / max(entry['seconds'], 1e-9):,.0f} samples/s, {precision})",
                  file=sys.stderr, flush=True)

    def close(self) -> None:
        self.bar.close()
