"""Quantized tables in Python: a uint8 array of rows plus its format (include/embag/quantized.h).

``embag.quantize(weight, "int4")`` returns a :class:`QuantizedTable` whose ``data`` is a uint8
array of the weight's own library (NumPy or torch), byte for byte what PyTorch's
``embedding_bag_byte_prepack`` / ``embedding_bag_4bit_prepack`` / ``embedding_bag_2bit_prepack``
(formats ``int8``, ``int4``, ``int2``) or FBGEMM's TBE quantizer (``tbe_int8``, ``tbe_int4``,
``tbe_int2``: scale and bias in front) return for it; or its 8-bit floats, one byte per element,
as ``weight.to(torch.float8_e4m3fn)`` / ``torch.float8_e5m2`` (``fp8_e4m3fn``, ``fp8_e5m2``) or
FBGEMM's ``FloatToHFP8Quantized`` (``hfp8``, its TBE's ``SparseType.FP8``) give them.
``QuantizedTable(prepacked, "int8")`` wraps bytes a model already has, and
``embag.embedding_bag(table, ...)`` pools them; a torch float8 tensor is taken as it is.
"""

from __future__ import annotations

from typing import Any, Optional

from . import _embag

FORMATS = (
    "int8",
    "int4",
    "int2",
    "tbe_int8",
    "tbe_int4",
    "tbe_int2",
    "fp8_e4m3fn",
    "fp8_e5m2",
    "hfp8",
)

# bits of a code, bytes of scale + bias
_LAYOUT = {
    "int8": (8, 8),
    "int4": (4, 4),
    "int2": (2, 4),
    "tbe_int8": (8, 4),
    "tbe_int4": (4, 4),
    "tbe_int2": (2, 4),
    "fp8_e4m3fn": (8, 0),
    "fp8_e5m2": (8, 0),
    "hfp8": (8, 0),
}

# torch's 8-bit float dtypes (by name) and the format of their bytes
_TORCH_FLOAT8 = {"float8_e4m3fn": "fp8_e4m3fn", "float8_e5m2": "fp8_e5m2"}


def float8_format(weight: Any) -> Optional[str]:
    """The format of a torch ``float8_e4m3fn`` / ``float8_e5m2`` tensor's bytes, else None."""
    torch = _torch_module()
    if torch is None or not isinstance(weight, torch.Tensor):
        return None
    return _TORCH_FLOAT8.get(str(weight.dtype).replace("torch.", ""))


def float8_table(weight: Any) -> Optional["QuantizedTable"]:
    """A 2-D torch float8 tensor as the QuantizedTable of its bytes (no copy), else None."""
    format = float8_format(weight)
    if format is None:
        return None
    if weight.dim() != 2:
        raise ValueError(
            f"weight has to be a 2D Tensor, but got Tensor of dimension {weight.dim()}"
        )
    return QuantizedTable(weight.view(_torch_module().uint8), format, int(weight.shape[1]))


def _check_format(format: Any) -> str:
    if not isinstance(format, str) or format not in _LAYOUT:
        raise ValueError(f"unknown quantized format {format!r} (known: {', '.join(FORMATS)})")
    return format


def row_bytes(format: str, dim: int) -> int:
    """Bytes of one row of ``dim`` columns in ``format`` (codes and qparams, no padding)."""
    return int(_embag.quantized_row_bytes(_check_format(format), int(dim)))


class QuantizedTable:
    """A quantized table: ``data`` a 2-D uint8 array ``(V, >= row_bytes(format, dim))``.

    ``dim`` may be left out when the rows carry no padding: it is then the largest D whose row
    fills the row (for ``int4`` / ``int2`` an even / a multiple-of-4 D, as PyTorch's prepack ops
    require). Tables padded to a row alignment (FBGEMM's TBE) must give ``dim``.
    """

    def __init__(self, data: Any, format: str, dim: Optional[int] = None) -> None:
        self.format = _check_format(format)
        shape = tuple(int(n) for n in data.shape)
        if len(shape) != 2:
            raise ValueError(
                f"a quantized table's data must be 2-D (rows, bytes per row), but has shape {shape}"
            )
        if dim is None:
            bits, qparam_bytes = _LAYOUT[self.format]
            dim = max(shape[1] - qparam_bytes, 0) * (8 // bits)
        self.dim = int(dim)
        self.data = data

    @property
    def rows(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """The ``(V, D)`` of the float table it stands for."""
        return (self.rows, self.dim)

    def __repr__(self) -> str:
        return f"QuantizedTable(format={self.format!r}, rows={self.rows}, dim={self.dim})"


def _uint8_empty(like: Any, shape: tuple[int, int]) -> Any:
    torch = _torch_module()
    if torch is not None and isinstance(like, torch.Tensor):
        return torch.empty(shape, dtype=torch.uint8, device=like.device)
    import numpy as np  # noqa: PLC0415

    return np.empty(shape, dtype=np.uint8)


def _float_empty(like: Any, shape: tuple[int, int], dtype: str) -> Any:
    torch = _torch_module()
    if torch is not None and isinstance(like, torch.Tensor):
        return torch.empty(shape, dtype=getattr(torch, dtype), device=like.device)
    import numpy as np  # noqa: PLC0415

    if dtype == "bfloat16":
        raise ValueError("NumPy has no bfloat16: dequantize a NumPy table to float32 or float16")
    return np.empty(shape, dtype=np.dtype(dtype))


def _torch_module() -> Any:
    import sys  # noqa: PLC0415

    return sys.modules.get("torch")


def quantize(weight: Any, format: str, *, row_alignment: int = 1) -> QuantizedTable:
    """Quantizes a ``(V, D)`` float32 / float16 / bfloat16 table into ``format``.

    ``row_alignment`` pads each row to a multiple of that many bytes (FBGEMM's TBE uses 16 on
    GPUs); padding bytes are zero. The bytes are PyTorch's / FBGEMM's for the same input.
    """
    from ._arrays import _capsule  # noqa: PLC0415

    format = _check_format(format)
    shape = tuple(int(n) for n in weight.shape)
    if len(shape) != 2:
        raise ValueError(f"weight has to be a 2D Tensor, but got Tensor of dimension {len(shape)}")
    if not isinstance(row_alignment, int) or row_alignment < 1:
        raise ValueError(f"row_alignment must be a positive int, but got {row_alignment!r}")
    rows, dim = shape
    width = row_bytes(format, dim)
    width = (width + row_alignment - 1) // row_alignment * row_alignment
    data = _uint8_empty(weight, (rows, width))
    data[...] = 0
    _embag.quantize(_capsule(weight, "weight"), _capsule(data, "out", written=True), format, dim)
    return QuantizedTable(data, format, dim)


def dequantize(table: QuantizedTable, dtype: str = "float32") -> Any:
    """The ``(V, D)`` float table ``table`` stands for: ``scale * q + bias`` in float32, rounded
    once to ``dtype`` (float32, float16 or bfloat16)."""
    from ._arrays import _capsule  # noqa: PLC0415

    if not isinstance(table, QuantizedTable):
        raise TypeError(f"dequantize takes a QuantizedTable, not {type(table).__name__}")
    if dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"dtype must be float32, float16 or bfloat16, but got {dtype!r}")
    out = _float_empty(table.data, (table.rows, table.dim), dtype)
    _embag.dequantize(
        _capsule(table.data, "table"), table.format, table.dim, _capsule(out, "out", written=True)
    )
    return out
