"""embag.torch.TableBatchedEmbeddingBags: every embedding table of a model in one call, and
training with the optimizer fused into backward (the role of FBGEMM's
``SplitTableBatchedEmbeddingBagsCodegen``, TorchRec's compute kernel), on embag/batched.h.

Importing needs PyTorch; ``embag.torch`` re-exports the public names. Three custom operators
(``torch.library``), each with a fake implementation, so autograd, ``torch.compile(fullgraph=True)``
and ``torch.export`` see one opaque op per call:

- ``embag::batched_embedding_bags``: the ``[B, sum of D]`` output. Its autograd formula runs one
  of the two below. It also takes the fused optimizer's configuration and state: the backward
  formula sees only the forward's inputs.
- ``embag::batched_embedding_bags_backward``: per-table gradients, dense ``(V_t, D_t)`` or sparse
  (coalesced rows and values; the row counts are data dependent, unbacked sizes in the fake).
- ``embag::batched_embedding_bags_fused_backward_``: the optimizer step on the touched rows, in
  place on the tables and the optimizer state; no gradient is materialised and ``.grad`` stays
  ``None``.

torch.library's schemas have no list of strings or of optional ints, so the per-table poolings
travel as one comma-separated string and the padding indices as a list of ints beside a list of
flags saying which tables have one.
"""

from __future__ import annotations

import math
import operator
from typing import Any, NamedTuple, Optional, Sequence, Union

import torch
from torch import Tensor

from . import _embag
from ._arrays import _capsule

__all__ = ["TableBatchedEmbeddingBags", "TableSpec"]

OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad", "adam")
POOLINGS = ("sum", "mean", "max")
WEIGHT_DECAY_MODES = ("none", "l2", "decoupled")
# The tables' dtypes the kernels take (one for every table of a module).
TABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class TableSpec(NamedTuple):
    """One table: ``rows`` x ``dim``, pooled with ``pooling`` ("sum", "mean" or "max"; sum with
    per_sample_weights is the weighted sum), stored in ``dtype``, positions holding
    ``padding_idx`` skipped. A plain tuple ``(rows, dim[, pooling[, dtype[, padding_idx]]])`` is
    taken too (FBGEMM's specs are ``(rows, dim, location, compute_device)``: pass the first two)."""

    rows: int
    dim: int
    pooling: Optional[str] = None
    dtype: Optional[torch.dtype] = None
    padding_idx: Optional[int] = None


# ---- The operators ---------------------------------------------------------------------------

def _tables(poolings: str) -> list[str]:
    return poolings.split(",") if poolings else []


def _padding(padding_idx: Sequence[int], padded: Sequence[bool]) -> list[Optional[int]]:
    return [int(p) if has else None for p, has in zip(padding_idx, padded)]


def _call_args(weights: Sequence[Tensor], feature_table: Sequence[int], poolings: str,
               padding_idx: Sequence[int], padded: Sequence[bool], indices: Tensor,
               offsets: Tensor, per_sample_weights: Optional[Tensor],
               written: bool = False) -> list[Any]:
    """The binding's leading arguments (tables, pooling, padding, map, indices, offsets, psw,
    feature columns: packed, so an empty list)."""
    return [
        [_capsule(w, f"weights[{t}]", written=written) for t, w in enumerate(weights)],
        _tables(poolings),
        _padding(padding_idx, padded),
        list(feature_table),
        _capsule(indices.contiguous(), "indices"),
        _capsule(offsets.contiguous(), "offsets"),
        None if per_sample_weights is None else _capsule(per_sample_weights.contiguous(),
                                                         "per_sample_weights"),
        [],
    ]


def _output_shape(weights: Sequence[Tensor], feature_table: Sequence[int],
                  offsets: Tensor) -> tuple[Any, int]:
    """(B, C): B from the offsets' length (F*B + 1), C the packed blocks' width. A length that
    does not fit F gives B = 0, and the call's validation then says what is wrong."""
    features = len(feature_table)
    entries = offsets.shape[0] if offsets.dim() == 1 else 0
    columns = sum(int(weights[t].shape[1]) for t in feature_table
                  if 0 <= t < len(weights) and weights[t].dim() == 2)
    if features == 0:
        return 0, columns
    if isinstance(entries, int) and (entries < 1 or (entries - 1) % features != 0):
        return 0, columns
    return (entries - 1) // features, columns


@torch.library.custom_op("embag::batched_embedding_bags", mutates_args=())
def _forward_op(
    weights: list[Tensor],
    feature_table: list[int],
    poolings: str,
    padding_idx: list[int],
    padded: list[bool],
    indices: Tensor,
    offsets: Tensor,
    per_sample_weights: Optional[Tensor],
    optimizer: str,
    hyper: list[float],
    weight_decay_mode: str,
    step: int,
    momentum1: list[Tensor],
    momentum2: list[Tensor],
    sparse: bool,
) -> Tensor:
    """``[B, sum of D]``: feature f's block is its bags pooled from table feature_table[f].
    optimizer .. sparse only configure backward (optimizer "" is autograd gradients)."""
    bags, columns = _output_shape(weights, feature_table, offsets)
    dtype = weights[0].dtype if weights else torch.float32
    output = indices.new_empty((bags, columns), dtype=dtype)
    _embag.batched_forward(
        *_call_args(weights, feature_table, poolings, padding_idx, padded, indices, offsets,
                    per_sample_weights),
        _capsule(output, "out"),
    )
    return output


@_forward_op.register_fake
def _forward_fake(weights, feature_table, poolings, padding_idx, padded, indices, offsets,  # type: ignore[no-untyped-def]
                  per_sample_weights, *_):
    bags, columns = _output_shape(weights, feature_table, offsets)
    dtype = weights[0].dtype if weights else torch.float32
    return indices.new_empty((bags, columns), dtype=dtype)


@torch.library.custom_op("embag::batched_embedding_bags_backward", mutates_args=())
def _backward_op(
    grad_output: Tensor,
    weights: list[Tensor],
    feature_table: list[int],
    poolings: str,
    padding_idx: list[int],
    padded: list[bool],
    indices: Tensor,
    offsets: Tensor,
    per_sample_weights: Optional[Tensor],
    sparse: bool,
) -> tuple[list[Tensor], list[Tensor]]:
    """Per table: dense ``(V_t, D_t)`` gradients and empty rows; or, with ``sparse``, the
    ``(U_t, D_t)`` coalesced values and their ``(U_t,)`` ascending rows."""
    args = _call_args(weights, feature_table, poolings, padding_idx, padded, indices, offsets,
                      per_sample_weights)
    grad = grad_output.contiguous()
    if sparse:
        counts = _embag.batched_sparse_gradient_rows(*args)
        rows = [w.new_empty((u,), dtype=torch.int64) for w, u in zip(weights, counts)]
        values = [w.new_empty((u, w.shape[1])) for w, u in zip(weights, counts)]
        _embag.batched_backward(
            *args, _capsule(grad, "grad_output"), [],
            [_capsule(r, f"grad_weight_rows[{t}]") for t, r in enumerate(rows)],
            [_capsule(v, f"grad_weight_values[{t}]") for t, v in enumerate(values)], True)
        return values, rows
    dense = [torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights]
    _embag.batched_backward(
        *args, _capsule(grad, "grad_output"),
        [_capsule(g, f"grad_weight[{t}]") for t, g in enumerate(dense)], [], [], False)
    return dense, [w.new_empty((0,), dtype=torch.int64) for w in weights]


@_backward_op.register_fake
def _backward_fake(grad_output, weights, feature_table, poolings, padding_idx, padded,  # type: ignore[no-untyped-def]
                   indices, offsets, per_sample_weights, sparse):
    if sparse:
        ctx = torch.library.get_ctx()
        counts = [ctx.new_dynamic_size() for _ in weights]
        return ([w.new_empty((u, w.shape[1])) for w, u in zip(weights, counts)],
                [w.new_empty((u,), dtype=torch.int64) for w, u in zip(weights, counts)])
    return ([torch.empty_like(w, memory_format=torch.contiguous_format) for w in weights],
            [w.new_empty((0,), dtype=torch.int64) for w in weights])


@torch.library.custom_op("embag::batched_embedding_bags_fused_backward_",
                         mutates_args=("weights", "momentum1", "momentum2"))
def _fused_backward_op(
    grad_output: Tensor,
    weights: list[Tensor],
    feature_table: list[int],
    poolings: str,
    padding_idx: list[int],
    padded: list[bool],
    indices: Tensor,
    offsets: Tensor,
    per_sample_weights: Optional[Tensor],
    optimizer: str,
    hyper: list[float],
    weight_decay_mode: str,
    step: int,
    momentum1: list[Tensor],
    momentum2: list[Tensor],
) -> None:
    """One optimizer step on every row the bags touch, in place on ``weights`` and the state.
    ``hyper`` is (learning_rate, eps, beta1, beta2, weight_decay); the state lists hold a
    placeholder where the optimizer keeps none (momentum2 but for Adam, both for SGD)."""
    lr, eps, beta1, beta2, weight_decay = hyper
    _embag.batched_fused_backward(
        *_call_args(weights, feature_table, poolings, padding_idx, padded, indices, offsets,
                    per_sample_weights, written=True),
        _capsule(grad_output.contiguous(), "grad_output"), optimizer, lr, eps, beta1, beta2,
        weight_decay, weight_decay_mode, step,
        [_capsule(m, f"momentum1[{t}]", written=True) if optimizer != "sgd" else None
         for t, m in enumerate(momentum1)],
        [_capsule(m, f"momentum2[{t}]", written=True) if optimizer == "adam" else None
         for t, m in enumerate(momentum2)],
    )


@_fused_backward_op.register_fake
def _fused_backward_fake(*args: Any) -> None:
    return None


def _per_sample_weights_gradient(grad_output: Tensor, weights: Sequence[Tensor],
                                 feature_table: Sequence[int], padding: Sequence[Optional[int]],
                                 indices: Tensor, offsets: Tensor) -> Tensor:
    """d output / d per_sample_weights[p] = <grad_output[b, block of f], weight_t[indices[p]]>
    for position p of bag b of feature f (0 for padding positions and those past the last
    offset), in PyTorch ops."""
    features = len(feature_table)
    bags = (offsets.shape[0] - 1) // features
    positions = torch.arange(indices.shape[0], device=indices.device)
    starts = offsets[:-1].to(torch.int64)
    bag = torch.bucketize(positions, starts, right=True) - 1
    inside = (positions < offsets[-1].to(torch.int64)) & (bag >= 0)
    grad = torch.zeros(indices.shape[0], dtype=grad_output.dtype, device=grad_output.device)
    column = 0
    flat = indices.to(torch.int64)
    for f, t in enumerate(feature_table):
        dim = int(weights[t].shape[1])
        mine = inside & (bag // max(bags, 1) == f)
        if padding[t] is not None:
            row = padding[t] % weights[t].shape[0] if weights[t].shape[0] else 0
            mine &= flat != row
        where = mine.nonzero().squeeze(1)
        rows = weights[t].detach().index_select(0, flat.index_select(0, where))
        out = grad_output[:, column:column + dim].index_select(0, bag.index_select(0, where) % bags)
        grad.index_copy_(0, where, (rows.float() * out.float()).sum(1).to(grad.dtype))
        column += dim
    return grad


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    (weights, feature_table, poolings, padding_idx, padded, indices, offsets, per_sample_weights,
     optimizer, hyper, weight_decay_mode, step, momentum1, momentum2, sparse) = inputs
    # The tables are kept as attributes, not saved tensors: a fused step changes them in place,
    # which would fail the saved-tensor version check of a second forward's backward.
    ctx.weights = list(weights)
    # backward returns one entry per input: a list for a list of tensors, else one value
    ctx.list_lengths = [len(x) if isinstance(x, (list, tuple)) and x and
                        isinstance(x[0], Tensor) else None for x in inputs]
    ctx.save_for_backward(indices, offsets, per_sample_weights)
    ctx.options = (list(feature_table), poolings, list(padding_idx), list(padded), optimizer,
                   list(hyper), weight_decay_mode, step, list(momentum1), list(momentum2),
                   sparse)


def _backward(ctx, grad_output: Tensor):  # type: ignore[no-untyped-def]
    indices, offsets, per_sample_weights = ctx.saved_tensors
    (feature_table, poolings, padding_idx, padded, optimizer, hyper, weight_decay_mode, step,
     momentum1, momentum2, sparse) = ctx.options
    weights = ctx.weights
    # (a list input's entry is one flag per tensor)
    want_weights = any(ctx.needs_input_grad[0])
    want_psw = per_sample_weights is not None and ctx.needs_input_grad[7]
    grads: Optional[list[Tensor]] = None
    grad_psw = None
    if want_psw:
        # (before a fused step changes the tables)
        grad_psw = _per_sample_weights_gradient(grad_output, weights, feature_table,
                                                _padding(padding_idx, padded), indices, offsets)
    if want_weights and optimizer:
        torch.ops.embag.batched_embedding_bags_fused_backward_(
            grad_output, weights, feature_table, poolings, padding_idx, padded, indices,
            offsets, per_sample_weights, optimizer, hyper, weight_decay_mode, step, momentum1,
            momentum2)
    elif want_weights:
        values, rows = torch.ops.embag.batched_embedding_bags_backward(
            grad_output, weights, feature_table, poolings, padding_idx, padded, indices,
            offsets, per_sample_weights, sparse)
        if sparse:
            grads = [torch.sparse_coo_tensor(r.unsqueeze(0), v, w.shape, is_coalesced=True,
                                             check_invariants=False)
                     for w, r, v in zip(weights, rows, values)]
        else:
            grads = list(values)
    result: list[Any] = [None if n is None else [None] * n for n in ctx.list_lengths]
    if grads is not None:
        result[0] = grads
    result[7] = grad_psw
    return tuple(result)


_forward_op.register_autograd(_backward, setup_context=_setup_context)


# ---- The module ----------------------------------------------------------------------------

def _parse_spec(spec: Any, position: int, pooling: str,
                dtype: Optional[torch.dtype]) -> TableSpec:
    where = f"embedding_specs[{position}]"
    if not isinstance(spec, TableSpec):
        if not isinstance(spec, (tuple, list)) or not 2 <= len(spec) <= 5:
            raise TypeError(f"{where} must be a TableSpec or a tuple (rows, dim[, pooling[, dtype"
                            f"[, padding_idx]]]), but got {spec!r}")
        spec = TableSpec(*spec)
    try:
        rows = operator.index(spec.rows)
        dim = operator.index(spec.dim)
    except TypeError:
        raise TypeError(f"{where}: rows and dim must be integers, but got {spec.rows!r} and "
                        f"{spec.dim!r}") from None
    if rows < 0 or dim < 1:
        raise ValueError(f"{where}: rows must be >= 0 and dim >= 1, but got rows {rows} and "
                         f"dim {dim}")
    table_pooling = pooling if spec.pooling is None else spec.pooling
    if table_pooling not in POOLINGS:
        raise ValueError(f"{where}: pooling has to be one of sum, mean or max, but got "
                         f"{table_pooling!r}")
    table_dtype = dtype if spec.dtype is None else spec.dtype
    padding_idx = spec.padding_idx
    if padding_idx is not None:
        padding_idx = operator.index(padding_idx)
        if not -rows <= padding_idx < rows:
            raise ValueError(f"{where}: padding_idx must be within [-{rows}, {rows - 1}] "
                             f"(rows), but got {padding_idx}")
    return TableSpec(rows, dim, table_pooling, table_dtype, padding_idx)


class TableBatchedEmbeddingBags(torch.nn.Module):
    """T embedding tables looked up by F features in one call, FBGEMM's TBE layout.

    ``embedding_specs``: one ``TableSpec`` (or tuple ``(rows, dim[, pooling[, dtype[,
    padding_idx]]])``) per table; ``pooling`` and ``dtype`` are the defaults of tables that give
    none. Every table has one dtype (float32, float16 or bfloat16). ``feature_table_map[f]`` is
    the table feature f reads (default: one feature per table); features may share a table.

    ``optimizer``: None trains through autograd (``.grad`` on each table's Parameter: dense, or
    sparse and coalesced with ``sparse=True``), so any ``torch.optim`` optimizer applies. Or one
    of "sgd", "adagrad", "rowwise_adagrad", "adam": backward applies it to the rows the batch
    touched, in place (FBGEMM's EXACT_SGD, EXACT_ADAGRAD, EXACT_ROWWISE_ADAGRAD, ADAM update
    rules, docs/batched.md), and no gradient is kept. Hyper-parameters and defaults are FBGEMM's:
    ``learning_rate`` 0.01, ``eps`` 1e-8, ``beta1`` 0.9, ``beta2`` 0.999, ``weight_decay`` 0 with
    ``weight_decay_mode`` "none", "l2" or "decoupled" (row-wise Adagrad; Adam's weight decay is
    its decoupled term).

    ``forward(indices, offsets, per_sample_weights=None)``: ``indices`` every feature's indices
    one after another; ``offsets`` F*B + 1 entries, feature-major (bag b of feature f is
    ``indices[offsets[f*B + b]:offsets[f*B + b + 1]]``), int32 or int64. Returns ``[B, sum of
    each feature's D]``, feature f's columns after those of features 0..f-1.
    """

    def __init__(
        self,
        embedding_specs: Sequence[Union[TableSpec, tuple]],
        feature_table_map: Optional[Sequence[int]] = None,
        *,
        pooling: str = "sum",
        dtype: torch.dtype = torch.float32,
        optimizer: Optional[str] = None,
        learning_rate: float = 0.01,
        eps: float = 1.0e-8,
        beta1: float = 0.9,
        beta2: float = 0.999,
        weight_decay: float = 0.0,
        weight_decay_mode: str = "none",
        sparse: bool = False,
        device: Optional[Union[str, torch.device]] = None,
    ) -> None:
        super().__init__()
        specs = [_parse_spec(s, i, pooling, dtype) for i, s in enumerate(embedding_specs)]
        if not specs:
            raise ValueError("embedding_specs must name at least one table")
        dtypes = {s.dtype for s in specs}
        if len(dtypes) != 1 or next(iter(dtypes)) not in TABLE_DTYPES:
            raise ValueError("every table must have one dtype, float32, float16 or bfloat16, "
                             f"but got {sorted(str(d) for d in dtypes)}")
        if feature_table_map is None:
            feature_table_map = list(range(len(specs)))
        feature_table_map = [operator.index(t) for t in feature_table_map]
        if not feature_table_map:
            raise ValueError("feature_table_map must name at least one feature")
        for f, t in enumerate(feature_table_map):
            if not 0 <= t < len(specs):
                raise ValueError(f"feature_table_map[{f}] = {t} is not a table (there are "
                                 f"{len(specs)})")
        if optimizer is not None and optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer has to be None or one of {', '.join(OPTIMIZERS)}, but "
                             f"got {optimizer!r}")
        if weight_decay_mode not in WEIGHT_DECAY_MODES:
            raise ValueError(f"weight_decay_mode has to be one of "
                             f"{', '.join(WEIGHT_DECAY_MODES)}, but got {weight_decay_mode!r}")
        if optimizer is not None and any(s.pooling == "max" for s in specs):
            raise ValueError("a fused optimizer needs sum or mean pooling on every table (max "
                             "has no batched backward, as FBGEMM's TBE has no max pooling)")
        if optimizer in ("sgd", "adagrad") and weight_decay != 0:
            raise ValueError(f"weight_decay = {weight_decay!r} with {optimizer}, which has no "
                             "weight decay (as in FBGEMM): use 0")
        if weight_decay_mode != "none" and optimizer != "rowwise_adagrad":
            raise ValueError(f"weight_decay_mode is for rowwise_adagrad only, not {optimizer}")
        hyper = {"learning_rate": learning_rate, "eps": eps, "beta1": beta1, "beta2": beta2,
                 "weight_decay": weight_decay}
        for name, value in hyper.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, but got {value!r}")
        self.embedding_specs = specs
        self.feature_table_map = feature_table_map
        self.optimizer = optimizer
        self.learning_rate = float(learning_rate)
        self.eps = float(eps)
        self.beta1 = float(beta1)
        self.beta2 = float(beta2)
        self.weight_decay = float(weight_decay)
        self.weight_decay_mode = weight_decay_mode
        self.sparse = bool(sparse)
        self._poolings = ",".join(s.pooling for s in specs)  # type: ignore[misc]
        self._padding_idx = [s.padding_idx or 0 for s in specs]
        self._padded = [s.padding_idx is not None for s in specs]
        self.weights = torch.nn.ParameterList(
            torch.nn.Parameter(torch.empty(s.rows, s.dim, dtype=s.dtype, device=device))
            for s in specs)
        for t, s in enumerate(specs):
            state = _state_shapes(optimizer, s.rows, s.dim)
            for k in (0, 1):
                self.register_buffer(f"momentum{k + 1}_{t}",
                                     torch.zeros(state[k], dtype=torch.float32, device=device))
        # Training steps taken (Adam's bias correction counts them; saved with the state).
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self._step = 0
        self._register_load_state_dict_pre_hook(_sync_step_hook, with_module=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """TorchRec's default: each table uniform in [-sqrt(1/rows), sqrt(1/rows)], state 0."""
        with torch.no_grad():
            for w in self.weights:
                bound = math.sqrt(1.0 / max(w.shape[0], 1))
                w.uniform_(-bound, bound)
            for m in self._state(1) + self._state(2):
                m.zero_()
            self.step.zero_()
            self._step = 0

    def _state(self, k: int) -> list[Tensor]:
        return [getattr(self, f"momentum{k}_{t}") for t in range(len(self.embedding_specs))]

    def forward(self, indices: Tensor, offsets: Tensor,
                per_sample_weights: Optional[Tensor] = None) -> Tensor:
        if offsets.dtype != indices.dtype:
            # FBGEMM takes either integer dtype for each; the kernels want one.
            offsets = offsets.to(indices.dtype)
        weights = list(self.weights)
        step = self._step
        if self.optimizer is not None and torch.is_grad_enabled() and \
                any(w.requires_grad for w in weights):
            # This forward will have a backward, the optimizer step (FBGEMM counts in forward).
            step = self._step = self._step + 1
            with torch.no_grad():
                self.step.fill_(step)
        return torch.ops.embag.batched_embedding_bags(
            weights, self.feature_table_map, self._poolings, self._padding_idx, self._padded,
            indices, offsets, per_sample_weights, self.optimizer or "",
            [self.learning_rate, self.eps, self.beta1, self.beta2, self.weight_decay],
            self.weight_decay_mode, step, self._state(1), self._state(2), self.sparse)

    # ---- FBGEMM's accessors --------------------------------------------------------------

    def split_embedding_weights(self) -> list[Tensor]:
        """Each table, ``(rows, dim)``: views of the Parameters' data (writing them changes the
        tables), as FBGEMM's method returns them."""
        return [w.detach() for w in self.weights]

    def split_optimizer_states(self) -> list[list[Tensor]]:
        """Per table, the optimizer's state in FBGEMM's order: Adagrad ``[momentum1 (rows,
        dim)]``, row-wise Adagrad ``[momentum1 (rows,)]``, Adam ``[momentum1, momentum2]`` (each
        (rows, dim)), SGD ``[]``. Views: writing them changes the state."""
        if self.optimizer is None:
            raise RuntimeError("split_optimizer_states: this module has no fused optimizer "
                               "(optimizer=None)")
        count = {"sgd": 0, "adagrad": 1, "rowwise_adagrad": 1, "adam": 2}[self.optimizer]
        return [[getattr(self, f"momentum{k + 1}_{t}") for k in range(count)]
                for t in range(len(self.embedding_specs))]

    def get_learning_rate(self) -> float:
        return self.learning_rate

    def set_learning_rate(self, lr: float) -> None:
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr):
            raise ValueError(f"learning_rate must be a finite number, but got {lr!r}")
        self.learning_rate = float(lr)

    def extra_repr(self) -> str:
        tables = ", ".join(f"({s.rows}, {s.dim}, {s.pooling})" for s in self.embedding_specs)
        return (f"tables=[{tables}], feature_table_map={self.feature_table_map}, "
                f"dtype={self.embedding_specs[0].dtype}, optimizer={self.optimizer!r}")


def _state_shapes(optimizer: Optional[str], rows: int, dim: int) -> tuple[tuple, tuple]:
    """momentum1's and momentum2's shapes (``(0,)``: not kept), as embag/batched.h's
    optimizer_state_shape gives them."""
    if optimizer == "adagrad":
        return (rows, dim), (0,)
    if optimizer == "rowwise_adagrad":
        return (rows,), (0,)
    if optimizer == "adam":
        return (rows, dim), (rows, dim)
    return (0,), (0,)


def _sync_step_hook(module: TableBatchedEmbeddingBags, state_dict: dict, prefix: str,
                    *args: Any) -> None:
    # load_state_dict copies into the step buffer; the Python count follows it.
    step = state_dict.get(prefix + "step")
    if isinstance(step, Tensor) and step.numel() == 1:
        module._step = int(step.item())
