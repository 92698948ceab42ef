"""embag.torch: a drop-in for ``torch.nn.functional.embedding_bag`` and ``torch.nn.EmbeddingBag``.

Importing this module needs PyTorch (``import embag`` does not). It registers three custom
operators with ``torch.library`` so that autograd, ``torch.compile(fullgraph=True)`` and
``torch.export`` see embag as one opaque op with a fake (meta) implementation:

- ``embag::embedding_bag_forward``: the pooled output (and, for mode max, the argmax backward
  needs); autograd gives the dense or sparse weight gradient and the per_sample_weights gradient.
- ``embag::embedding_bag_backward``: the gradients; the sparse one is coalesced (``U`` strictly
  ascending rows), and ``U`` is data dependent, so its fake implementation returns an unbacked
  size. By default the autograd formula hands PyTorch's layout of a sparse gradient instead (one
  uncoalesced entry per position read, as PyTorch's own backward makes it, so code and tests that
  compare sparse gradients structurally see PyTorch's); ``coalesced=True`` hands the kernel's.
- ``embag::embedding_bag_renorm_``: ``max_norm``'s in-place renormalisation of the weight, run
  under ``no_grad`` before the forward as PyTorch does. A custom operator that mutates an input
  cannot have an autograd formula, so it is separate from the forward, and it runs a whole
  forward call to renormalise (the C++ API has no renorm-only entry point): with ``max_norm``
  a call costs two forward passes.

The operators call the pooling mode ``pooling``, not ``mode``: PyTorch's functionalization of
a mutating custom operator passes a ``mode`` argument of its own (torch 2.15 fails with "got
multiple values for argument 'mode'" when compiling ``max_norm``).

A broken rule raises ``embag.EmbeddingBagError``, both a ``RuntimeError`` (as PyTorch) and a
``ValueError``.

Quantized tables: ``embedding_bag_byte_rowwise_offsets`` and ``embedding_bag_4bit_rowwise_offsets``
take the uint8 tensors ``torch.ops.quantized.embedding_bag_byte_prepack`` / ``_4bit_prepack``
return, with PyTorch's signature, and honour ``mode`` (PyTorch 2.14's CPU ops return the sum
for every mode). ``QuantizedEmbeddingBag`` is the module. ``embedding_bag`` takes a
``torch.float8_e4m3fn`` / ``float8_e5m2`` weight as an embag FP8 table (float32 output). They run
the custom operator ``embag::quantized_embedding_bag`` (inference only: it has no autograd
formula).

Table-batched lookups (every table of a model in one call, training with the optimizer fused into
backward, FBGEMM's TBE layout): ``TableBatchedEmbeddingBags`` (module ``embag._batched_torch``,
custom operators ``embag::batched_embedding_bags*``).

CUDA tensors run on PyTorch's current stream once embag has CUDA kernels; until then they raise
``embag.UnsupportedError``.
"""

from __future__ import annotations

from typing import Any, Optional

import torch
from torch import Tensor

from . import _embag
from ._arrays import _capsule, _check_bool, _check_extent, _checked_options, _options, _stream
from ._batched_torch import TableBatchedEmbeddingBags, TableSpec

__all__ = [
    "EmbeddingBag",
    "QuantizedEmbeddingBag",
    "TableBatchedEmbeddingBags",
    "TableSpec",
    "embedding_bag",
    "embedding_bag_4bit_rowwise_offsets",
    "embedding_bag_byte_rowwise_offsets",
]


def _views(*tensors: Optional[Tensor]) -> list[Optional[Tensor]]:
    # Indices, offsets, per-sample weights and gradients must be contiguous for the kernels;
    # PyTorch's op takes any layout, so a non-contiguous one is copied (a no-op otherwise).
    return [None if t is None else t.contiguous() for t in tensors]


def _table(weight: Tensor) -> Tensor:
    # The kernels take a table whose rows are contiguous and do not overlap (a row stride larger
    # than D is fine). PyTorch accepts any strides, so anything else is copied: a non-unit
    # inner stride, and rows that share memory (expand(), as_strided with row stride < D).
    if weight.dim() != 2:
        return weight
    rows, columns = weight.shape
    inner_ok = weight.stride(1) == 1 or columns <= 1
    rows_ok = rows <= 1 or weight.stride(0) >= columns
    return weight if inner_ok and rows_ok else weight.contiguous()


def _run_forward(
    weight: Tensor,
    input: Tensor,
    offsets: Optional[Tensor],
    per_sample_weights: Optional[Tensor],
    options: tuple,
) -> tuple[Tensor, Tensor]:
    """One forward call; ``options`` in the order ``_arrays._options`` takes them: mode,
    max_norm, norm_type, scale_grad_by_freq, sparse, include_last_offset, padding_idx, weight."""
    parsed = _options(*options)
    input, offsets, per_sample_weights = _views(input, offsets, per_sample_weights)
    weight_c = _capsule(weight, "weight", written=parsed.max_norm is not None)
    input_c = _capsule(input, "input")
    offsets_c = _capsule(offsets, "offsets")
    bags = _embag.num_bags(input_c, offsets_c, parsed.include_last_offset)
    # (before allocating (B, D): 2^40 bags get embag's message, not the allocator's)
    _check_extent(bags + 1, "the number of bags + 1")
    columns = weight.shape[1] if weight.dim() == 2 else 0
    max_mode = parsed.mode == "max"
    output = weight.new_empty((bags, columns))
    argmax = weight.new_empty((bags, columns) if max_mode else (0,), dtype=torch.int64)
    _embag.forward(
        weight_c,
        input_c,
        offsets_c,
        _capsule(per_sample_weights, "per_sample_weights"),
        _capsule(output, "output"),
        None,
        _capsule(argmax, "argmax") if max_mode else None,
        parsed,
        _stream(weight),
        True,
    )
    return output, argmax


@torch.library.custom_op("embag::embedding_bag_forward", mutates_args=())
def _forward_op(
    weight: Tensor,
    input: Tensor,
    offsets: Optional[Tensor],
    per_sample_weights: Optional[Tensor],
    pooling: str,
    include_last_offset: bool,
    padding_idx: Optional[int],
    scale_grad_by_freq: bool,
    sparse: bool,
    coalesced: bool,
) -> tuple[Tensor, Tensor]:
    """The pooled ``(B, D)`` output, and ``(B, D)`` int64 argmax for mode max (else ``(0,)``).

    scale_grad_by_freq and sparse only matter to backward; they are here so the forward rejects
    them with mode max, as PyTorch does. coalesced (the sparse gradient's layout) only matters to
    backward."""
    table = _table(weight)
    options = (pooling, None, 2.0, scale_grad_by_freq, sparse, include_last_offset, padding_idx,
               table)
    return _run_forward(table, input, offsets, per_sample_weights, options)


@_forward_op.register_fake
def _forward_fake(*args: object) -> tuple[Tensor, Tensor]:
    # (positional as _forward_op takes them; the fake needs only the shapes)
    weight, input, offsets, _, pooling, include_last_offset = args[:6]
    assert isinstance(weight, Tensor) and isinstance(input, Tensor)
    if input.dim() == 2 or offsets is None:
        bags = input.shape[0] if input.dim() == 2 else 0
    else:
        assert isinstance(offsets, Tensor)
        bags = offsets.shape[0] - 1 if include_last_offset else offsets.shape[0]
    columns = weight.shape[1]
    output = weight.new_empty((bags, columns))
    argmax = weight.new_empty((bags, columns) if pooling == "max" else (0,), dtype=torch.int64)
    return output, argmax


@torch.library.custom_op("embag::embedding_bag_renorm_", mutates_args=("weight",))
def _renorm_op(
    weight: Tensor,
    input: Tensor,
    offsets: Optional[Tensor],
    per_sample_weights: Optional[Tensor],
    pooling: str,
    max_norm: float,
    norm_type: float,
    include_last_offset: bool,
    padding_idx: Optional[int],
    scale_grad_by_freq: bool,
    sparse: bool,
) -> None:
    """Renormalises, in place, the rows of ``weight`` the bags reference whose norm exceeds
    ``max_norm``. It takes every argument of the forward so that the whole call is validated
    before a row changes (a call that fails changes nothing)."""
    table = _table(weight)
    options = (pooling, max_norm, norm_type, scale_grad_by_freq, sparse, include_last_offset,
               padding_idx, table)
    _run_forward(table, input, offsets, per_sample_weights, options)
    if table is not weight:
        weight.copy_(table)


@_renorm_op.register_fake
def _renorm_fake(*args: object) -> None:
    return None


@torch.library.custom_op("embag::embedding_bag_backward", mutates_args=())
def _backward_op(
    grad_output: Tensor,
    weight: Tensor,
    input: Tensor,
    offsets: Optional[Tensor],
    per_sample_weights: Optional[Tensor],
    argmax: Optional[Tensor],
    pooling: str,
    include_last_offset: bool,
    padding_idx: Optional[int],
    scale_grad_by_freq: bool,
    sparse: bool,
    per_sample_weights_grad: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Returns ``(grad_weight, rows, grad_per_sample_weights)``: dense ``(V, D)`` and empty
    ``rows``; or, with ``sparse``, the ``(U, D)`` coalesced values and their ``(U,)`` rows.
    ``grad_per_sample_weights`` is empty unless ``per_sample_weights_grad``."""
    weight = _table(weight)
    grad_output, input, offsets, per_sample_weights, argmax = _views(
        grad_output, input, offsets, per_sample_weights, argmax
    )
    options = _options(pooling, None, 2.0, scale_grad_by_freq, sparse, include_last_offset,
                       padding_idx, weight)
    capsules = [
        _capsule(grad_output, "grad_output"),
        _capsule(weight, "weight"),
        _capsule(input, "input"),
        _capsule(offsets, "offsets"),
        _capsule(per_sample_weights, "per_sample_weights"),
        _capsule(argmax, "argmax"),
    ]
    stream = _stream(weight)
    count = _embag.sparse_gradient_rows(*capsules, options, stream, True) if sparse else None
    grad_weight, rows, grad_psw = _backward_outputs(weight, per_sample_weights, sparse,
                                                    per_sample_weights_grad, count)
    want_psw = grad_psw.numel() > 0
    _embag.backward(
        *capsules,
        None if sparse else _capsule(grad_weight, "grad_weight"),
        _capsule(rows, "grad_weight_rows") if sparse else None,
        _capsule(grad_weight, "grad_weight_values") if sparse else None,
        _capsule(grad_psw, "grad_per_sample_weights") if want_psw else None,
        options,
        stream,
        True,
    )
    return grad_weight, rows, grad_psw


def _backward_outputs(
    weight: Tensor,
    per_sample_weights: Optional[Tensor],
    sparse: bool,
    per_sample_weights_grad: bool,
    count: object,
) -> tuple[Tensor, Tensor, Tensor]:
    """The backward op's outputs, allocated: for the op itself (``count`` the sparse row count)
    and for its fake (``count`` an unbacked size)."""
    if sparse:
        rows = weight.new_empty((count,), dtype=torch.int64)
        grad_weight = weight.new_empty((count, weight.shape[1]))
    else:
        rows = weight.new_empty((0,), dtype=torch.int64)
        grad_weight = weight.new_empty(weight.shape)
    want_psw = per_sample_weights is not None and per_sample_weights_grad
    grad_psw = weight.new_empty(per_sample_weights.shape if want_psw else (0,))
    return grad_weight, rows, grad_psw


@_backward_op.register_fake
def _backward_fake(*args: object) -> tuple[Tensor, Tensor, Tensor]:
    weight, per_sample_weights, sparse, per_sample_weights_grad = (args[1], args[4], args[10],
                                                                   args[11])
    assert isinstance(weight, Tensor)
    # U, the number of distinct rows the bags reference, is known only from the data.
    count = torch.library.get_ctx().new_dynamic_size() if sparse else None
    return _backward_outputs(weight, per_sample_weights, bool(sparse),  # type: ignore[arg-type]
                             bool(per_sample_weights_grad), count)


def _uncoalesced_gradient(
    grad_output: Tensor,
    weight: Tensor,
    input: Tensor,
    offsets: Optional[Tensor],
    per_sample_weights: Optional[Tensor],
    mode: str,
    include_last_offset: bool,
    padding_idx: Optional[int],
) -> Tensor:
    """The sparse weight gradient in PyTorch's layout: one entry per position the bags read, in
    input order, padding positions left out, not coalesced. Each entry is its bag's gradient row,
    divided by the bag's (non-padding) size for mean and times the position's weight for
    per_sample_weights, computed in the weight's dtype as PyTorch does (pytorch's
    _embedding_bag_sparse_backward), so ``to_dense()`` and
    torch's structural comparison of sparse tensors give what PyTorch's backward gives."""
    flat = input.reshape(-1).to(torch.int64)
    bags = grad_output.shape[0]
    positions = torch.arange(flat.numel(), device=flat.device)
    if input.dim() == 2:
        bag_of = positions // max(input.shape[1], 1)
        read = torch.ones_like(flat, dtype=torch.bool)
    else:
        assert offsets is not None
        starts = offsets.to(torch.int64)
        end = starts[-1] if include_last_offset and starts.numel() > 0 else flat.numel()
        starts = starts[:bags]
        # A position belongs to the last bag that starts at or before it (empty bags repeat a
        # start); positions past the last offset (include_last_offset) belong to none.
        bag_of = torch.bucketize(positions, starts, right=True) - 1
        read = (positions < end) & (bag_of >= 0)
    if padding_idx is not None:
        row = padding_idx + weight.shape[0] if padding_idx < 0 else padding_idx
        read &= flat != row
    rows, bag_of = flat[read], bag_of[read]
    values = grad_output.index_select(0, bag_of)
    if mode == "mean":
        # times 1/size in the weight's dtype, as PyTorch (not a division: the bits differ)
        inverse = 1 / torch.bincount(bag_of, minlength=bags).to(values.dtype)
        values.mul_(inverse.index_select(0, bag_of).unsqueeze(1))
    if per_sample_weights is not None:
        values.mul_(per_sample_weights.reshape(-1)[read].unsqueeze(1))
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, weight.shape, check_invariants=False)


def _setup_context(ctx, inputs, output) -> None:  # type: ignore[no-untyped-def]
    weight, input, offsets, per_sample_weights = inputs[:4]
    _, argmax = output
    ctx.save_for_backward(weight, input, offsets, per_sample_weights, argmax)
    # (pooling, include_last_offset, padding_idx, scale_grad_by_freq, sparse, coalesced)
    ctx.options = tuple(inputs[4:])


def _backward(ctx, grad_output: Tensor, _grad_argmax: Optional[Tensor]):  # type: ignore[no-untyped-def]
    weight, input, offsets, per_sample_weights, argmax = ctx.saved_tensors
    mode, include_last_offset, padding_idx, scale_grad_by_freq, sparse, coalesced = ctx.options
    want_weight = ctx.needs_input_grad[0]
    want_psw = per_sample_weights is not None and ctx.needs_input_grad[3]
    none = (None,) * 6  # the options' gradients
    if not (want_weight or want_psw):
        return (None,) * 4 + none
    # PyTorch's layout unless asked for embag's coalesced one; PyTorch has no sparse layout for
    # scale_grad_by_freq (it refuses the pair), so that gets embag's.
    pytorch_layout = sparse and want_weight and not coalesced and not scale_grad_by_freq
    grad_weight, rows, grad_psw = (None, None, None)
    if want_psw or not pytorch_layout:
        grad_weight, rows, grad_psw = torch.ops.embag.embedding_bag_backward(
            grad_output,
            weight,
            input,
            offsets,
            per_sample_weights,
            argmax if mode == "max" else None,
            mode,
            include_last_offset,
            padding_idx,
            scale_grad_by_freq,
            sparse,
            want_psw,
        )
    if pytorch_layout:
        grad_weight = _uncoalesced_gradient(grad_output, weight, input, offsets,
                                            per_sample_weights, mode, include_last_offset,
                                            padding_idx)
    elif sparse and want_weight:
        # Coalesced by construction (strictly ascending unique rows), so say so: PyTorch's
        # optimizers then skip coalescing it again.
        grad_weight = torch.sparse_coo_tensor(
            rows.unsqueeze(0), grad_weight, weight.shape, is_coalesced=True, check_invariants=False
        )
    return (grad_weight if want_weight else None, None, None,
            grad_psw if want_psw else None) + none


_forward_op.register_autograd(_backward, setup_context=_setup_context)


def embedding_bag(
    input: Tensor,
    weight: Tensor,
    offsets: Optional[Tensor] = None,
    max_norm: Optional[float] = None,
    norm_type: float = 2,
    scale_grad_by_freq: bool = False,
    mode: str = "mean",
    sparse: bool = False,
    per_sample_weights: Optional[Tensor] = None,
    include_last_offset: bool = False,
    padding_idx: Optional[int] = None,
    *,
    coalesced: bool = False,
) -> Tensor:
    """``torch.nn.functional.embedding_bag``, computed by embag (same arguments and defaults).

    ``coalesced`` (embag's, keyword only) chooses the ``sparse=True`` weight gradient's layout:
    False (the default) gives PyTorch's (one uncoalesced entry per position read); True gives
    embag's coalesced one (one entry per distinct row, ascending, flagged coalesced), which
    optimizers need not coalesce again.

    The differences left are deliberate (docs/semantics.md, "Deliberate differences from
    PyTorch"): with include_last_offset the indices past the last offset are not read,
    validated or renormalised; float16/bfloat16 accumulate in float32; scale_grad_by_freq counts
    each row's own uses. A broken rule raises ``embag.EmbeddingBagError`` with PyTorch's message:
    a ``RuntimeError`` (what PyTorch raises, what its callers catch) and a ``ValueError``; its
    ``NotImplementedError`` subclass for per_sample_weights with mode mean or max, as PyTorch.
    """
    from ._quantized import float8_format  # noqa: PLC0415

    if float8_format(weight) is not None:
        return _float8_embedding_bag(
            input, weight, offsets, max_norm, mode, per_sample_weights, include_last_offset,
            padding_idx,
        )
    # Options checked here, with their names, before torch's schema sees them (which refuses
    # padding_idx=2**63 in its own words, naming no argument). Eagerly only: under
    # torch.compile the schema checks the traced values.
    options = (mode, max_norm, norm_type, scale_grad_by_freq, sparse, include_last_offset,
               padding_idx, weight)
    if not torch.compiler.is_compiling():
        _checked_options(*options)
        _check_bool(coalesced, "coalesced")
    if max_norm is not None:
        # As PyTorch: renormalise the referenced rows in place, outside autograd.
        with torch.no_grad():
            torch.ops.embag.embedding_bag_renorm_(
                weight,
                input,
                offsets,
                per_sample_weights,
                mode,
                float(max_norm),
                float(norm_type),
                include_last_offset,
                padding_idx,
                scale_grad_by_freq,
                sparse,
            )
    output, _ = torch.ops.embag.embedding_bag_forward(
        weight,
        input,
        offsets,
        per_sample_weights,
        mode,
        include_last_offset,
        padding_idx,
        scale_grad_by_freq,
        sparse,
        coalesced,
    )
    return output


class EmbeddingBag(torch.nn.EmbeddingBag):
    """``torch.nn.EmbeddingBag`` whose forward runs embag.

    A subclass, so the constructor, attributes (``weight``, ``mode``, ``padding_idx``, ...),
    ``from_pretrained``, ``reset_parameters``, ``extra_repr``, the state_dict keys and
    ``isinstance(m, torch.nn.EmbeddingBag)`` are PyTorch's own: swapping one for the other in a
    model changes nothing else, and a checkpoint loads into either. The one extra keyword,
    ``coalesced``, is ``embedding_bag``'s (the sparse gradient's layout).
    """

    def __init__(self, *args: Any, coalesced: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.coalesced = _check_bool(coalesced, "coalesced")

    def forward(
        self,
        input: Tensor,
        offsets: Optional[Tensor] = None,
        per_sample_weights: Optional[Tensor] = None,
    ) -> Tensor:
        return embedding_bag(
            input,
            self.weight,
            offsets,
            self.max_norm,
            self.norm_type,
            self.scale_grad_by_freq,
            self.mode,
            self.sparse,
            per_sample_weights,
            self.include_last_offset,
            self.padding_idx,
            # (a module pickled before coalesced existed has no such attribute)
            coalesced=getattr(self, "coalesced", False),
        )


# ---- Quantized tables ----------------------------------------------------------------------

_MODES = {0: "sum", 1: "mean", 2: "max"}


@torch.library.custom_op("embag::quantized_embedding_bag", mutates_args=())
def _quantized_op(
    data: Tensor,
    format: str,
    dim: int,
    input: Tensor,
    offsets: Optional[Tensor],
    per_sample_weights: Optional[Tensor],
    pooling: str,
    include_last_offset: bool,
    padding_idx: Optional[int],
) -> Tensor:
    """The pooled ``(B, D)`` float32 output of a quantized table (``embag.QuantizedTable``)."""
    from ._quantized import QuantizedTable  # noqa: PLC0415
    from ._arrays import embedding_bag as array_embedding_bag  # noqa: PLC0415

    input, offsets, per_sample_weights = _views(input, offsets, per_sample_weights)
    return array_embedding_bag(
        QuantizedTable(data, format, dim),
        input,
        offsets,
        mode=pooling,
        per_sample_weights=per_sample_weights,
        padding_idx=padding_idx,
        include_last_offset=include_last_offset,
    )


@_quantized_op.register_fake
def _quantized_fake(
    data: Tensor,
    format: str,
    dim: int,
    input: Tensor,
    offsets: Optional[Tensor],
    per_sample_weights: Optional[Tensor],
    pooling: str,
    include_last_offset: bool,
    padding_idx: Optional[int],
) -> Tensor:
    if input.dim() == 2 or offsets is None:
        bags = input.shape[0] if input.dim() == 2 else 0
    else:
        bags = offsets.shape[0] - 1 if include_last_offset else offsets.shape[0]
    return data.new_empty((bags, dim), dtype=torch.float32)


def _float8_embedding_bag(
    input: Tensor,
    weight: Tensor,
    offsets: Optional[Tensor],
    max_norm: Optional[float],
    mode: str,
    per_sample_weights: Optional[Tensor],
    include_last_offset: bool,
    padding_idx: Optional[int],
) -> Tensor:
    """``embedding_bag`` on a torch float8 table: its bytes pooled as an embag FP8 table
    (float32 output, inference only: the custom op has no autograd formula)."""
    from ._quantized import float8_table  # noqa: PLC0415

    if max_norm is not None:
        raise ValueError("max_norm is not supported with a float8 table (it is read-only here)")
    table = float8_table(weight)
    return _quantized_op(
        table.data,
        table.format,
        table.dim,
        input,
        offsets,
        per_sample_weights,
        mode,
        include_last_offset,
        padding_idx,
    )


def _rowwise_offsets(
    format: str,
    qparam_bytes: int,
    codes_per_byte: int,
    weight: Tensor,
    indices: Tensor,
    offsets: Optional[Tensor],
    mode: int,
    pruned_weights: bool,
    per_sample_weights: Optional[Tensor],
    compressed_indices_mapping: Optional[Tensor],
    include_last_offset: bool,
) -> Tensor:
    if pruned_weights or compressed_indices_mapping is not None:
        raise ValueError(
            "embag does not take pruned tables (pruned_weights=True, "
            "compressed_indices_mapping): pass the unpruned prepacked table"
        )
    if mode not in _MODES:
        raise ValueError(f"mode has to be 0 (sum), 1 (mean) or 2 (max), but got {mode!r}")
    if weight.dim() != 2 or weight.dtype != torch.uint8:
        raise ValueError(
            f"weight must be the 2-D uint8 tensor of torch.ops.quantized's prepack op, but got "
            f"{weight.dtype} of shape {tuple(weight.shape)}"
        )
    dim = max(int(weight.shape[1]) - qparam_bytes, 0) * codes_per_byte
    if offsets is not None and indices.dim() == 1 and offsets.dtype != indices.dtype:
        # PyTorch takes int32 offsets with int64 indices (and back); embag wants one dtype.
        offsets = offsets.to(indices.dtype)
    if per_sample_weights is not None and per_sample_weights.dtype != torch.float32:
        per_sample_weights = per_sample_weights.float()
    return _quantized_op(
        weight,
        format,
        dim,
        indices,
        offsets,
        per_sample_weights,
        _MODES[mode],
        include_last_offset,
        None,
    )


def embedding_bag_byte_rowwise_offsets(
    weight: Tensor,
    indices: Tensor,
    offsets: Optional[Tensor] = None,
    scale_grad_by_freq: bool = False,
    mode: int = 0,
    pruned_weights: bool = False,
    per_sample_weights: Optional[Tensor] = None,
    compressed_indices_mapping: Optional[Tensor] = None,
    include_last_offset: bool = False,
) -> Tensor:
    """``torch.ops.quantized.embedding_bag_byte_rowwise_offsets`` on embag.

    ``weight`` is ``embedding_bag_byte_prepack``'s output ``(V, D + 8)``; ``mode`` 0 / 1 / 2 is
    sum / mean / max, each computed as named (PyTorch's CPU op sums for all three).
    ``scale_grad_by_freq`` has no effect on a forward and is ignored, as PyTorch does."""
    del scale_grad_by_freq
    return _rowwise_offsets(
        "int8",
        8,
        1,
        weight,
        indices,
        offsets,
        mode,
        pruned_weights,
        per_sample_weights,
        compressed_indices_mapping,
        include_last_offset,
    )


def embedding_bag_4bit_rowwise_offsets(
    weight: Tensor,
    indices: Tensor,
    offsets: Optional[Tensor] = None,
    scale_grad_by_freq: bool = False,
    mode: int = 0,
    pruned_weights: bool = False,
    per_sample_weights: Optional[Tensor] = None,
    compressed_indices_mapping: Optional[Tensor] = None,
    include_last_offset: bool = False,
) -> Tensor:
    """``torch.ops.quantized.embedding_bag_4bit_rowwise_offsets`` on embag: ``weight`` is
    ``embedding_bag_4bit_prepack``'s output ``(V, D / 2 + 4)``; ``mode`` as for the byte op."""
    del scale_grad_by_freq
    return _rowwise_offsets(
        "int4",
        4,
        2,
        weight,
        indices,
        offsets,
        mode,
        pruned_weights,
        per_sample_weights,
        compressed_indices_mapping,
        include_last_offset,
    )


class QuantizedEmbeddingBag(torch.nn.Module):
    """An inference ``EmbeddingBag`` over a quantized table (the role of
    ``torch.ao.nn.quantized.EmbeddingBag``): the table is a uint8 buffer in one of embag's
    formats, ``mode`` is honoured, the output is float32. Build it with ``from_float``."""

    def __init__(
        self,
        data: Tensor,
        format: str,
        dim: int,
        mode: str = "mean",
        include_last_offset: bool = False,
        padding_idx: Optional[int] = None,
    ) -> None:
        super().__init__()
        self.register_buffer("data", data)
        self.format = format
        self.dim = int(dim)
        self.mode = mode
        self.include_last_offset = include_last_offset
        self.padding_idx = padding_idx

    @classmethod
    def from_float(cls, module: torch.nn.EmbeddingBag, format: str = "int8") -> "QuantizedEmbeddingBag":
        """Quantizes an ``nn.EmbeddingBag``'s table (``embag.quantize``) and keeps its options.
        A module with ``max_norm`` is refused: a quantized table cannot be renormalised."""
        from ._quantized import quantize  # noqa: PLC0415

        if module.max_norm is not None:
            raise ValueError("max_norm is not supported with a quantized table")
        table = quantize(module.weight.detach(), format)
        return cls(
            table.data,
            format,
            table.dim,
            module.mode,
            module.include_last_offset,
            module.padding_idx,
        )

    def forward(
        self,
        input: Tensor,
        offsets: Optional[Tensor] = None,
        per_sample_weights: Optional[Tensor] = None,
    ) -> Tensor:
        return _quantized_op(
            self.data,
            self.format,
            self.dim,
            input,
            offsets,
            per_sample_weights,
            self.mode,
            self.include_last_offset,
            self.padding_idx,
        )

    def extra_repr(self) -> str:
        return f"format={self.format!r}, rows={self.data.shape[0]}, dim={self.dim}, mode={self.mode!r}"
