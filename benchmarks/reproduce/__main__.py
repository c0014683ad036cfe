"""``python -m benchmarks.reproduce DATASET [options]``: reproduce the PrAC paper's tables.

Examples::

    python -m benchmarks.reproduce cifar10 --preset quick --data-dir ~/data/cifar10 --out runs/quick
    python -m benchmarks.reproduce cifar100 --arch res56s --preset paper --device cuda
    python -m benchmarks.reproduce cifar10 --experiment transfer --transfer-from res20s --arch vgg16_bn
    python -m benchmarks.reproduce cifar10 --experiment ablation --finders full,prac,random,same-steps

Rerunning the same command with the same ``--out`` resumes: finished rounds are skipped.
"""

from __future__ import annotations

import sys

from benchmarks.reproduce import main

if __name__ == "__main__":
    sys.exit(main())
