"""embag's array API: embedding_bag forward and backward on any array that speaks DLPack.

Inputs are viewed through DLPack without copying; outputs are allocated with the weight's own
array library (NumPy in, NumPy out; torch in, torch out) and written by the kernels through
DLPack as well. Neither NumPy nor PyTorch is imported here unless the caller's arrays already
are of that kind, so ``import embag`` needs neither.

Errors keep the C++ runtime's messages: a broken rule raises ``embag.EmbeddingBagError``, which
is both a ``RuntimeError`` (what PyTorch raises for these rules, so code written against PyTorch
catches it) and a ``ValueError`` (embag's contract before it); for per_sample_weights with mode
mean or max it is also a ``NotImplementedError``, as in PyTorch. A well-formed call this build or
machine cannot run (a CUDA tensor before CUDA kernels exist, a forced ISA the CPU lacks) raises
``embag.UnsupportedError``, a ``RuntimeError``.
"""

from __future__ import annotations

import numbers
import operator
import sys
from typing import Any, NamedTuple, Optional

from . import _embag

# A broken rule (see the module's docstring).
_RuleError = _embag.EmbeddingBagError

# The largest extent embag's kernels address (int32), and the most bags a call can have.
_MAX_EXTENT = 2**31 - 1

__all__ = [
    "Gradients",
    "ForwardResult",
    "embedding_bag",
    "embedding_bag_backward",
]


class ForwardResult(NamedTuple):
    """What ``embedding_bag(..., return_aux=True)`` returns."""

    output: Any
    """``(B, D)`` in the weight's dtype."""
    bag_count: Any
    """``(B,)`` int64: the valid (non-padding) positions of each bag."""
    argmax: Any
    """``(B, D)`` int64 for mode ``"max"`` (the winning row, -1 for an empty bag), else None;
    ``embedding_bag_backward`` needs it for mode max."""


class Gradients(NamedTuple):
    """What ``embedding_bag_backward`` returns."""

    grad_weight: Any
    """Dense: ``(V, D)``, zeros where untouched. Sparse: the ``(U, D)`` value rows."""
    grad_weight_rows: Any
    """Sparse only: ``(U,)`` int64, strictly ascending row ids (padding row absent); else None."""
    grad_per_sample_weights: Any
    """The input's shape, when per_sample_weights were given; else None."""


def _torch_module() -> Any:
    # Only ever the already-imported module: an array can be a torch.Tensor only if torch is
    # loaded, and importing it here would cost a second to every NumPy user.
    return sys.modules.get("torch")


def _is_torch(array: Any) -> bool:
    torch = _torch_module()
    return torch is not None and isinstance(array, torch.Tensor)


def _torch_view(array: Any, name: str, written: bool) -> Any:
    """The tensor embag should view for a torch ``array``: checked, with lazy bits resolved."""
    torch = _torch_module()
    if array.layout != torch.strided:
        raise TypeError(
            f"{name} must be a dense (strided) tensor, but got a {array.layout} tensor; "
            f"pass {name}.to_dense()"
        )
    if array.device.type == "meta":
        raise _embag.UnsupportedError(
            f"{name} is on the meta device, which holds no data; embag computes on cpu (and "
            f"cuda) tensors"
        )
    # DLPack has no negation or conjugation bit: to_dlpack hands out the stored values, so a
    # lazily negated view (x.conj().imag, x._neg_view()) would be read with the wrong sign.
    # Inputs are resolved (a copy); an output cannot be, as the copy would get the results.
    if array.is_neg() or array.is_conj():
        if written:
            raise _RuleError(
                f"{name} is a lazily negated or conjugated view (is_neg() or is_conj() is "
                f"True), which embag cannot write through; pass a tensor without those bits "
                f"(e.g. {name}.resolve_neg()) and copy the result back"
            )
        array = array.resolve_neg().resolve_conj()
    return array


def _capsule(array: Any, name: str, written: bool = False) -> Any:
    """A DLPack capsule viewing ``array``; the caller keeps it for the whole call. ``written``:
    the call writes the array (the C++ side refuses read-only arrays then)."""
    if array is None:
        return None
    if _is_torch(array):
        array = _torch_view(array, name, written)
        # detach(): torch refuses to export a tensor that requires grad; the view shares memory.
        # to_dlpack, not __dlpack__(): the kernels are issued on torch's current stream (see
        # _stream), so no synchronisation with the default stream is wanted.
        from torch.utils.dlpack import to_dlpack

        try:
            return to_dlpack(array.detach())
        except (RuntimeError, BufferError) as error:
            raise TypeError(f"{name} cannot be exported through DLPack: {error}") from error
    export = getattr(array, "__dlpack__", None)
    if export is None:
        raise TypeError(
            f"{name} must be an array that supports DLPack (NumPy, PyTorch, JAX, ...), "
            f"but got {type(array).__name__}"
        )
    try:
        # The versioned protocol (DLPack 1.0) carries a read-only flag, so read-only arrays
        # (np.load(..., mmap_mode="r"), a frozen table) can be read; unversioned export refuses
        # them. Producers older than DLPack 1.0 do not take max_version.
        try:
            return export(max_version=(1, 0))
        except TypeError:
            return export()
    except BufferError as error:
        raise TypeError(f"{name} cannot be exported through DLPack: {error}") from error


def _bump_versions(*arrays: Any) -> None:
    """Tells autograd that embag wrote these torch tensors (as an in-place op would), so a
    backward that saved their old values raises instead of silently using the new ones."""
    torch = _torch_module()
    if torch is None:
        return
    for array in arrays:
        if isinstance(array, torch.Tensor) and not array.is_inference():
            torch.autograd.graph.increment_version(array)


def _check_bool(value: Any, name: str) -> bool:
    # bools are bools (NumPy's too): "no" or 1 is a mistake, not a truth value.
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    raise TypeError(f"{name} must be a bool, but got {value!r} ({type(value).__name__})")


def _check_real(value: Any, name: str) -> float:
    if isinstance(value, numbers.Real) and not isinstance(value, bool) and not _is_bool(value):
        return float(value)
    raise TypeError(f"{name} must be a real number, but got {value!r} ({type(value).__name__})")


def _is_bool(value: Any) -> bool:
    return type(value).__name__ == "bool_"


def _check_mode(mode: Any) -> str:
    if not isinstance(mode, str):
        raise TypeError(
            f"mode must be a str, one of 'sum', 'mean' or 'max', but got {mode!r} "
            f"({type(mode).__name__})"
        )
    if mode not in ("sum", "mean", "max"):
        raise _RuleError(f"mode has to be one of sum, mean or max, but got {mode!r}")
    return mode


def _check_padding_idx(padding_idx: Any, weight: Any) -> Optional[int]:
    if padding_idx is None:
        return None
    if isinstance(padding_idx, bool) or _is_bool(padding_idx):
        raise TypeError(f"padding_idx must be an int or None, but got {padding_idx!r}")
    try:
        value = operator.index(padding_idx)
    except TypeError:
        raise TypeError(
            f"padding_idx must be an int or None, but got {padding_idx!r} "
            f"({type(padding_idx).__name__})"
        ) from None
    if not -(2**63) <= value < 2**63:
        shape = tuple(getattr(weight, "shape", ()))
        if len(shape) == 2:
            rows = int(shape[0])
            raise _RuleError(
                f"padding_idx must be within the number of embeddings, -{rows} through "
                f"{rows - 1}, but got {value}"
            )
        raise _RuleError(f"padding_idx must fit int64, but got {value}")
    return value


def _options(*options: Any) -> Any:
    """``_embag.Options`` from ``_checked_options``' arguments, every one checked first with its
    name (nanobind's message for a wrong type names no argument)."""
    return _embag.make_options(*_checked_options(*options))


def _checked_options(
    mode: Any,
    max_norm: Any,
    norm_type: Any,
    scale_grad_by_freq: Any,
    sparse: Any,
    include_last_offset: Any,
    padding_idx: Any,
    weight: Any,
) -> tuple:
    """The options type- and range-checked (pure Python, so torch.compile can trace it)."""
    return (
        _check_mode(mode),
        None if max_norm is None else _check_real(max_norm, "max_norm"),
        _check_real(norm_type, "norm_type"),
        _check_bool(scale_grad_by_freq, "scale_grad_by_freq"),
        _check_bool(sparse, "sparse"),
        _check_bool(include_last_offset, "include_last_offset"),
        _check_padding_idx(padding_idx, weight),
    )


def _check_extent(value: int, what: str) -> None:
    """An extent checked before anything is allocated for it, in the runtime's words."""
    if value > _MAX_EXTENT:
        raise _RuleError(f"{what} is {value}, but embag supports at most {_MAX_EXTENT}")


def _stream(array: Any) -> int:
    """The queue a call on ``array`` runs on: torch's current CUDA stream, else the default."""
    if _is_torch(array) and array.device.type == "cuda":
        torch = _torch_module()
        return int(torch.cuda.current_stream(array.device).cuda_stream)
    return 0


def _empty(like: Any, shape: tuple[int, ...], index: bool = False) -> Any:
    """An uninitialised array of ``like``'s library and device: ``like``'s dtype, or int64."""
    if _is_torch(like):
        torch = _torch_module()
        return torch.empty(shape, dtype=torch.int64 if index else like.dtype, device=like.device)
    import numpy as np  # noqa: PLC0415 (only arrays other than torch tensors get here)

    if isinstance(like, np.ndarray):
        return np.empty(shape, dtype=np.int64 if index else like.dtype)
    # Outputs of other libraries are allocated with NumPy on the host; an array on a device
    # would get them in the wrong place (and a confusing "output is on cpu" error).
    device = getattr(like, "__dlpack_device__", None)
    if device is not None and int(device()[0]) not in (1, 3):  # kDLCPU, kDLCUDAHost
        raise _embag.UnsupportedError(
            f"embag allocates the outputs of a {type(like).__name__} with NumPy on the host, but "
            f"the weight is on device {tuple(device())} (DLPack device type, id); pass out= (and "
            f"the other outputs) on that device, or use torch tensors"
        )
    # Other libraries (JAX, ...): their arrays may be immutable, so the kernels write a NumPy
    # buffer that the library then adopts through its Array API namespace.
    buffer = np.empty(shape, dtype=np.int64 if index else np.dtype(str(like.dtype)))
    namespace = getattr(like, "__array_namespace__", None)
    if namespace is None:
        return buffer
    return _Adopt(buffer, namespace())


class _Adopt:
    """A NumPy buffer the kernels write, handed to a foreign Array API library afterwards."""

    def __init__(self, buffer: Any, namespace: Any) -> None:
        self.buffer = buffer
        self.namespace = namespace

    def __dlpack__(self, *args: Any, **kwargs: Any) -> Any:
        return self.buffer.__dlpack__(*args, **kwargs)

    def finish(self) -> Any:
        return self.namespace.from_dlpack(self.buffer)


def _finish(array: Any) -> Any:
    return array.finish() if isinstance(array, _Adopt) else array


def _columns(weight: Any) -> int:
    shape = tuple(weight.shape)
    # A weight that is not 2-D is rejected by the runtime with PyTorch's message; any width will
    # do for the output until then.
    return int(shape[1]) if len(shape) == 2 else 0


def embedding_bag(
    weight: Any,
    input: Any,
    offsets: Any = None,
    *,
    mode: str = "mean",
    per_sample_weights: Any = None,
    padding_idx: Optional[int] = None,
    max_norm: Optional[float] = None,
    norm_type: float = 2.0,
    include_last_offset: bool = False,
    out: Any = None,
    return_aux: bool = False,
    check_indices: bool = True,
) -> Any:
    """``torch.nn.functional.embedding_bag``'s forward on DLPack arrays (weight first).

    Args:
        weight: ``(V, D)`` float16/bfloat16/float32/float64 table. With ``max_norm`` the rows the
            bags reference are renormalised in place (as PyTorch does), so it must be writable.
            Or an ``embag.QuantizedTable`` (``embag.quantize``), or a torch
            ``float8_e4m3fn`` / ``float8_e5m2`` tensor (read as its bytes): the output and
            per_sample_weights are then float32, and max_norm is refused.
        input: ``(N,)`` with ``offsets``, or ``(B, L)`` without; int32 or int64.
        offsets: ``(B,)`` (or ``(B+1,)`` with ``include_last_offset``) int32/int64 bag starts.
        mode: ``"sum"``, ``"mean"`` (the default, as in PyTorch) or ``"max"``.
        per_sample_weights: the input's shape and the weight's dtype; mode ``"sum"`` only.
        padding_idx: a row in ``[-V, V-1]`` whose positions every mode skips.
        max_norm, norm_type: renormalise referenced rows whose p-norm exceeds ``max_norm``.
        include_last_offset: ``offsets`` has B+1 entries; the last one ends the last bag.
        out: optional ``(B, D)`` array of the weight's dtype to write into (and return).
        return_aux: also return ``bag_count`` and, for mode max, ``argmax`` (a ForwardResult).
        check_indices: on a GPU, False skips the index check (the caller guarantees valid
            indices; a bad one then reads out of bounds). CPU calls always check.

    Returns:
        The ``(B, D)`` output, in the weight's library; a ForwardResult with ``return_aux``.

    Raises:
        embag.EmbeddingBagError: the call breaks a rule (PyTorch's message); nothing was written.
            A RuntimeError and a ValueError (and a NotImplementedError for per_sample_weights
            with mode mean or max).
        TypeError: an argument is not a DLPack array.
        embag.UnsupportedError: well-formed, but this build or machine cannot run it.
    """
    from ._quantized import QuantizedTable, float8_table  # noqa: PLC0415

    weight = float8_table(weight) or weight
    if isinstance(weight, QuantizedTable):
        return _embedding_bag_quantized(
            weight,
            input,
            offsets,
            mode=mode,
            per_sample_weights=per_sample_weights,
            padding_idx=padding_idx,
            max_norm=max_norm,
            norm_type=norm_type,
            include_last_offset=include_last_offset,
            out=out,
            return_aux=return_aux,
        )
    options = _options(
        mode, max_norm, norm_type, False, False, include_last_offset, padding_idx, weight
    )
    return_aux = _check_bool(return_aux, "return_aux")
    check_indices = _check_bool(check_indices, "check_indices")
    weight_c = _capsule(weight, "weight", written=max_norm is not None)
    input_c = _capsule(input, "input")
    offsets_c = _capsule(offsets, "offsets")
    psw_c = _capsule(per_sample_weights, "per_sample_weights")
    bags = _embag.num_bags(input_c, offsets_c, options.include_last_offset)
    _check_extent(bags + 1, "the number of bags + 1")
    columns = _columns(weight)
    output = out if out is not None else _empty(weight, (bags, columns))
    bag_count = _empty(weight, (bags,), index=True) if return_aux else None
    argmax = _empty(weight, (bags, columns), index=True) if return_aux and mode == "max" else None
    _embag.forward(
        weight_c,
        input_c,
        offsets_c,
        psw_c,
        _capsule(output, "out", written=True),
        _capsule(bag_count, "bag_count", written=True),
        _capsule(argmax, "argmax", written=True),
        options,
        _stream(weight),
        check_indices,
    )
    # (the outputs embag allocated are new; the caller's out and table are what autograd saw)
    _bump_versions(out, weight if max_norm is not None else None)
    if not return_aux:
        return _finish(output)
    return ForwardResult(_finish(output), _finish(bag_count), _finish(argmax))


def _embedding_bag_quantized(
    table: Any,
    input: Any,
    offsets: Any,
    *,
    mode: str,
    per_sample_weights: Any,
    padding_idx: Optional[int],
    max_norm: Optional[float],
    norm_type: float,
    include_last_offset: bool,
    out: Any,
    return_aux: bool,
) -> Any:
    """embedding_bag on a QuantizedTable: float32 output in the table's array library."""
    options = _options(
        mode, max_norm, norm_type, False, False, include_last_offset, padding_idx, table
    )
    return_aux = _check_bool(return_aux, "return_aux")
    data = table.data
    data_c = _capsule(data, "weight")
    input_c = _capsule(input, "input")
    offsets_c = _capsule(offsets, "offsets")
    psw_c = _capsule(per_sample_weights, "per_sample_weights")
    bags = _embag.num_bags(input_c, offsets_c, options.include_last_offset)
    _check_extent(bags + 1, "the number of bags + 1")
    from ._quantized import _float_empty  # noqa: PLC0415

    output = out if out is not None else _float_empty(data, (bags, table.dim), "float32")
    bag_count = _empty(data, (bags,), index=True) if return_aux else None
    argmax = _empty(data, (bags, table.dim), index=True) if return_aux and mode == "max" else None
    _embag.forward_quantized(
        data_c,
        table.format,
        table.dim,
        input_c,
        offsets_c,
        psw_c,
        _capsule(output, "out", written=True),
        _capsule(bag_count, "bag_count", written=True),
        _capsule(argmax, "argmax", written=True),
        options,
    )
    _bump_versions(out)
    if not return_aux:
        return output
    return ForwardResult(output, bag_count, argmax)


def embedding_bag_backward(
    grad_output: Any,
    weight: Any,
    input: Any,
    offsets: Any = None,
    *,
    mode: str = "mean",
    per_sample_weights: Any = None,
    padding_idx: Optional[int] = None,
    include_last_offset: bool = False,
    scale_grad_by_freq: bool = False,
    sparse: bool = False,
    argmax: Any = None,
    check_indices: bool = True,
) -> Gradients:
    """The gradients of ``embedding_bag`` with respect to the weight and per_sample_weights.

    Pass the same weight (as the forward read it, i.e. after ``max_norm``), input, offsets,
    per_sample_weights and options as the forward, and ``grad_output`` ``(B, D)`` in the
    weight's dtype. Mode ``"max"`` needs the forward's ``argmax``
    (``embedding_bag(..., return_aux=True).argmax``).

    Returns:
        Gradients: ``grad_weight`` dense ``(V, D)``; or, with ``sparse=True``, the coalesced
        gradient as ``grad_weight`` ``(U, D)`` value rows and ``grad_weight_rows`` ``(U,)``
        int64 strictly ascending row ids (padding row absent): embag's coalesced layout
        (``embag.torch`` turns it into PyTorch's uncoalesced one unless ``coalesced=True``). ``grad_per_sample_weights`` has
        the input's shape when per_sample_weights were given, else None.

    Raises:
        embag.EmbeddingBagError, TypeError, embag.UnsupportedError: as ``embedding_bag``.
    """
    options = _options(
        mode, None, 2.0, scale_grad_by_freq, sparse, include_last_offset, padding_idx, weight
    )
    check_indices = _check_bool(check_indices, "check_indices")
    sparse = options.sparse
    grad_c = _capsule(grad_output, "grad_output")
    weight_c = _capsule(weight, "weight")
    input_c = _capsule(input, "input")
    offsets_c = _capsule(offsets, "offsets")
    psw_c = _capsule(per_sample_weights, "per_sample_weights")
    argmax_c = _capsule(argmax, "argmax")
    stream = _stream(weight)
    columns = _columns(weight)
    rows = None
    if sparse:
        count = _embag.sparse_gradient_rows(
            grad_c, weight_c, input_c, offsets_c, psw_c, argmax_c, options, stream, check_indices
        )
        rows = _empty(weight, (count,), index=True)
        grad_weight = _empty(weight, (count, columns))
    else:
        rows_v = int(tuple(weight.shape)[0]) if columns else 0
        # (a table the kernels cannot address gets the runtime's words, not an allocator's)
        _check_extent(rows_v, "the number of rows of weight")
        grad_weight = _empty(weight, (rows_v, columns))
    grad_psw = (
        _empty(weight, tuple(int(n) for n in per_sample_weights.shape))
        if per_sample_weights is not None
        else None
    )
    _embag.backward(
        grad_c,
        weight_c,
        input_c,
        offsets_c,
        psw_c,
        argmax_c,
        None if sparse else _capsule(grad_weight, "grad_weight", written=True),
        _capsule(rows, "grad_weight_rows", written=True),
        _capsule(grad_weight, "grad_weight_values", written=True) if sparse else None,
        _capsule(grad_psw, "grad_per_sample_weights", written=True),
        options,
        stream,
        check_indices,
    )
    return Gradients(_finish(grad_weight), _finish(rows), _finish(grad_psw))
