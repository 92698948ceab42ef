"""Callers that fight embag from Python (`make test-python`; the torch-free cases also in CTest).

Each case that could hang or crash runs in its own subprocess with a deadline: a hang is a
failure that says so, and the process is killed, never left running. The cases:

- fork() after a call that used the pool's workers: raw os.fork, a "fork" multiprocessing Pool,
  a torch DataLoader with two fork workers calling embag in collate_fn;
- a thread rewriting the indices, or the offsets, while forward, backward and sparse backward
  run on them (no crash; every call is correct for the good arrays or refused);
- set_num_threads at the bound under an address-space limit (all or nothing), above it, 2**70;
- daemon threads inside kernels when the interpreter exits;
- arrays that share memory with the output (refused in PyTorch's words, nothing written);
- read-only and memory-mapped tables (read: accepted; written: refused naming the argument);
- torch views with the negation/conjugation bit, autograd's version counter, meta and sparse
  tensors, tables with overlapping rows, NaN max_norm / norm_type, 2**40 bags;
- every message case: the exception type, the argument's name and the offending value.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import embag

ROOT = Path(__file__).resolve().parents[2]


def _run(code: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """Runs ``code`` in a fresh interpreter (same sys.path); fails the test if it hangs."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
        )
    except subprocess.TimeoutExpired as hung:
        pytest.fail(
            f"the subprocess hung (killed after {timeout} s); output so far:\n"
            f"{hung.stdout!r}\n{hung.stderr!r}"
        )


def _expect_ok(result: subprocess.CompletedProcess, marker: str = "DONE") -> str:
    assert result.returncode == 0 and marker in result.stdout, (
        f"exit status {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    )
    return result.stdout


# A batch big enough that a call splits into tasks for both pool threads.
SETUP = """
import numpy as np, embag
embag.set_num_threads(2)
rng = np.random.default_rng(7)
W = rng.random((1000, 64), dtype=np.float32)
idx = rng.integers(0, 1000, 40_000)
off = np.arange(0, 40_000, 20)
def f():
    return float(embag.embedding_bag(W, idx, off, mode="sum").sum())
expected = f()   # the parent's pool has run a 2-thread loop
"""


# ---- fork ---------------------------------------------------------------------------------------


def test_raw_fork_after_a_two_thread_call() -> None:
    out = _run(
        SETUP
        + """
import os, signal
pid = os.fork()
if pid == 0:
    signal.alarm(20)      # a hang ends the child with SIGALRM
    ok = all(f() == expected for _ in range(5)) and embag.num_threads() == 2
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status), f"child killed by signal {os.WTERMSIG(status)}"
assert os.WEXITSTATUS(status) == 0, os.WEXITSTATUS(status)
assert f() == expected    # and the parent keeps its pool
print("DONE")
"""
    )
    _expect_ok(out)


def test_fork_multiprocessing_pool() -> None:
    out = _run(
        SETUP
        + """
import multiprocessing as mp
with mp.get_context("fork").Pool(2) as pool:
    results = [pool.apply_async(f) for _ in range(4)]
    assert [r.get(timeout=20) for r in results] == [expected] * 4
assert f() == expected
print("DONE")
"""
    )
    _expect_ok(out)


def test_dataloader_with_two_fork_workers() -> None:
    pytest.importorskip("torch", reason="the DataLoader case needs PyTorch (make test-python)")
    out = _run(
        SETUP
        + """
import torch
from torch.utils.data import DataLoader
import embag.torch as et
Wt = torch.from_numpy(W)
def collate(batch):
    rows = torch.tensor(batch, dtype=torch.int64) % 1000
    idx_t = rows.repeat(500)     # enough positions for both threads
    off_t = torch.arange(0, idx_t.numel(), 10)
    return et.embedding_bag(idx_t, Wt, off_t, mode="sum").sum().item()
et.embedding_bag(torch.from_numpy(idx), Wt, torch.from_numpy(off), mode="sum")
loader = DataLoader(list(range(64)), batch_size=8, num_workers=2, collate_fn=collate,
                    multiprocessing_context="fork", timeout=20)
sums = list(loader)
assert len(sums) == 8 and all(s == s for s in sums), sums
print("DONE")
"""
    )
    _expect_ok(out)


# ---- racing rewriters ---------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["indices", "offsets"])
def test_rewriter_thread_during_forward_and_backward(target: str) -> None:
    # For 5 s a thread flips the array between a good and a bad version while the main thread
    # cycles forward, dense backward and sparse backward on it. Any success must equal the
    # good array's result (every bad value makes the whole call invalid, so no mix of the two
    # is valid); any failure must be ValueError with the rule's message.
    out = _run(
        """
import threading, time
import numpy as np, embag
embag.set_num_threads(2)
rng = np.random.default_rng(3)
W = rng.random((1000, 32), dtype=np.float32)
idx = rng.integers(0, 1000, 20_000)
off = np.arange(0, 20_000, 20)
g = rng.random((off.size, 32), dtype=np.float32)
TARGET = %r
arr = idx if TARGET == "indices" else off
good = arr.copy()
bad = np.full_like(arr, 10**12 if TARGET == "indices" else -(10**12))
if TARGET == "offsets":
    bad[0] = 0
def calls():
    return {
        "forward": lambda: embag.embedding_bag(W, idx, off, mode="sum"),
        "backward": lambda: embag.embedding_bag_backward(g, W, idx, off, mode="mean").grad_weight,
        "sparse": lambda: embag.embedding_bag_backward(g, W, idx, off, mode="sum", sparse=True),
    }
expected = {k: c() for k, c in calls().items()}
stop = False
def rewrite():
    while not stop:
        np.copyto(arr, bad)
        np.copyto(arr, good)
threading.Thread(target=rewrite, daemon=True).start()
counts = {"ok": 0, "refused": 0}
end = time.monotonic() + 5.0
while time.monotonic() < end:
    for name, call in calls().items():
        try:
            got = call()
        except ValueError as e:
            msg = str(e)
            assert ("of input takes value" in msg) if TARGET == "indices" else ("offsets" in msg), msg
            counts["refused"] += 1
            continue
        want = expected[name]
        if name == "sparse":
            assert np.array_equal(got.grad_weight_rows, want.grad_weight_rows), name
            assert np.array_equal(got.grad_weight, want.grad_weight), name
        else:
            assert np.array_equal(got, want), name
        counts["ok"] += 1
stop = True
print(counts)
print("DONE")
"""
        % target,
        timeout=60,
    )
    _expect_ok(out)


# ---- threads ------------------------------------------------------------------------------------


def test_set_num_threads_at_the_bound_under_an_address_space_limit() -> None:
    # 1024 threads need more address space (stacks) than the limit allows: the call must either
    # start them all or none (UnsupportedError), and then leave a process that still works.
    out = _run(
        """
import resource
import numpy as np, embag
embag.set_num_threads(2)
limit = embag.max_num_threads()
assert limit >= 1024
resource.setrlimit(resource.RLIMIT_AS, (3 << 30, resource.RLIM_INFINITY))
try:
    embag.set_num_threads(limit)
    outcome = "started all"
    assert embag.num_threads() == limit
    embag.set_num_threads(2)
except embag.UnsupportedError as e:
    outcome = "refused"
    assert "set_num_threads(%d)" % limit in str(e), str(e)
    assert embag.num_threads() == 2, embag.num_threads()
big = np.ones(50_000_000, dtype=np.uint8)   # the address space was given back
W = np.ones((100, 8), dtype=np.float32)
assert embag.embedding_bag(W, np.arange(100), np.arange(0, 100, 10), mode="sum").sum() == 800
for n, kind in ((limit + 1, ValueError), (2**70, ValueError), (0, ValueError), (True, ValueError),
                (1.5, ValueError)):
    try:
        embag.set_num_threads(n)
    except kind as e:
        assert repr(n) in str(e) and str(limit) in str(e), str(e)
    else:
        raise AssertionError(f"set_num_threads({n!r}) was accepted")
assert embag.num_threads() == 2
print(outcome)
print("DONE")
"""
    )
    _expect_ok(out)


def test_daemon_threads_inside_kernels_at_interpreter_exit() -> None:
    # Python 3.11 ends a daemon thread that asks for the GIL during finalization with
    # pthread_exit; embag's binding parks such a thread instead, so the exit is clean.
    out = _run(
        """
import threading, time
import numpy as np, embag
embag.set_num_threads(2)
W = np.random.rand(2000, 64).astype(np.float32)
idx = np.random.randint(0, 2000, 200_000)
off = np.arange(0, 200_000, 20)
def loop():
    while True:
        embag.embedding_bag(W, idx, off, mode="sum")
for _ in range(3):
    threading.Thread(target=loop, daemon=True).start()
time.sleep(0.5)
print("DONE")
"""
    )
    assert "terminate called" not in out.stderr, out.stderr
    _expect_ok(out)


# ---- overlap ------------------------------------------------------------------------------------

OVERLAP = "some elements of the input tensor and the written-to tensor refer to a single memory"


def _overlap_cases() -> list[tuple[str, Callable[[], dict[str, Any]], str]]:
    def base() -> dict[str, Any]:
        rng = np.random.default_rng(5)
        buf = rng.random((64, 8), dtype=np.float32)
        return {
            "buf": buf,
            "weight": buf,
            "input": rng.integers(0, 16, 96),
            "offsets": np.arange(0, 96, 6),
            "kwargs": {"mode": "sum"},
        }

    def out_is_table() -> dict[str, Any]:
        c = base()
        c["out"] = c["buf"][:16]
        return c

    def out_over_psw() -> dict[str, Any]:
        c = base()
        c["weight"] = c["buf"][:32]
        c["kwargs"]["per_sample_weights"] = c["buf"][40:].reshape(-1)[:96]
        c["out"] = c["buf"][40:56]
        return c

    def out_over_input() -> dict[str, Any]:
        c = base()
        raw = np.zeros(2 * 96, dtype=np.int64)
        raw[:96] = c["input"]
        c["input"] = raw[:96]
        c["keep"] = raw
        c["out"] = raw.view(np.float32)[: 16 * 8].reshape(16, 8)
        return c

    def out_over_offsets() -> dict[str, Any]:
        c = base()
        raw = np.zeros(64, dtype=np.int64)
        raw[:16] = c["offsets"]
        c["offsets"] = raw[:16]
        c["keep"] = raw
        c["out"] = raw.view(np.float32)[: 16 * 8].reshape(16, 8)
        return c

    def renormalised_table_under_out() -> dict[str, Any]:
        c = out_is_table()
        c["kwargs"]["max_norm"] = 0.5
        return c

    return [
        ("out is rows of the table", out_is_table, "overlaps weight"),
        ("out over per_sample_weights", out_over_psw, "overlaps per_sample_weights"),
        ("out over the indices", out_over_input, "overlaps input"),
        ("out over the offsets", out_over_offsets, "overlaps offsets"),
        ("out over a table renormalised by max_norm", renormalised_table_under_out, "overlaps"),
    ]


@pytest.mark.parametrize("name,make,names", _overlap_cases(), ids=[c[0] for c in _overlap_cases()])
def test_overlapping_out_is_refused_and_nothing_written(name: str, make: Any, names: str) -> None:
    c = make()
    snapshots = [a.copy() for a in (c["buf"], c["input"], c["offsets"], c.get("keep", c["buf"]))]
    with pytest.raises(ValueError) as error:
        embag.embedding_bag(c["weight"], c["input"], c["offsets"], out=c["out"], **c["kwargs"])
    assert OVERLAP in str(error.value) and names in str(error.value), str(error.value)
    after = [c["buf"], c["input"], c["offsets"], c.get("keep", c["buf"])]
    for before, now in zip(snapshots, after):
        np.testing.assert_array_equal(before, now)


def test_disjoint_columns_of_one_buffer_are_not_an_overlap() -> None:
    buf = np.random.default_rng(1).random((16, 8), dtype=np.float32)
    idx, off = np.arange(16) % 16, np.arange(0, 16, 4)
    expected = embag.embedding_bag(buf[:, :4].copy(), idx, off, mode="sum")
    out = embag.embedding_bag(buf[:, :4], idx, off, mode="sum", out=buf[:4, 4:])
    np.testing.assert_array_equal(out, expected)


# ---- read-only tables ---------------------------------------------------------------------------


def test_read_only_and_memory_mapped_tables(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    W = rng.random((50, 6), dtype=np.float32)
    idx, off = rng.integers(0, 50, 30), np.arange(0, 30, 3)
    expected = embag.embedding_bag(W, idx, off, mode="sum")
    g = rng.random((10, 6), dtype=np.float32)
    expected_grad = embag.embedding_bag_backward(g, W, idx, off, mode="sum").grad_weight
    frozen = W.copy()
    frozen.flags.writeable = False
    np.save(tmp_path / "table.npy", W)
    mapped = np.load(tmp_path / "table.npy", mmap_mode="r")
    for table in (frozen, mapped):
        np.testing.assert_array_equal(embag.embedding_bag(table, idx, off, mode="sum"), expected)
        grads = embag.embedding_bag_backward(g, table, idx, off, mode="sum")
        np.testing.assert_array_equal(grads.grad_weight, expected_grad)
        # read-only indices and offsets are fine too
        idx_ro, off_ro = idx.copy(), off.copy()
        idx_ro.flags.writeable = off_ro.flags.writeable = False
        np.testing.assert_array_equal(embag.embedding_bag(table, idx_ro, off_ro, mode="sum"), expected)
        # where the call would write it, the refusal names the argument and the reason
        with pytest.raises(ValueError, match=r"weight is read-only, but max_norm renormalises"):
            embag.embedding_bag(table, idx, off, mode="sum", max_norm=0.1)
    np.testing.assert_array_equal(mapped, W)
    out = np.zeros((10, 6), dtype=np.float32)
    out.flags.writeable = False
    with pytest.raises(ValueError, match=r"out is read-only, but the output is written into it"):
        embag.embedding_bag(W, idx, off, mode="sum", out=out)
    assert not out.any()


# ---- messages -----------------------------------------------------------------------------------

W8 = np.ones((8, 4), dtype=np.float32)
IDX = np.array([0, 1, 2, 3], dtype=np.int64)
OFF = np.array([0, 2], dtype=np.int64)

MESSAGES = [
    # (case, call, exception type, fragments the message must hold: argument and value)
    ("int8 indices", lambda: embag.embedding_bag(W8, IDX.astype(np.int8), OFF), ValueError, ["input", "int8"]),
    ("int16 indices", lambda: embag.embedding_bag(W8, IDX.astype(np.int16), OFF), ValueError, ["input", "int16"]),
    ("uint8 indices", lambda: embag.embedding_bag(W8, IDX.astype(np.uint8), OFF), ValueError, ["input", "uint8"]),
    ("uint64 indices", lambda: embag.embedding_bag(W8, IDX.astype(np.uint64), OFF), ValueError, ["input", "uint64"]),
    ("bool indices", lambda: embag.embedding_bag(W8, IDX.astype(bool), OFF), ValueError, ["input", "bool"]),
    ("int8 offsets", lambda: embag.embedding_bag(W8, IDX, OFF.astype(np.int8)), ValueError, ["offsets", "int8"]),
    ("complex table", lambda: embag.embedding_bag(W8.astype(np.complex64), IDX, OFF), ValueError, ["weight", "complex64"]),
    ("bool table", lambda: embag.embedding_bag(W8.astype(bool), IDX, OFF), ValueError, ["weight", "bool"]),
    ("mode=None", lambda: embag.embedding_bag(W8, IDX, OFF, mode=None), TypeError, ["mode", "None"]),
    ("mode='avg'", lambda: embag.embedding_bag(W8, IDX, OFF, mode="avg"), ValueError, ["sum, mean or max", "'avg'"]),
    ("padding_idx=2**63", lambda: embag.embedding_bag(W8, IDX, OFF, padding_idx=2**63), ValueError, ["padding_idx", "9223372036854775808", "-8 through 7"]),
    ("padding_idx=1.5", lambda: embag.embedding_bag(W8, IDX, OFF, padding_idx=1.5), TypeError, ["padding_idx", "1.5"]),
    ("padding_idx=True", lambda: embag.embedding_bag(W8, IDX, OFF, padding_idx=True), TypeError, ["padding_idx", "True"]),
    ("include_last_offset='yes'", lambda: embag.embedding_bag(W8, IDX, OFF, include_last_offset="yes"), TypeError, ["include_last_offset", "'yes'"]),
    ("max_norm='1'", lambda: embag.embedding_bag(W8, IDX, OFF, max_norm="1"), TypeError, ["max_norm", "'1'"]),
    ("norm_type='2'", lambda: embag.embedding_bag(W8, IDX, OFF, max_norm=1.0, norm_type="2"), TypeError, ["norm_type", "'2'"]),
    ("return_aux='no'", lambda: embag.embedding_bag(W8, IDX, OFF, return_aux="no"), TypeError, ["return_aux", "'no'"]),
    ("check_indices=1", lambda: embag.embedding_bag(W8, IDX, OFF, check_indices=1), TypeError, ["check_indices", "1"]),
    ("sparse='yes' (backward)", lambda: embag.embedding_bag_backward(np.ones((2, 4), np.float32), W8, IDX, OFF, sparse="yes"), TypeError, ["sparse", "'yes'"]),
    ("scale_grad_by_freq=None (backward)", lambda: embag.embedding_bag_backward(np.ones((2, 4), np.float32), W8, IDX, OFF, scale_grad_by_freq=None), TypeError, ["scale_grad_by_freq", "None"]),
    ("set_isa(123)", lambda: embag.set_isa(123), TypeError, ["isa", "123"]),
    ("set_num_threads(2**70)", lambda: embag.set_num_threads(2**70), ValueError, ["set_num_threads", str(2**70)]),
    ("W[::-1]", lambda: embag.embedding_bag(W8[::-1], IDX, OFF), ValueError, ["weight", "negative row stride -4", "backwards"]),
    ("2**40 bags", lambda: embag.embedding_bag(W8, np.empty((2**40, 0), np.int64)), ValueError, ["bags", str(2**40 + 1), "2147483647"]),
    ("a list as weight", lambda: embag.embedding_bag([[1.0]], IDX, OFF), TypeError, ["weight", "list"]),
]


@pytest.mark.parametrize("case,call,kind,fragments", MESSAGES, ids=[m[0] for m in MESSAGES])
def test_message_names_the_argument_and_value(case: str, call: Any, kind: type, fragments: list[str]) -> None:
    before = embag.num_threads()
    with pytest.raises(kind) as error:
        call()
    assert type(error.value) is kind or isinstance(error.value, kind)
    for fragment in fragments:
        assert fragment in str(error.value), f"{case}: {str(error.value)!r} lacks {fragment!r}"
    assert embag.num_threads() == before


def test_device_arrays_of_other_libraries_need_out() -> None:
    # embag allocates the outputs of non-torch arrays with NumPy on the host; an array that says
    # it lives on a GPU (DLPack device type 2, CUDA) gets UnsupportedError before anything runs,
    # not a device mismatch. (A stand-in: NumPy memory that reports a CUDA device.)
    class OnDevice:
        def __init__(self, array: np.ndarray) -> None:
            self.array, self.shape, self.dtype = array, array.shape, array.dtype

        def __dlpack__(self, **kwargs: Any) -> Any:
            return self.array.__dlpack__(**kwargs)

        def __dlpack_device__(self) -> tuple[int, int]:
            return (2, 0)

    with pytest.raises(embag.UnsupportedError, match=r"allocates the outputs of a OnDevice.*pass out="):
        embag.embedding_bag(OnDevice(W8), IDX, OFF)


def test_nan_max_norm_and_norm_type_renormalise_nothing() -> None:
    # PyTorch's result: every `norm > max_norm` comparison is false, so no row changes.
    W = np.random.default_rng(4).random((20, 3)) * 10
    idx, off = np.arange(20), np.array([0, 10])
    for max_norm, norm_type in ((float("nan"), 2.0), (1.0, float("nan"))):
        table = W.copy()
        out = embag.embedding_bag(table, idx, off, mode="sum", max_norm=max_norm, norm_type=norm_type)
        np.testing.assert_array_equal(table, W)
        np.testing.assert_array_equal(out, embag.embedding_bag(W, idx, off, mode="sum"))


# ---- torch --------------------------------------------------------------------------------------


def _torch() -> Any:
    return pytest.importorskip("torch", reason="needs PyTorch (make test-python runs it)")


def test_negated_views_are_read_resolved_and_refused_as_out() -> None:
    torch = _torch()
    import torch.nn.functional as F

    w = torch.randn(5, 1, dtype=torch.complex64).conj().imag
    assert w.is_neg()
    idx, off = torch.tensor([0, 1, 2, 4]), torch.tensor([0, 2])
    expected = F.embedding_bag(idx, w, off, mode="sum")
    torch.testing.assert_close(embag.embedding_bag(w, idx, off, mode="sum"), expected, rtol=0, atol=0)
    psw = torch.randn(4, dtype=torch.complex64).conj().imag
    torch.testing.assert_close(
        embag.embedding_bag(w, idx, off, mode="sum", per_sample_weights=psw),
        F.embedding_bag(idx, w, off, mode="sum", per_sample_weights=psw),
    )
    out = torch.zeros(2, 1, dtype=torch.complex64).conj().imag
    with pytest.raises(ValueError, match=r"out is a lazily negated or conjugated view"):
        embag.embedding_bag(w, idx, off, mode="sum", out=out)
    # and the weight under max_norm, which embag would write
    with pytest.raises(ValueError, match=r"weight is a lazily negated"):
        embag.embedding_bag(w, idx, off, mode="sum", max_norm=0.1)


def test_writes_through_the_array_api_bump_autograd_versions() -> None:
    torch = _torch()
    W = (torch.randn(6, 3) * 3).requires_grad_()
    z = (W * W).sum()
    version = W._version
    embag.embedding_bag(W, torch.tensor([0, 1, 2]), torch.tensor([0]), mode="sum", max_norm=1.0)
    assert W._version > version
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        z.backward()
    out = torch.zeros(1, 3, requires_grad=True).clone()
    y = (out * out).sum()
    embag.embedding_bag(torch.randn(6, 3), torch.tensor([0, 1]), torch.tensor([0]), mode="sum", out=out)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_meta_and_sparse_tensors_get_the_contract_types() -> None:
    torch = _torch()
    idx, off = torch.tensor([0, 1]), torch.tensor([0])
    with pytest.raises(embag.UnsupportedError, match=r"weight is on the meta device"):
        embag.embedding_bag(torch.empty(4, 2, device="meta"), idx, off)
    dense = torch.eye(4)
    for sparse, layout in ((dense.to_sparse(), "sparse_coo"), (dense.to_sparse_csr(), "sparse_csr")):
        with pytest.raises(TypeError, match=rf"weight must be a dense \(strided\) tensor.*{layout}"):
            embag.embedding_bag(sparse, idx, off)


def test_embag_torch_takes_tables_with_overlapping_rows() -> None:
    torch = _torch()
    import torch.nn.functional as F

    import embag.torch as et

    idx, off = torch.tensor([0, 3, 9, 2, 2]), torch.tensor([0, 2])
    base = torch.randn(1, 4)
    for table in (base.expand(10, 4), torch.randn(40).as_strided((10, 4), (2, 1))):
        torch.testing.assert_close(
            et.embedding_bag(idx, table, off, mode="sum"), F.embedding_bag(idx, table, off, mode="sum")
        )


def test_embag_torch_nan_norms_and_padding_idx_range() -> None:
    torch = _torch()
    import torch.nn.functional as F

    import embag.torch as et

    W = torch.randn(10, 3) * 5
    idx, off = torch.tensor([0, 3, 9, 2]), torch.tensor([0, 2])
    for max_norm, norm_type in ((float("nan"), 2.0), (1.0, float("nan"))):
        a, b = W.clone(), W.clone()
        got = et.embedding_bag(idx, a, off, max_norm=max_norm, norm_type=norm_type, mode="sum")
        want = F.embedding_bag(idx, b, off, max_norm=max_norm, norm_type=norm_type, mode="sum")
        torch.testing.assert_close(got, want, equal_nan=True)
        torch.testing.assert_close(a, b, equal_nan=True)
    with pytest.raises(ValueError, match=r"padding_idx must be within the number of embeddings, -10 through 9, but got 9223372036854775808"):
        et.embedding_bag(idx, W, off, padding_idx=2**63)
    with pytest.raises(ValueError, match=r"the number of bags \+ 1 is 1099511627777"):
        et.embedding_bag(torch.empty((2**40, 0), dtype=torch.int64), W)
