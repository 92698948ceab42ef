"""The embag Python package on NumPy arrays, without PyTorch (CTest runs this file in `make test`).

Checks the array API against known results (SEMANTICS.md's worked examples and the golden
vectors recorded from PyTorch in tests/golden), that inputs and outputs are used in place
(pointers, not copies), the error contract (exception type and the C++ message), and the
process-wide controls (ISA, threads, info).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import embag

GOLDEN = Path(__file__).resolve().parents[1] / "golden"

# SEMANTICS.md, "Worked examples" (float64).
W = np.array([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]], dtype=np.float64)
IDX = np.array([3, 1, 1, 1, 4, 0], dtype=np.int64)
OFF = np.array([0, 0, 3, 3, 6], dtype=np.int64)
G = np.array([[99, 99], [1, 2], [99, 99], [3, 4], [99, 99]], dtype=np.float64)
SUM_OUT = np.array([[0, 0], [13, 16], [0, 0], [13, 16], [0, 0]], dtype=np.float64)
SUM_GRAD = np.array([[3, 4], [5, 8], [0, 0], [1, 2], [3, 4]], dtype=np.float64)

WORKED = [
    # (name, kwargs, output, grad_weight)
    ("sum", {"mode": "sum"}, SUM_OUT, SUM_GRAD),
    ("mean", {"mode": "mean"}, SUM_OUT / 3, SUM_GRAD / 3),
    (
        "max",
        {"mode": "max"},
        [[0, 0], [7, 8], [0, 0], [9, 10], [0, 0]],
        [[0, 0], [0, 0], [0, 0], [1, 2], [3, 4]],
    ),
    (
        "sum_padding",
        {"mode": "sum", "padding_idx": 1},
        [[0, 0], [7, 8], [0, 0], [10, 12], [0, 0]],
        [[3, 4], [0, 0], [0, 0], [1, 2], [3, 4]],
    ),
    (
        "mean_padding",
        {"mode": "mean", "padding_idx": 1},
        [[0, 0], [7, 8], [0, 0], [5, 6], [0, 0]],
        [[1.5, 2], [0, 0], [0, 0], [1, 2], [1.5, 2]],
    ),
]


@pytest.mark.parametrize("name,kwargs,expected_out,expected_grad", WORKED, ids=[w[0] for w in WORKED])
def test_worked_examples(name: str, kwargs: dict, expected_out: Any, expected_grad: Any) -> None:
    result = embag.embedding_bag(W, IDX, OFF, return_aux=True, **kwargs)
    # mean divides, so its results are "sum / 3" up to one rounding.
    np.testing.assert_allclose(result.output, np.asarray(expected_out, dtype=np.float64), rtol=1e-15)
    assert result.output.dtype == np.float64 and isinstance(result.output, np.ndarray)
    grads = embag.embedding_bag_backward(G, W, IDX, OFF, argmax=result.argmax, **kwargs)
    np.testing.assert_allclose(grads.grad_weight, np.asarray(expected_grad, dtype=np.float64), rtol=1e-15)
    assert grads.grad_weight_rows is None and grads.grad_per_sample_weights is None


def test_worked_example_per_sample_weights() -> None:
    psw = np.arange(1, 7, dtype=np.float64)
    out = embag.embedding_bag(W, IDX, OFF, mode="sum", per_sample_weights=psw)
    np.testing.assert_array_equal(out, [[0, 0], [22, 28], [0, 0], [63, 78], [0, 0]])
    grads = embag.embedding_bag_backward(G, W, IDX, OFF, mode="sum", per_sample_weights=psw)
    np.testing.assert_array_equal(grads.grad_weight, [[18, 24], [17, 26], [0, 0], [1, 2], [15, 20]])
    np.testing.assert_array_equal(grads.grad_per_sample_weights, [23, 11, 11, 25, 67, 11])


def test_sparse_gradient_is_coalesced() -> None:
    psw = np.arange(1, 7, dtype=np.float64)
    grads = embag.embedding_bag_backward(
        G, W, IDX, OFF, mode="sum", per_sample_weights=psw, sparse=True, padding_idx=1
    )
    # Row 1 is the padding row (absent), row 2 is never referenced; rows strictly ascending.
    np.testing.assert_array_equal(grads.grad_weight_rows, [0, 3, 4])
    assert grads.grad_weight_rows.dtype == np.int64
    np.testing.assert_array_equal(grads.grad_weight, [[18, 24], [1, 2], [15, 20]])
    np.testing.assert_array_equal(grads.grad_per_sample_weights, [23, 0, 0, 0, 67, 11])


def test_max_ties_go_to_first_occurrence() -> None:
    weight = np.array([[1, 5], [1, 5], [0, 7]], dtype=np.float32)
    result = embag.embedding_bag(
        weight, np.array([1, 0, 2]), np.array([0]), mode="max", return_aux=True
    )
    np.testing.assert_array_equal(result.output, [[1, 7]])
    np.testing.assert_array_equal(result.argmax, [[1, 2]])
    np.testing.assert_array_equal(result.bag_count, [3])


def test_max_norm_renormalises_the_callers_table_in_place() -> None:
    weight = np.array([[3, 4], [10, 0], [0.3, 0.4]], dtype=np.float32)
    before = weight.ctypes.data
    embag.embedding_bag(weight, np.array([0, 1, 2]), np.array([0]), mode="sum", max_norm=2.0)
    assert weight.ctypes.data == before
    np.testing.assert_array_equal(
        weight, np.array([[1.2000000477, 1.6000000238], [2, 0], [0.3, 0.4]], dtype=np.float32)
    )


def test_scale_grad_by_freq_uses_each_rows_own_count() -> None:
    weight = np.zeros((4, 2), dtype=np.float64)
    grads = embag.embedding_bag_backward(
        np.ones((1, 2)), weight, np.array([1, 1, 3]), np.array([0]), mode="sum",
        scale_grad_by_freq=True,
    )
    np.testing.assert_array_equal(grads.grad_weight, [[0, 0], [1, 1], [0, 0], [1, 1]])


def test_2d_input_int32_and_include_last_offset_tail() -> None:
    weight = np.arange(12, dtype=np.float32).reshape(6, 2)
    out = embag.embedding_bag(weight, np.array([[0, 1], [2, 3]], dtype=np.int32), mode="sum")
    np.testing.assert_array_equal(out, [[2, 4], [10, 12]])
    # include_last_offset: 2 bags; index 99 after offsets[-1] is in no bag, so it is not read.
    out = embag.embedding_bag(
        weight, np.array([0, 1, 5, 99]), np.array([0, 2, 3], dtype=np.int32), mode="sum",
        include_last_offset=True,
    )
    np.testing.assert_array_equal(out, [[2, 4], [10, 11]])


def test_no_bags_gives_an_empty_output() -> None:
    out = embag.embedding_bag(W, np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
    assert out.shape == (0, 2) and out.dtype == np.float64


def test_float16_accumulates_in_float32() -> None:
    # 2048 + 1 + 1 is 2050 in float32 but 2048 in float16 if rounded after every add.
    weight = np.array([[2048], [1]], dtype=np.float16)
    out = embag.embedding_bag(weight, np.array([0, 1, 1]), np.array([0]), mode="sum")
    assert out.dtype == np.float16
    np.testing.assert_array_equal(out, np.array([[2050]], dtype=np.float16))


# ---- zero copy ---------------------------------------------------------------------------------


def test_out_is_written_in_place_and_returned() -> None:
    out = np.full((5, 2), -1.0)
    result = embag.embedding_bag(W, IDX, OFF, mode="sum", out=out)
    assert result is out
    np.testing.assert_array_equal(out, SUM_OUT)


def test_weight_slice_of_a_wider_table_is_read_in_place() -> None:
    # A (5, 2) view with row stride 3: the kernels read it through its strides (no copy), and
    # max_norm's in-place change lands in the wider parent array.
    wide = np.zeros((5, 3), dtype=np.float64)
    wide[:, :2] = W
    view = wide[:, :2]
    out = embag.embedding_bag(view, IDX, OFF, mode="sum")
    np.testing.assert_array_equal(out, SUM_OUT)
    embag.embedding_bag(view, np.array([4]), np.array([0]), mode="sum", max_norm=1.0)
    assert np.linalg.norm(wide[4, :2]) == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_array_equal(wide[:, 2], 0)
    np.testing.assert_array_equal(wide[:4, :2], W[:4])


def test_outputs_are_fresh_numpy_arrays_owning_their_memory() -> None:
    out = embag.embedding_bag(W, IDX, OFF, mode="sum")
    assert isinstance(out, np.ndarray) and out.flags.c_contiguous and out.flags.owndata


# ---- errors -------------------------------------------------------------------------------------

ERRORS = [
    # (reason, call, exception, message fragment)
    ("index out of range", lambda: embag.embedding_bag(W, np.array([0, 7]), np.array([0])),
     ValueError, "Index 1 of input takes value 7 which is not in the valid range [0, 5)"),
    ("first offset not 0", lambda: embag.embedding_bag(W, IDX, np.array([1, 3])),
     ValueError, "offsets[0] has to be 0"),
    ("decreasing offsets", lambda: embag.embedding_bag(W, IDX, np.array([0, 4, 2])),
     ValueError, "offsets must be non-decreasing, but offsets[1] = 4 > offsets[2] = 2"),
    ("1-D input without offsets", lambda: embag.embedding_bag(W, IDX),
     ValueError, "offsets has to be a 1D Tensor but got None"),
    ("unknown mode", lambda: embag.embedding_bag(W, IDX, OFF, mode="median"),
     ValueError, "mode has to be one of sum, mean or max"),
    ("psw with mean", lambda: embag.embedding_bag(W, IDX, OFF, per_sample_weights=np.ones(6)),
     ValueError, "per_sample_weights is only supported for mode='sum' (got mode='mean')"),
    ("padding_idx out of range", lambda: embag.embedding_bag(W, IDX, OFF, padding_idx=5),
     ValueError, "padding_idx must be within the number of embeddings, -5 through 4, but got 5"),
    ("3-D weight", lambda: embag.embedding_bag(np.zeros((2, 2, 2)), IDX, OFF),
     ValueError, "weight has to be a 2D Tensor, but got Tensor of dimension 3"),
    ("3-D input", lambda: embag.embedding_bag(W, np.zeros((1, 1, 1), dtype=np.int64)),
     ValueError, "input has to be 1D or 2D Tensor, but got Tensor of dimension 3"),
    ("float indices", lambda: embag.embedding_bag(W, IDX.astype(np.float32), OFF),
     ValueError, "input must be int32 or int64"),
    ("max with sparse", lambda: embag.embedding_bag_backward(G, W, IDX, OFF, mode="max", sparse=True),
     ValueError, "max mode does not support sparse weights"),
    ("out of the wrong shape", lambda: embag.embedding_bag(W, IDX, OFF, out=np.zeros((4, 2))),
     ValueError, "output"),
    ("a list is not an array", lambda: embag.embedding_bag(W, [0, 1], OFF),
     TypeError, "input must be an array that supports DLPack"),
    ("complex table", lambda: embag.embedding_bag(W.astype(np.complex64), IDX, OFF),
     ValueError, "weight"),
]


@pytest.mark.parametrize("reason,call,exception,fragment", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(reason: str, call: Any, exception: type, fragment: str) -> None:
    with pytest.raises(exception) as raised:
        call()
    assert fragment in str(raised.value), f"{reason}: {raised.value}"


def test_failed_call_writes_nothing() -> None:
    weight = W.copy()
    out = np.full((2, 2), -1.0)
    with pytest.raises(ValueError):
        # Index 9 is out of range: neither max_norm's renorm nor the output may happen.
        embag.embedding_bag(weight, np.array([4, 9]), np.array([0, 1]), mode="sum",
                            max_norm=1.0, out=out)
    np.testing.assert_array_equal(weight, W)
    np.testing.assert_array_equal(out, -1.0)


def test_unsupported_is_a_runtime_error_and_changes_nothing() -> None:
    assert issubclass(embag.UnsupportedError, RuntimeError)
    before = embag.selected_isa()
    foreign = "neon" if before in ("avx512", "avx2", "sse41") else "avx2"
    with pytest.raises(embag.UnsupportedError, match=foreign):
        embag.set_isa(foreign)
    assert embag.selected_isa() == before
    with pytest.raises(ValueError, match="unknown ISA 'avx9'"):
        embag.set_isa("avx9")


# ---- ISAs, threads, info -----------------------------------------------------------------------


def test_info_describes_this_build() -> None:
    info = embag.info()
    assert info["compiled_isas"], info
    assert info["selected_isa"] in info["compiled_isas"]
    assert info["variants"] == len(embag.compiled_variants()) > 0
    assert isinstance(embag.cuda_status(), str) and embag.cuda_status()


def _random_call(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    return {
        "weight": rng.standard_normal((1000, 33)).astype(np.float32),
        "input": rng.integers(0, 1000, 5000),
        "offsets": np.concatenate([[0], np.sort(rng.integers(0, 5000, 199))]),
    }


def test_every_available_isa_and_thread_count_gives_identical_bits() -> None:
    call = _random_call(7)
    available = [isa for isa in embag.info()["compiled_isas"] if isa in embag.info()["supported_isas"]]
    threads = embag.num_threads()
    results = []
    try:
        for isa in available:
            embag.set_isa(isa)
            for n in (1, 2, 3):
                embag.set_num_threads(n)
                results.append(embag.embedding_bag(**call, mode="sum"))
                assert embag.last_variant().endswith("_" + isa), embag.last_variant()
    finally:
        embag.set_isa(None)
        embag.set_num_threads(threads)
    # Sums in input order with float32 folds: every ISA and thread count gives the same bits.
    for result in results[1:]:
        np.testing.assert_array_equal(result, results[0])
    with pytest.raises(ValueError):
        embag.set_num_threads(0)


# ---- golden vectors recorded from PyTorch -------------------------------------------------------


def _golden_cases() -> list[Path]:
    return sorted(p for p in GOLDEN.iterdir() if (p / "meta.txt").exists())


def _tolerance(dtype: np.dtype) -> float:
    return {np.float64: 1e-12, np.float32: 1e-5, np.float16: 1e-2}[dtype.type]


@pytest.mark.parametrize("case", _golden_cases(), ids=lambda p: p.name)
def test_golden(case: Path) -> None:
    meta = dict(line.split("=", 1) for line in (case / "meta.txt").read_text().splitlines() if "=" in line)
    load = lambda name: np.load(case / f"{name}.npy") if (case / f"{name}.npy").exists() else None  # noqa: E731
    weight, input, offsets = load("weight"), load("input"), load("offsets")
    psw = load("per_sample_weights")
    options = {
        "mode": meta["mode"],
        "padding_idx": int(meta["padding_idx"]) if "padding_idx" in meta else None,
        "include_last_offset": meta.get("include_last_offset") == "1",
        "per_sample_weights": psw,
    }
    original = weight.copy()
    table = weight.copy()
    result = embag.embedding_bag(
        table, input, offsets, max_norm=float(meta["max_norm"]) if "max_norm" in meta else None,
        norm_type=float(meta["norm_type"]), return_aux=True, **options,
    )
    tol = _tolerance(weight.dtype)
    expected = load("output")
    scale = 1.0 + float(np.abs(original.astype(np.float64)).max(initial=0)) * max(1, input.size)
    np.testing.assert_allclose(result.output.astype(np.float64), expected, rtol=tol, atol=tol * scale)
    if load("weight_after") is not None:
        np.testing.assert_allclose(table, load("weight_after"), rtol=tol, atol=tol)
    grad_output = load("grad_output")
    if grad_output is None:
        return
    grads = embag.embedding_bag_backward(
        grad_output, weight, input, offsets, argmax=result.argmax,
        scale_grad_by_freq=meta.get("scale_grad_by_freq") == "1", **options,
    )
    gscale = 1.0 + float(np.abs(grad_output.astype(np.float64)).sum())
    np.testing.assert_allclose(
        grads.grad_weight.astype(np.float64), load("grad_weight"), rtol=tol, atol=tol * gscale
    )
    if psw is not None:
        np.testing.assert_allclose(
            grads.grad_per_sample_weights.astype(np.float64), load("grad_per_sample_weights"),
            rtol=tol, atol=tol * gscale * scale,
        )


# ---- other array libraries and imports ---------------------------------------------------------


class _ForeignArray:
    """A minimal array of some other library (as JAX's look to embag): DLPack and an Array API
    namespace, no NumPy type. embag must view it without copying and hand results back through
    the namespace's from_dlpack."""

    def __init__(self, data: np.ndarray) -> None:
        self.data = data
        self.shape = data.shape
        self.dtype = data.dtype

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.data.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        return self.data.__dlpack_device__()

    def __array_namespace__(self) -> Any:
        class Namespace:
            @staticmethod
            def from_dlpack(array: Any) -> "_ForeignArray":
                return _ForeignArray(np.from_dlpack(array))

        return Namespace()


def test_other_array_libraries_get_their_own_kind_back() -> None:
    result = embag.embedding_bag(_ForeignArray(W), _ForeignArray(IDX), _ForeignArray(OFF), mode="sum")
    assert isinstance(result, _ForeignArray)
    np.testing.assert_array_equal(result.data, SUM_OUT)


def test_import_needs_neither_numpy_nor_torch() -> None:
    import subprocess
    import sys

    code = "import sys, embag; embag.info(); print(sorted({'numpy', 'torch'} & set(sys.modules)))"
    loaded = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert loaded.stdout.strip() == "[]"
