"""Quantized tables against PyTorch and FBGEMM themselves (make test-python, .venv-torch).

- embag.quantize is byte-identical to torch.ops.quantized.embedding_bag_byte_prepack /
  embedding_bag_4bit_prepack / embedding_bag_2bit_prepack and FBGEMM's n-bit quantizer on random
  tables, constant rows, rows with +-inf and NaN, float16 tables, and every D PyTorch accepts
  from 1 to 33 (odd D for 4-bit is refused by PyTorch and by FBGEMM's dispatcher; the C++ tests
  cover it against the reference).
- The embag.torch drop-ins take PyTorch's prepacked tensors unchanged: sum and weighted sum
  against PyTorch's own quantized ops, every mode against F.embedding_bag on the dequantised
  table, and mean / max against PyTorch's op, which returns the sum for them.
- FBGEMM's inference TBE (IntNBitTableBatchedEmbeddingBagsCodegen, CPU) in its modes (sum,
  mean) on embag's tbe_int8 / tbe_int4 / tbe_int2 bytes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import embag  # noqa: E402
import embag.torch as et  # noqa: E402

PREPACK = {
    "int8": lambda w: torch.ops.quantized.embedding_bag_byte_prepack(w),
    "int4": lambda w: torch.ops.quantized.embedding_bag_4bit_prepack(w),
    "int2": lambda w: torch.ops.quantized.embedding_bag_2bit_prepack(w),
}
MULTIPLE = {"int8": 1, "int4": 2, "int2": 4}  # PyTorch's prepack ops want D % this == 0


def _tables(seed: int, rows: int, dim: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    random = torch.randn(rows, dim, generator=g) * torch.rand(rows, 1, generator=g) * 10
    tables = [random, torch.full((3, dim), 2.5), torch.zeros(2, dim)]
    special = torch.randn(8, dim, generator=g)
    special[0, 0] = math.inf
    special[1, -1] = -math.inf
    special[2, dim // 2] = math.nan
    special[3, :] = -math.inf
    special[4, :] = math.nan
    special[5, 0] = math.nan
    special[5, -1] = math.inf
    special[6, :] = math.inf
    tables.append(special)
    return tables


@pytest.mark.parametrize("format", ["int8", "int4", "int2"])
def test_quantize_is_byte_identical_to_pytorch_prepack(format: str) -> None:
    checked = 0
    for dim in range(1, 34):
        if dim % MULTIPLE[format]:
            continue
        for table in _tables(dim, 37, dim) + [torch.randn(5, dim).half()]:
            want = PREPACK[format](table)
            got = embag.quantize(table, format)
            assert got.data.dtype == torch.uint8
            assert got.data.shape == want.shape, (dim, got.data.shape, want.shape)
            mismatch = (got.data != want).nonzero()
            assert mismatch.numel() == 0, (
                f"D={dim} dtype={table.dtype}: first differing byte at {mismatch[0].tolist()}: "
                f"embag {got.data[tuple(mismatch[0])].item()} vs torch "
                f"{want[tuple(mismatch[0])].item()}"
            )
            checked += 1
    assert checked > 0


@pytest.mark.parametrize("bits", [2, 4])
def test_quantize_is_byte_identical_to_fbgemm_nbit_quantizer(bits: int) -> None:
    pytest.importorskip("fbgemm_gpu")
    fmt = {2: "int2", 4: "int4"}[bits]
    # (FBGEMM's op wants an even number of code bytes: D a multiple of 16 / bits)
    for dim in (8, 16, 24, 32, 40, 64, 96, 128):
        for table in _tables(100 + dim, 29, dim):
            if not torch.isfinite(table).all():
                # fbgemm_gpu's CPU op is its own implementation, not FBGEMM's QuantUtils that
                # PyTorch's prepack calls (and embag matches, above): it agrees on rows with an
                # inf or a NaN among finite values, but not on rows where the min or max is not
                # finite at both ends (all -inf: its scale is a NaN 0x7FFF, FBGEMM's AVX2 max
                # is -FLT_MAX, so its scale is inf 0x7C00). Those rows are left out here.
                table = table[:3]
            want = torch.ops.fbgemm.FloatToFusedNBitRowwiseQuantizedSBHalf(table, bits)
            got = embag.quantize(table, fmt)
            assert torch.equal(got.data, want), dim


@pytest.mark.parametrize("format", ["int8", "int4", "int2"])
def test_dequantize_matches_pytorch_unpack(format: str) -> None:
    unpack = {
        "int8": torch.ops.quantized.embedding_bag_byte_unpack,
        "int4": torch.ops.quantized.embedding_bag_4bit_unpack,
        "int2": torch.ops.quantized.embedding_bag_2bit_unpack,
    }[format]
    table = torch.randn(50, 64) * 3
    packed = PREPACK[format](table)
    got = embag.dequantize(embag.QuantizedTable(packed, format))
    want = unpack(packed)
    # PyTorch's unpack may fuse scale * q + bias into an FMA; embag rounds the product first.
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def _bags(seed: int, rows: int, bags: int, index_dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 12, (bags,), generator=g)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)[:-1]])
    indices = torch.randint(0, rows, (int(lengths.sum()),), generator=g)
    weights = torch.rand(indices.shape[0], generator=g)
    return indices.to(index_dtype), offsets.to(index_dtype), weights


DROPINS = [
    ("int8", et.embedding_bag_byte_rowwise_offsets, torch.ops.quantized.embedding_bag_byte_rowwise_offsets),
    ("int4", et.embedding_bag_4bit_rowwise_offsets, torch.ops.quantized.embedding_bag_4bit_rowwise_offsets),
]


@pytest.mark.parametrize("format,ours,theirs", DROPINS)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("weighted", [False, True])
def test_dropin_sum_matches_pytorch(format, ours, theirs, index_dtype, weighted) -> None:
    rows, dim = 300, 64
    packed = PREPACK[format](torch.randn(rows, dim))
    indices, offsets, weights = _bags(7, rows, 40, index_dtype)
    psw = weights if weighted else None
    got = ours(packed, indices, offsets, mode=0, per_sample_weights=psw)
    want = theirs(packed, indices, offsets, mode=0, per_sample_weights=psw)
    assert got.dtype == torch.float32 and got.shape == want.shape
    # The same dequantised values folded in the same order; PyTorch (FBGEMM) fuses the bias and
    # the multiply into FMAs (acc = fma(scale * psw, q, acc + bias * psw)), embag rounds
    # w = scale * q + bias first: the sums differ by rounding only.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    # include_last_offset too
    closed = torch.cat([offsets, torch.tensor([indices.shape[0]], dtype=index_dtype)])
    got = ours(packed, indices, closed, mode=0, per_sample_weights=psw, include_last_offset=True)
    want = theirs(packed, indices, closed, mode=0, per_sample_weights=psw, include_last_offset=True)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("format,ours,theirs", DROPINS)
@pytest.mark.parametrize("mode", [0, 1, 2])
def test_dropin_every_mode_is_embedding_bag_on_the_dequantised_table(format, ours, theirs, mode):
    rows, dim = 200, 32
    packed = PREPACK[format](torch.randn(rows, dim))
    indices, offsets, _ = _bags(11, rows, 30, torch.int64)
    got = ours(packed, indices, offsets, mode=mode)
    dequantised = embag.dequantize(embag.QuantizedTable(packed, format))
    name = {0: "sum", 1: "mean", 2: "max"}[mode]
    want = F.embedding_bag(indices, dequantised, offsets, mode=name)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    # and bitwise what embag computes on the dequantised float32 table
    assert torch.equal(got, embag.embedding_bag(dequantised, indices, offsets, mode=name))
    if mode != 0:
        # PyTorch 2.14's CPU op returns the sum whatever the mode: embag's mean / max differ.
        summed = theirs(packed, indices, offsets, mode=mode)
        torch.testing.assert_close(summed, ours(packed, indices, offsets, mode=0), rtol=1e-5, atol=1e-5)
        assert not torch.allclose(got, summed)


def test_dropin_refuses_pruned_tables() -> None:
    packed = PREPACK["int8"](torch.randn(4, 8))
    with pytest.raises(ValueError, match="pruned"):
        et.embedding_bag_byte_rowwise_offsets(
            packed, torch.tensor([0, 1]), torch.tensor([0]), pruned_weights=True
        )


def test_quantized_module_from_float_and_compile() -> None:
    float_bag = torch.nn.EmbeddingBag(100, 16, mode="max")
    q = et.QuantizedEmbeddingBag.from_float(float_bag, "int4")
    indices, offsets, _ = _bags(3, 100, 10, torch.int64)
    out = q(indices, offsets)
    deq = embag.dequantize(embag.QuantizedTable(q.data, "int4", 16))
    assert torch.equal(out, F.embedding_bag(indices, deq, offsets, mode="max"))
    compiled = torch.compile(q, fullgraph=True, backend="eager")
    assert torch.equal(compiled(indices, offsets), out)
    exported = torch.export.export(q, (indices, offsets))
    assert torch.equal(exported.module()(indices, offsets), out)


def test_max_norm_is_refused_on_a_quantized_table() -> None:
    table = embag.quantize(np.ones((4, 8), dtype=np.float32), "int8")
    with pytest.raises(ValueError, match="max_norm is not supported with a quantized table"):
        embag.embedding_bag(
            table, np.array([0, 1]), np.array([0]), mode="sum", max_norm=1.0
        )


def _tbe(fmt: str, weight: torch.Tensor, pooling: str):
    """FBGEMM's inference TBE holding ``weight`` quantized by FBGEMM's own quantizer, and its
    table's physical rows ((rows, padded row bytes) uint8, scale and bias first)."""
    from fbgemm_gpu.split_embedding_configs import SparseType
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (
        EmbeddingLocation,
        PoolingMode,
    )
    from fbgemm_gpu.split_table_batched_embeddings_ops_inference import (
        IntNBitTableBatchedEmbeddingBagsCodegen,
        rounded_row_size_in_bytes,
    )
    from fbgemm_gpu.tbe.utils.quantize import quantize_embs

    sparse_type = {"tbe_int8": SparseType.INT8, "tbe_int4": SparseType.INT4, "tbe_int2": SparseType.INT2}[fmt]
    rows, dim = weight.shape
    module = IntNBitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[("t", rows, dim, sparse_type, EmbeddingLocation.HOST)],
        pooling_mode={"sum": PoolingMode.SUM, "mean": PoolingMode.MEAN}[pooling],
        device="cpu",
        output_dtype=SparseType.FP32,
    )
    module.fill_random_weights()
    module.assign_embedding_weights([quantize_embs(weight, sparse_type)])
    row_size = rounded_row_size_in_bytes(
        dim, sparse_type, module.row_alignment, module.scale_bias_size_in_bytes
    )
    offset = int(module.weights_physical_offsets[0])
    physical = module.weights_host[offset : offset + rows * row_size].view(rows, row_size)
    return module, physical


@pytest.mark.parametrize("fmt", ["tbe_int8", "tbe_int4", "tbe_int2"])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_fbgemm_inference_tbe_matches(fmt: str, pooling: str) -> None:
    pytest.importorskip("fbgemm_gpu")
    rows, dim = 120, 64
    weight = torch.randn(rows, dim) * 2
    module, physical = _tbe(fmt, weight, pooling)
    # embag's quantizer writes FBGEMM's TBE bytes (the row's own bytes; padding is FBGEMM's)
    ours = embag.quantize(weight, fmt)
    width = ours.data.shape[1]
    assert torch.equal(ours.data, physical[:, :width].contiguous())
    indices, offsets, _ = _bags(5, rows, 25, torch.int64)
    closed = torch.cat([offsets, torch.tensor([indices.shape[0]])])
    want = module(indices.int(), closed.int())
    got = embag.embedding_bag(embag.QuantizedTable(physical, fmt, dim), indices, offsets, mode=pooling)
    # FBGEMM dequantises with fused multiply-adds and sums in its own order: rounding only.
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
