"""8-bit float tables against PyTorch and FBGEMM themselves (make test-python, .venv-torch).

- embag.quantize(w, "fp8_e4m3fn" / "fp8_e5m2") is byte-identical to torch's own cast
  (``w.to(torch.float8_e4m3fn)``) on every code's value, the midpoints between codes and their
  neighbours (round to nearest even), subnormals, overflow, +-inf and NaN, random tables at many
  scales, and float16 / bfloat16 tables; embag.dequantize is ``.float()`` on all 256 codes.
- embag.embedding_bag on an FP8 table (embag's bytes, or a torch float8 tensor handed over as it
  is, through embag and embag.torch) is F.embedding_bag on ``.float()`` of the float8 tensor:
  every mode, weighted sum, padding_idx, include_last_offset, int32 and int64 indices.
- "hfp8" is FBGEMM's HFP8: byte-identical to torch.ops.fbgemm.FloatToHFP8Quantized (SparseType.FP8's
  default config: 4 exponent bits, bias 7, max_position 240), decoded as HFP8QuantizedToFloat on
  all 256 codes, and pooled like FBGEMM's inference TBE (IntNBitTableBatchedEmbeddingBagsCodegen,
  CPU) with SparseType.FP8 tables in its modes (sum, mean).
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402

import embag  # noqa: E402
import embag.torch as et  # noqa: E402

TORCH_DTYPES = {"fp8_e4m3fn": torch.float8_e4m3fn, "fp8_e5m2": torch.float8_e5m2}


def _every_code(dtype: torch.dtype) -> torch.Tensor:
    return torch.arange(256, dtype=torch.int32).to(torch.uint8).view(dtype)


def _probe_values(dtype: torch.dtype) -> torch.Tensor:
    """float32 values that exercise every rounding decision of a cast to ``dtype``."""
    values = _every_code(dtype).float()
    finite = torch.unique(values[torch.isfinite(values)])  # sorted, -0.0 folded into 0.0
    midpoints = (finite[:-1] + finite[1:]) / 2  # exact: fp8 values have few significant bits
    inf = torch.tensor(math.inf)
    largest = float(finite.max())
    g = torch.Generator().manual_seed(19)
    scales = 10.0 ** torch.randint(-9, 6, (3000,), generator=g).float()
    special = torch.tensor(
        [0.0, -0.0, math.inf, -math.inf, math.nan, -math.nan, 1e-45, -1e-45, 1e-30, 3e38, -3e38,
         largest * 1.03, largest * 1.1, largest * 1.0625, largest * 1.07, largest * 2]
    )
    return torch.cat(
        [
            finite,
            torch.nextafter(finite, inf),
            torch.nextafter(finite, -inf),
            midpoints,
            torch.nextafter(midpoints, inf),
            torch.nextafter(midpoints, -inf),
            -midpoints,
            special,
            torch.randn(3000, generator=g) * scales,
        ]
    )


def _as_table(values: torch.Tensor, dim: int = 37) -> torch.Tensor:
    rows = (values.numel() + dim - 1) // dim
    padded = torch.cat([values, torch.zeros(rows * dim - values.numel())])
    return padded.view(rows, dim)


def _first_difference(got: torch.Tensor, want: torch.Tensor, source: torch.Tensor) -> str:
    at = (got != want).nonzero()
    if at.numel() == 0:
        return ""
    i = tuple(at[0].tolist())
    return (
        f"at {i}: value {source[i].item()!r}: embag {got[i].item():#04x} vs {want[i].item():#04x}"
    )


@pytest.mark.parametrize("fmt", ["fp8_e4m3fn", "fp8_e5m2"])
def test_quantize_is_byte_identical_to_torch_cast(fmt: str) -> None:
    dtype = TORCH_DTYPES[fmt]
    table = _as_table(_probe_values(dtype))
    got = embag.quantize(table, fmt)
    assert got.data.dtype == torch.uint8 and got.data.shape == table.shape
    want = table.to(dtype).view(torch.uint8)
    difference = _first_difference(got.data, want, table)
    assert not difference, difference
    # float16 and bfloat16 tables: their values, exactly (one rounding, as torch's cast)
    for narrow in (torch.float16, torch.bfloat16):
        small = table.clamp(-6e4, 6e4).to(narrow)
        got = embag.quantize(small, fmt).data
        want = small.to(dtype).view(torch.uint8)
        difference = _first_difference(got, want, small)
        assert not difference, (narrow, difference)


@pytest.mark.parametrize("fmt", ["fp8_e4m3fn", "fp8_e5m2"])
def test_dequantize_is_torch_float_on_every_code(fmt: str) -> None:
    codes = _every_code(TORCH_DTYPES[fmt]).view(1, 256)
    got = embag.dequantize(embag.QuantizedTable(codes.view(torch.uint8), fmt))
    want = codes.float()
    # bit for bit, NaNs included (e5m2's quiet, as torch's F16C widening gives them)
    assert torch.equal(got.view(torch.int32), want.view(torch.int32))


def _bags(seed: int, rows: int, bags: int, index_dtype: torch.dtype):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, 9, (bags,), generator=g)
    lengths[0] = 0  # an empty bag
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)[:-1]])
    indices = torch.randint(0, rows, (int(lengths.sum()),), generator=g)
    weights = torch.rand(indices.shape[0], generator=g) * 4 - 2
    return indices.to(index_dtype), offsets.to(index_dtype), weights


@pytest.mark.parametrize("fmt", ["fp8_e4m3fn", "fp8_e5m2"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_embedding_bag_is_torch_on_the_float8_tensor(fmt: str, index_dtype: torch.dtype) -> None:
    dtype = TORCH_DTYPES[fmt]
    rows = 53
    for dim in (1, 3, 33, 64):
        g = torch.Generator().manual_seed(dim)
        w8 = (torch.randn(rows, dim, generator=g) * 30).to(dtype)  # finite: |w| < 448
        w8[7] = torch.zeros(dim).to(dtype)
        reference = w8.float()
        ours = embag.quantize(reference, fmt)
        assert torch.equal(ours.data, w8.view(torch.uint8))  # exact values quantize to themselves
        indices, offsets, weights = _bags(dim, rows, 17, index_dtype)
        closed = torch.cat([offsets, torch.tensor([indices.shape[0]], dtype=index_dtype)])
        calls = [
            dict(mode="sum"),
            dict(mode="mean"),
            dict(mode="max"),
            dict(mode="sum", per_sample_weights=weights),
            dict(mode="mean", padding_idx=7),
            dict(mode="max", padding_idx=-rows + 3),
            dict(mode="sum", include_last_offset=True),
        ]
        for kwargs in calls:
            bag_offsets = closed if kwargs.get("include_last_offset") else offsets
            want = F.embedding_bag(indices, reference, bag_offsets, **kwargs)
            got = embag.embedding_bag(ours, indices, bag_offsets, **kwargs)
            # PyTorch's sums may fold in another order (vectorized): rounding only; max is exact.
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-5, msg=f"D={dim} {kwargs}")
            if kwargs["mode"] == "max":
                assert torch.equal(got, want), (dim, kwargs)
            # bitwise embag's float32 forward on the same values, and the float8 tensor as it is
            assert torch.equal(got, embag.embedding_bag(reference, indices, bag_offsets, **kwargs))
            assert torch.equal(got, embag.embedding_bag(w8, indices, bag_offsets, **kwargs))
            assert torch.equal(got, et.embedding_bag(indices, w8, bag_offsets, **kwargs))
    # 2-D input: one bag per row
    grid = torch.randint(0, rows, (6, 4), dtype=index_dtype)
    want = F.embedding_bag(grid, w8.float(), mode="max")
    assert torch.equal(embag.embedding_bag(w8, grid, mode="max"), want)


def test_float8_tensor_is_refused_where_a_quantized_table_is() -> None:
    w8 = torch.ones(4, 8).to(torch.float8_e4m3fn)
    with pytest.raises(ValueError, match="max_norm"):
        et.embedding_bag(torch.tensor([0, 1]), w8, torch.tensor([0]), max_norm=1.0)
    with pytest.raises(ValueError, match="2D"):
        one_d = torch.ones(8).to(torch.float8_e5m2)
        embag.embedding_bag(one_d, torch.tensor([0]), torch.tensor([0]))


HFP8_EXPONENT_BITS, HFP8_EXPONENT_BIAS, HFP8_MAX_POSITION = 4, 7, 240.0


def test_hfp8_is_fbgemm_quantizer_and_decode() -> None:
    pytest.importorskip("fbgemm_gpu")
    from fbgemm_gpu.split_embedding_configs import SparseType

    config = SparseType.FP8.default_config()
    got = (config.get("exponent_bits"), config.get("exponent_bias"), config.get("max_position"))
    assert got == (HFP8_EXPONENT_BITS, HFP8_EXPONENT_BIAS, HFP8_MAX_POSITION)
    table = _as_table(_probe_values(torch.float8_e4m3fn))
    want = torch.ops.fbgemm.FloatToHFP8Quantized(
        table, HFP8_EXPONENT_BITS, HFP8_EXPONENT_BIAS, HFP8_MAX_POSITION
    )
    got = embag.quantize(table, "hfp8").data
    difference = _first_difference(got, want, table)
    assert not difference, difference
    codes = torch.arange(256, dtype=torch.int32).to(torch.uint8).view(1, 256)
    decoded = torch.ops.fbgemm.HFP8QuantizedToFloat(codes, HFP8_EXPONENT_BITS, HFP8_EXPONENT_BIAS)
    ours = embag.dequantize(embag.QuantizedTable(codes, "hfp8"))
    assert torch.equal(ours.view(torch.int32), decoded.view(torch.int32))
    assert ours[0, 0x7F].item() == 480.0 and ours[0, 0xFF].item() == -480.0


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_fbgemm_inference_tbe_fp8_matches(pooling: str) -> None:
    pytest.importorskip("fbgemm_gpu")
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

    rows, dim = 120, 64
    weight = torch.randn(rows, dim) * 20
    module = IntNBitTableBatchedEmbeddingBagsCodegen(
        embedding_specs=[("t", rows, dim, SparseType.FP8, EmbeddingLocation.HOST)],
        pooling_mode={"sum": PoolingMode.SUM, "mean": PoolingMode.MEAN}[pooling],
        device="cpu",
        output_dtype=SparseType.FP32,
    )
    module.fill_random_weights()
    module.assign_embedding_weights(
        [quantize_embs(weight, SparseType.FP8, SparseType.FP8.default_config())]
    )
    row_size = rounded_row_size_in_bytes(
        dim, SparseType.FP8, module.row_alignment, module.scale_bias_size_in_bytes
    )
    offset = int(module.weights_physical_offsets[0])
    physical = module.weights_host[offset : offset + rows * row_size].view(rows, row_size)
    # FBGEMM's TBE holds exactly embag's hfp8 bytes (D bytes a row, no scale or bias)
    assert torch.equal(embag.quantize(weight, "hfp8").data, physical[:, :dim].contiguous())
    indices, offsets, _ = _bags(5, rows, 25, torch.int64)
    closed = torch.cat([offsets, torch.tensor([indices.shape[0]])])
    want = module(indices.int(), closed.int())
    got = embag.embedding_bag(
        embag.QuantizedTable(physical, "hfp8", dim), indices, offsets, mode=pooling
    )
    # FBGEMM folds with FMAs and its mean multiplies by 1 / length: rounding only.
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
