"""Disk use of any command of the harness: bytes written and the size of its output folder.

    python -m benchmarks.disk_use benchmarks.reproduce cifar10 --preset quick --rounds 1 \\
        --no-measure --data-dir /work/cache/cifar10 --out /work/cache/runs/disk

runs ``python -m MODULE ARGS...`` in this process and, when it ends, prints one line on
stderr: ``wchar`` (bytes the process handed to ``write()``: every checkpoint, ticket, log line
and output file; ``/proc/self/io``, Linux only), ``syscw`` (write calls), the size of the
``--out`` folder of the command, and the wall time. Divide ``wchar`` by the epochs the
command trained for the bytes written per epoch. It measures any version of the library with
the same harness command (check out an older commit and run it there for a "before").
"""

from __future__ import annotations

import atexit
import os
import runpy
import sys
import time
from pathlib import Path


def _folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) if folder.is_dir() else 0


def main(argv: list[str]) -> None:
    if not argv or argv[0].startswith("-"):
        raise SystemExit("usage: python -m benchmarks.disk_use MODULE [ARGS...] (the command's --out is measured)")
    module, args = argv[0], argv[1:]
    out = Path(args[args.index("--out") + 1]) if "--out" in args else None
    started = time.perf_counter()

    def report() -> None:
        io = dict(line.split(": ") for line in Path("/proc/self/io").read_text().splitlines() if line)
        size = _folder_bytes(out) if out is not None else 0
        print(f"disk_use: wchar={int(io['wchar'])} syscw={int(io['syscw'])} folder_bytes={size} "
              f"wall={time.perf_counter() - started:.0f}s", file=sys.stderr)

    atexit.register(report)
    sys.path.insert(0, os.getcwd())  # the checkout the command is run from, as `python -m` would
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
