"""Sparse inference on CPU: run a pruned model's linear layers with a sparse kernel.

A ticket at 90% sparsity is, as trained, a dense model with zeros. :func:`sparsify` turns a
pruned model into an inference model (a copy, in eval mode, without gradients) whose pruned
``nn.Linear`` layers multiply by a compressed-sparse-row (CSR) matrix where that is faster
than the dense matrix, and stay dense where it is not. The choice is made per layer, either
by timing both kernels on the layer's real input (``mode="measure"``) or by a rule from the
layer's shape, its sparsity and the number of rows it multiplies per call
(``mode="rule"``; see :data:`RULE`).

What is and is not sparse:

* ``nn.Linear`` layers called as modules get the choice. The sparse kernel is
  ``torch.addmm(bias, W_csr, x.T)`` (MKL's CSR times dense on CPU), chunked beyond 4x
  :data:`CHUNK_ROWS` rows: the fastest of the CSR forms measured (``torch.sparse.mm``,
  dense times CSR ``torch.mm(x, W.T_csr)``, unchunked calls).
* Convolutions stay dense: with stock PyTorch, ``unfold`` + CSR matmul is 3-50x slower
  than oneDNN's dense convolution at 90-95% sparsity. A CNN whose pruned tensors are all
  convolutions therefore gains nothing from :func:`sparsify`: ship it as a dense state dict
  (:func:`bake`, or ``prune.remove``) or, for a small file, as a ticket of its trained
  weights (``Ticket.from_model(model).save(path)``); see ``docs/deploy.md``.
* A linear layer whose weight is read *functionally* (``F.linear(x, layer.weight)``, as
  ``nn.MultiheadAttention`` does with ``out_proj``) gets no speed-up: the replacement's
  ``weight`` is a dense copy rebuilt at each read, so the output stays right, but slow.
  With ``example_input``, such layers are found (their ``forward`` never runs) and left dense.
* CPU only, float32 and float64. On a GPU, torch's fast sparse path is 2:4
  semi-structured sparsity (``torch.sparse.to_sparse_semi_structured``), which needs a mask
  with exactly 2 zeros in every 4 consecutive weights of a row: an unstructured ticket does
  not have that; see ``docs/deploy.md``.

Example::

    sparse = tickets.sparsify(model, example_input=torch.randn(1, 3, 224, 224))
    print(tickets.kernel_report(sparse))     # which layer got which kernel, and why
    with torch.inference_mode():
        logits = sparse(images)
"""

from __future__ import annotations

import copy
import math
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

import tickets.pruning.guard as guard
import tickets.pruning.methods as methods

__all__ = [
    "CHUNK_ROWS",
    "RULE",
    "KernelChoice",
    "KernelReport",
    "SparseLinear",
    "kernel_report",
    "sparsify",
]

#: Rows multiplied per sparse call for long inputs: an input of more than ``4 * CHUNK_ROWS``
#: rows is split into chunks of this many. MKL's CSR times a dense block of about 128
#: columns keeps the block in cache: at 12,608 rows (ViT-S, batch 64), 128-row chunks were
#: 1.3-3.4x faster than one call and beat dense at 90-95% sparsity, while at 197 rows (batch
#: 1) one call was 10-30% faster than 128-row chunks.
CHUNK_ROWS = 128

#: The rule of ``mode="rule"``, measured on 1-2 cores (x86-64, AVX-512, MKL) with torch
#: 2.14.1 over linear layers of 64x10 to 3072x768 weights at 80/90/95% sparsity:
#:
#: - ``min_weights``: fewer weights than this stay dense (a CSR call costs about 10 µs,
#:   more than a small dense product);
#: - ``vector_rows``: a layer multiplying fewer rows per call than this is in the *vector*
#:   regime (e.g. a classifier at batch 1), where the dense product is bound by memory and
#:   CSR wins only at ``vector_sparsity`` or more (1536x384 at 1 row: 0.85x at 80%, 1.2x at
#:   90%, 2.0x at 95%);
#: - otherwise (tokens, batches) CSR wins from ``matrix_sparsity`` (1536x384 at 197 rows:
#:   1.0x at 80%, 2.1x at 90%, 3.6x at 95%);
#: - without an example input the regime is unknown and the stricter threshold applies.
#:
#: A plain dict: set its values to retune the rule for another machine.
RULE: dict[str, float] = {
    "min_weights": 65536,
    "vector_rows": 32,
    "vector_sparsity": 0.92,
    "matrix_sparsity": 0.85,
}

Mode = Literal["auto", "measure", "rule"]
_MODES = ("auto", "measure", "rule")
_DTYPES = (torch.float32, torch.float64)
_MAX_TIMED_ROWS = 2048  # dense and chunked CSR both cost in proportion to rows beyond this


# --------------------------------------------------------------------------- the sparse layer
class SparseLinear(nn.Module):
    """An inference-only ``nn.Linear`` whose weight is stored and multiplied as CSR.

    ``y = x @ W.T + b`` is computed as ``(b + W_csr @ x.T).T``, in one call for inputs of up
    to ``4 * chunk_rows`` rows and in chunks of ``chunk_rows`` rows for longer ones. The CSR
    parts are plain buffers (``crow_indices``, ``col_indices`` as int32, ``values``), so ``state_dict``, ``.to(dtype)`` and ``copy.deepcopy`` work as for any
    module. ``weight`` is the dense matrix, rebuilt at each read, so code that reads the
    weight functionally still computes the right thing.

    Args:
        weight: the dense ``(out_features, in_features)`` weight, zeros where pruned.
        bias: the ``(out_features,)`` bias, or None.
        chunk_rows: rows multiplied per sparse call (see :data:`CHUNK_ROWS`).

    Example::

        layer = SparseLinear(linear.weight * mask, linear.bias)
    """

    crow_indices: torch.Tensor
    col_indices: torch.Tensor
    values: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, chunk_rows: int = CHUNK_ROWS) -> None:
        super().__init__()
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            raise ValueError(
                f"weight must be a 2-D (out_features, in_features) tensor; got "
                f"{tuple(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}"
            )
        if weight.dtype not in _DTYPES or weight.device.type != "cpu":
            raise ValueError(
                f"weight must be a float32 or float64 CPU tensor (torch's CSR kernels); got "
                f"{weight.dtype} on {weight.device}"
            )
        if bias is not None and tuple(bias.shape) != (weight.shape[0],):
            raise ValueError(f"bias must have shape ({weight.shape[0]},) to match weight; got {tuple(bias.shape)}")
        if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
            raise ValueError(f"chunk_rows must be a positive int; got {chunk_rows!r}")
        self.out_features, self.in_features = (int(s) for s in weight.shape)
        self.chunk_rows = chunk_rows
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            csr = weight.detach().to_sparse_csr()
        self.register_buffer("crow_indices", csr.crow_indices().to(torch.int32))
        self.register_buffer("col_indices", csr.col_indices().to(torch.int32))
        self.register_buffer("values", csr.values().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._cached: tuple[tuple[Any, ...], torch.Tensor, torch.Tensor | None] | None = None

    @property
    def nnz(self) -> int:
        """Number of stored (surviving) weights."""
        return int(self.values.numel())

    @property
    def sparsity(self) -> float:
        """Fraction of the weight matrix that is zero."""
        return 1.0 - self.nnz / max(1, self.out_features * self.in_features)

    @property
    def weight(self) -> torch.Tensor:
        """The dense weight (a fresh tensor at each read)."""
        return self._matrix()[0].to_dense()

    def _matrix(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        # rebuilt when .to() or load_state_dict replaced or changed a buffer
        key = tuple((t.data_ptr(), t._version, t.dtype) for t in (self.crow_indices, self.col_indices, self.values))
        key += ((self.bias.data_ptr(), self.bias._version) if self.bias is not None else None,)
        if self._cached is None or self._cached[0] != key:
            # checked once per change of the buffers: indices from a loaded state_dict are
            # validated before any kernel reads memory through them
            matrix = torch.sparse_csr_tensor(
                self.crow_indices, self.col_indices, self.values, (self.out_features, self.in_features),
                check_invariants=True,
            )
            column = None if self.bias is None else self.bias.unsqueeze(1)
            self._cached = (key, matrix, column)
        return self._cached[1], self._cached[2]

    def __deepcopy__(self, memo: dict[int, Any]) -> SparseLinear:
        clone = self.__class__.__new__(self.__class__)
        memo[id(self)] = clone
        for k, v in self.__dict__.items():
            setattr(clone, k, None if k == "_cached" else copy.deepcopy(v, memo))
        return clone

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_cached": None}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(
                f"SparseLinear({self.in_features} -> {self.out_features}) got an input with "
                f"{x.shape[-1]} features in its last dimension (shape {tuple(x.shape)})"
            )
        matrix, column = self._matrix()
        rows = x.reshape(-1, self.in_features)
        if rows.dtype != self.values.dtype:
            raise ValueError(f"SparseLinear holds {self.values.dtype} weights but got a {rows.dtype} input")
        if rows.shape[0] <= 4 * self.chunk_rows:
            out = self._product(matrix, column, rows)
        else:
            out = torch.cat([self._product(matrix, column, part) for part in rows.split(self.chunk_rows)])
        return out.reshape(*x.shape[:-1], self.out_features)

    @staticmethod
    def _product(matrix: torch.Tensor, column: torch.Tensor | None, rows: torch.Tensor) -> torch.Tensor:
        if column is None:
            return torch.sparse.mm(matrix, rows.t()).t()
        return torch.addmm(column, matrix, rows.t()).t()

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, sparsity={self.sparsity:.2%}"
        )


# --------------------------------------------------------------------------- the report
@dataclass(frozen=True)
class KernelChoice:
    """The kernel :func:`sparsify` chose for one layer, and why.

    Attributes:
        name: the module's qualified name, e.g. ``"blocks.0.mlp.fc1"``.
        layer: its type, e.g. ``"Linear"`` or ``"Conv2d"``.
        shape: the weight's shape.
        sparsity: fraction of zero weights.
        rows: rows multiplied per call in the example input (None without one).
        kernel: ``"csr"`` or ``"dense"``.
        reason: why, in words.
        dense_ms: measured time of the dense kernel per call (``mode="measure"``), else None.
        csr_ms: measured time of the CSR kernel per call, else None.
    """

    name: str
    layer: str
    shape: tuple[int, ...]
    sparsity: float
    rows: int | None
    kernel: str
    reason: str
    dense_ms: float | None = None
    csr_ms: float | None = None


@dataclass(frozen=True)
class KernelReport:
    """Per-layer kernel choices of a model made by :func:`sparsify`.

    ``print(report)`` shows a table. Attributes: ``layers`` (one :class:`KernelChoice` per
    linear or convolution layer with a weight), ``mode`` (``"measure"`` or ``"rule"``, what
    was used), ``threads`` (``torch.get_num_threads()`` when choosing).
    """

    layers: tuple[KernelChoice, ...]
    mode: str
    threads: int

    @property
    def csr_layers(self) -> list[str]:
        """Names of the layers that run the CSR kernel."""
        return [c.name for c in self.layers if c.kernel == "csr"]

    def __str__(self) -> str:
        def ms(v: float | None) -> str:
            return "" if v is None else f"{v:.3f}"

        header = ("layer", "type", "shape", "sparsity", "rows", "kernel", "dense ms", "csr ms", "reason")
        rows = [
            (c.name, c.layer, "x".join(map(str, c.shape)), f"{c.sparsity:.2%}",
             "" if c.rows is None else str(c.rows), c.kernel, ms(c.dense_ms), ms(c.csr_ms), c.reason)
            for c in self.layers
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        line = lambda r: "  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()  # noqa: E731
        top = f"{len(self.csr_layers)} of {len(self.layers)} layers on CSR (mode={self.mode}, {self.threads} threads)"
        return "\n".join([top, line(header), "-" * (sum(widths) + 2 * len(widths)), *map(line, rows)])


_REPORT_ATTRIBUTE = "_tickets_kernel_report"


def kernel_report(model: nn.Module) -> KernelReport:
    """The per-layer kernel choices of a model returned by :func:`sparsify`.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``model`` was not made by :func:`sparsify`.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module made by tickets.sparsify; got {type(model).__name__}")
    report = model.__dict__.get(_REPORT_ATTRIBUTE)
    if not isinstance(report, KernelReport):
        raise ValueError(f"this {type(model).__name__} was not made by tickets.sparsify: it has no kernel report")
    return report


# --------------------------------------------------------------------------- sparsify
def sparsify(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[Any] | None = None,
    mode: Mode = "auto",
    *,
    repeats: int = 7,
    margin: float = 0.1,
    chunk_rows: int = CHUNK_ROWS,
    check: bool = True,
) -> nn.Module:
    """A CPU inference copy of a pruned ``model`` whose linear layers use CSR where faster.

    The copy has the masks baked into the weights (no ``<name>_orig``/``<name>_mask``, no
    hooks), is in eval mode with ``requires_grad=False`` everywhere, and each chosen
    ``nn.Linear`` is replaced by a :class:`SparseLinear`. ``model`` itself is not changed.
    Its outputs equal the masked dense model's up to float rounding (the sums run in
    another order). Read the choices with :func:`kernel_report`.

    Args:
        model: a CPU model, pruned with ``torch.nn.utils.prune``/this library (the
            ``<name>_orig``/``<name>_mask`` state, e.g. after ``Ticket.apply`` and
            training), or after ``prune.remove`` (the zeros are in the weights).
            Sparsity is counted from the zeros of the masked weight.
        example_input: an input of the regime you will run (batch 1 for latency, a full
            batch for throughput): a tensor, or a tuple/list of positional arguments. It
            is run through the model once to see each layer's input; layers whose forward
            never runs (weights read functionally, or unused) stay dense.
        mode: ``"measure"`` times both kernels on each layer's input from
            ``example_input`` (needs it) and takes CSR only if it is at least ``margin``
            faster; ``"rule"`` applies :data:`RULE` to the layer's shape, sparsity and rows
            per call; ``"auto"`` measures when ``example_input`` is given, else uses the rule.
        repeats: timed calls per kernel and layer (``mode="measure"``); the median counts.
        margin: how much faster (a fraction) CSR must measure to be chosen, in ``[0, 1)``.
        chunk_rows: rows per sparse call (see :data:`CHUNK_ROWS`).
        check: with ``example_input``, compare the result's output with the dense model's
            and raise if they differ beyond float tolerance.

    Returns:
        The new model.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: an unknown ``mode``, ``mode="measure"`` without ``example_input``, a
            model with parameters off the CPU, or a bad ``repeats``/``margin``/``chunk_rows``.
        RuntimeError: ``check`` found outputs that differ.

    Example::

        sparse = tickets.sparsify(model, example_input=torch.randn(1, 3, 224, 224))
        print(tickets.kernel_report(sparse))
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {list(_MODES)}; got {mode!r}")
    if mode == "measure" and example_input is None:
        raise ValueError("mode='measure' times each layer on its real input: pass example_input (or use mode='rule')")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int; got {repeats!r}")
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0.0 <= margin < 1.0:
        raise ValueError(f"margin must be a fraction in [0, 1); got {margin!r}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, int) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive int; got {chunk_rows!r}")
    for key, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor is not None and tensor.device.type != "cpu":
            raise ValueError(
                f"sparsify builds a CPU model, but {key!r} is on {tensor.device}; call model.cpu() first"
            )
    args = _as_args(example_input)
    chosen_mode = "measure" if mode == "measure" or (mode == "auto" and args is not None) else "rule"

    dense = bake(model)
    layers = _layers(dense)
    seen = _observe(dense, layers, args, chosen_mode, repeats, chunk_rows) if args is not None else {}

    choices = []
    replace = {}
    for name, module in layers.items():
        choice = _choose(name, module, seen.get(name), args is not None, chosen_mode, margin)
        choices.append(choice)
        if choice.kernel == "csr":
            replace[name] = SparseLinear(module.weight, module.bias, chunk_rows)
    sparse = copy.deepcopy(dense) if (check and args is not None and replace) else dense
    for name, layer in replace.items():
        parent_name, _, child = name.rpartition(".")
        setattr(sparse.get_submodule(parent_name), child, layer)
    sparse.__dict__[_REPORT_ATTRIBUTE] = KernelReport(tuple(choices), chosen_mode, torch.get_num_threads())
    if sparse is not dense:
        assert args is not None
        _check_outputs(dense, sparse, args)
    return sparse


def bake(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` with every mask multiplied into its tensor.

    The copy holds plain parameters (``weight``, not ``weight_orig``/``weight_mask``), no
    pruning hooks and no mask guard, with ``requires_grad=False``: the dense reference for
    :func:`sparsify`, and what it starts from. A Parameter shared by several modules stays
    shared. ``model`` is not changed.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module; got {type(model).__name__}")
    baked = copy.deepcopy(model)
    masked: dict[int, nn.Parameter] = {}
    for module in baked.modules():
        for name in [k[: -len("_orig")] for k in list(module._parameters) if k.endswith("_orig")]:
            if not methods.is_pruned_tensor(module, name):
                continue
            orig = module._parameters.pop(name + "_orig")
            mask = module._buffers.pop(name + "_mask")
            for key, hook in list(module._forward_pre_hooks.items()):
                if isinstance(hook, torch_prune.BasePruningMethod) and hook._tensor_name == name:
                    del module._forward_pre_hooks[key]
            module.__dict__.pop(name, None)  # the cached masked weight
            if id(orig) not in masked:
                with torch.no_grad():
                    value = torch.where(mask.bool(), orig, torch.zeros((), dtype=orig.dtype, device=orig.device))
                masked[id(orig)] = nn.Parameter(value, requires_grad=False)
            module.register_parameter(name, masked[id(orig)])
        for hooks in (module._forward_pre_hooks, module._forward_hooks):
            for key, hook in list(hooks.items()):
                if isinstance(hook, (guard._GuardPre, guard._GuardPost)):
                    del hooks[key]
    baked.eval()
    baked.requires_grad_(False)
    return baked


# --------------------------------------------------------------------------- internals
def _as_args(example_input: Any) -> tuple[Any, ...] | None:
    if example_input is None:
        return None
    if isinstance(example_input, torch.Tensor):
        return (example_input,)
    if isinstance(example_input, (tuple, list)):
        return tuple(example_input)
    raise TypeError(
        f"example_input must be a tensor or a tuple/list of positional arguments; got {type(example_input).__name__}"
    )


_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    """Linear and convolution layers with a weight, by qualified name (model order)."""
    found = {}
    for name, module in model.named_modules():
        if isinstance(module, (nn.Linear, *_CONV)) and isinstance(module._parameters.get("weight"), torch.Tensor):
            found[name] = module
    return found


@dataclass
class _Seen:
    rows: int
    dense_ms: float | None = None
    csr_ms: float | None = None


def _observe(
    model: nn.Module,
    layers: Mapping[str, nn.Module],
    args: tuple[Any, ...],
    mode: str,
    repeats: int,
    chunk_rows: int,
) -> dict[str, _Seen]:
    """Run ``args`` through ``model``; record the rows (and, to measure, the timings) per linear layer."""
    seen: dict[str, _Seen] = {}

    def hook_for(name: str) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def hook(module: nn.Module, inputs: tuple[Any, ...]) -> None:
            if name in seen or not inputs or not isinstance(inputs[0], torch.Tensor):
                return
            rows = inputs[0].reshape(-1, inputs[0].shape[-1])
            seen[name] = _Seen(rows.shape[0])
            has_zeros = int(torch.count_nonzero(module.weight)) < module.weight.numel()
            if mode == "measure" and has_zeros and _candidate(module) is None:
                seen[name].dense_ms, seen[name].csr_ms = _time(module, rows, repeats, chunk_rows)

        return hook

    handles = [
        module.register_forward_pre_hook(hook_for(name))
        for name, module in layers.items()
        if isinstance(module, nn.Linear)
    ]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
            model(*args)
    finally:
        for h in handles:
            h.remove()
    return seen


def _candidate(module: nn.Module) -> str | None:
    """Why ``module`` cannot take the CSR kernel, or None if it can."""
    if isinstance(module, _CONV):
        return "convolution: dense (oneDNN beats unfold + CSR by 3-50x)"
    if type(module).forward is not nn.Linear.forward:
        return f"{type(module).__name__} has its own forward: left as it is"
    if module.weight.dtype not in _DTYPES:
        return f"{module.weight.dtype} weights: torch's CPU CSR kernels take float32/float64"
    return None


def _time(module: nn.Module, rows: torch.Tensor, repeats: int, chunk_rows: int) -> tuple[float, float]:
    """Median ms per call of the dense and the CSR kernel on (at most 2048 of) ``rows``, interleaved."""
    rows = rows[:_MAX_TIMED_ROWS].contiguous()
    sparse = SparseLinear(module.weight, module.bias, chunk_rows)
    runs: dict[str, list[float]] = {"dense": [], "csr": []}
    kernels = {"dense": module.forward, "csr": sparse.forward}
    for kernel in kernels.values():  # warm-up: first calls allocate and build the CSR view
        kernel(rows)
    for _ in range(repeats):
        for key, kernel in kernels.items():
            start = time.perf_counter()
            kernel(rows)
            runs[key].append(time.perf_counter() - start)
    return statistics.median(runs["dense"]) * 1e3, statistics.median(runs["csr"]) * 1e3


def _choose(
    name: str, module: nn.Module, seen: _Seen | None, has_example: bool, mode: str, margin: float
) -> KernelChoice:
    weight = module.weight
    sparsity = 1.0 - int(torch.count_nonzero(weight)) / max(1, weight.numel())
    base = dict(name=name, layer=type(module).__name__, shape=tuple(weight.shape), sparsity=sparsity,
                rows=None if seen is None else seen.rows)
    why_not = _candidate(module)
    if why_not is not None:
        return KernelChoice(**base, kernel="dense", reason=why_not)
    if has_example and seen is None:
        return KernelChoice(**base, kernel="dense",
                            reason="its forward did not run on the example input (weight read functionally, or unused)")
    if sparsity == 0.0:
        return KernelChoice(**base, kernel="dense", reason="no zero weights")
    if mode == "measure":
        assert seen is not None and seen.dense_ms is not None and seen.csr_ms is not None
        faster = seen.csr_ms <= (1.0 - margin) * seen.dense_ms
        ratio = seen.dense_ms / seen.csr_ms if seen.csr_ms > 0 else math.inf
        reason = (f"measured: CSR {ratio:.2f}x the speed of dense"
                  + ("" if faster else f" (needs {1 / (1 - margin):.2f}x)"))
        return KernelChoice(**base, kernel="csr" if faster else "dense", reason=reason,
                            dense_ms=seen.dense_ms, csr_ms=seen.csr_ms)
    if weight.numel() < RULE["min_weights"]:
        return KernelChoice(**base, kernel="dense", reason=f"rule: {weight.numel()} weights < {RULE['min_weights']:.0f}")
    if seen is None:
        threshold, regime = max(RULE["vector_sparsity"], RULE["matrix_sparsity"]), "rows per call unknown"
    elif seen.rows < RULE["vector_rows"]:
        threshold, regime = RULE["vector_sparsity"], f"{seen.rows} rows per call < {RULE['vector_rows']:.0f}"
    else:
        threshold, regime = RULE["matrix_sparsity"], f"{seen.rows} rows per call >= {RULE['vector_rows']:.0f}"
    kernel = "csr" if sparsity >= threshold else "dense"
    sign = ">=" if kernel == "csr" else "<"
    return KernelChoice(**base, kernel=kernel, reason=f"rule: sparsity {sparsity:.2%} {sign} {threshold:.0%} ({regime})")


def _tensors(value: Any) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, Mapping):
        return [t for v in value.values() for t in _tensors(v)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _check_outputs(dense: nn.Module, sparse: nn.Module, args: tuple[Any, ...]) -> None:
    with torch.no_grad():
        expected, got = _tensors(dense(*args)), _tensors(sparse(*args))
    if len(expected) != len(got):
        raise RuntimeError("the sparse model returns another number of tensors than the dense model")
    for i, (e, g) in enumerate(zip(expected, got)):
        if not e.is_floating_point():
            ok = torch.equal(e, g)
        else:
            scale = float(e.abs().max()) if e.numel() else 0.0
            ok = e.shape == g.shape and torch.allclose(g, e, rtol=1e-4, atol=1e-5 * max(1.0, scale))
        if not ok:
            diff = (g - e).abs().max().item() if e.shape == g.shape else f"shape {tuple(g.shape)} vs {tuple(e.shape)}"
            raise RuntimeError(
                f"output {i} of the sparse model differs from the dense model's (max difference {diff}); "
                f"a replaced layer is probably used in a way SparseLinear does not support: pass "
                f"mode='rule' without example_input to see the choices, and report this"
            )
