#!/usr/bin/env python3
"""Acceptance check: do `embag forward` and `embag backward` agree with PyTorch?

This is what a new user would do: draw a random but well-formed
torch.nn.functional.embedding_bag call, write its tensors as .npy files, run the
embag command-line tool on them and compare the result with PyTorch's on a copy
of the same weight (including the table renormalised in place by max_norm).
With --backward the calls are gradient calls instead: `embag backward` against
torch autograd (weight.requires_grad, F.embedding_bag(...).backward(G), and
per_sample_weights.grad).
A few malformed calls check that the CLI refuses them cleanly: non-zero exit
status (not a crash), a message, and no output file.

Run (needs a Python with numpy and torch, CPU only; see tools/record_golden.py):

    /tmp/torch-venv/bin/python tools/check_against_torch.py \
        --embag build/tools/embag --cases 200 --seed 1
    /tmp/torch-venv/bin/python tools/check_against_torch.py \
        --embag build/tools/embag --backward --cases 300 --seed 5
    # The aarch64 build, under user-mode QEMU:
    /tmp/torch-venv/bin/python tools/check_against_torch.py \
        --embag build-aarch64/tools/embag --emulator qemu-aarch64 --cases 200 --seed 3

    # Without embag: check that the case generator only draws calls PyTorch
    # accepts and that PyTorch agrees with the NumPy model of SEMANTICS.md:
    /tmp/torch-venv/bin/python tools/check_against_torch.py --torch-only --cases 500
    /tmp/torch-venv/bin/python tools/check_against_torch.py --torch-only --backward --cases 500

The CLI interface exercised:
    embag forward --weight W.npy --input I.npy [--offsets O.npy]
        [--per-sample-weights P.npy] [--mode sum|mean|max] [--padding-idx N]
        [--max-norm X] [--norm-type P] [--include-last-offset]
        --output OUT.npy [--weight-output W2.npy]
    embag backward --weight W.npy --input I.npy [--offsets O.npy]
        [--per-sample-weights P.npy] --grad-output G.npy [--mode sum|mean|max]
        [--padding-idx N] [--include-last-offset] [--scale-grad-by-freq] [--sparse]
        --grad-weight GW.npy [--grad-weight-rows ROWS.npy]
        [--grad-per-sample-weights GP.npy]
Output dtype = weight dtype; --weight-output writes the renormalised table; the
input files are never modified.  Backward: GW is (V, D), or with --sparse the U
value rows of ROWS (int64), the strictly ascending unique non-padding rows the
bags hold; GP has the input's shape.

Calls drawn deliberately stay inside what embag promises to match
(shared SEMANTICS.md): include_last_offset only with offsets[-1] == N, no NaN
inputs, no zero bags with N > 0 in 1-D form (PyTorch crashes there), no 2-D
input with zero columns (PyTorch errors there), max_norm never within a hair of
a row's norm (the renorm decision would be a coin toss between two correct
implementations).  Backward calls have no max_norm (the CLI takes the table as
the forward read it), draw scale_grad_by_freq and sparse only with sum/mean
(PyTorch and embag refuse them with max), and in max mode no column of the table
holds a value twice, so no bag has a tie for its maximum (which row a tie's
gradient goes to is pinned by SEMANTICS.md's worked example, not drawn here).

How the backward results are compared with PyTorch's (PyTorch 2.15; its
scale_grad_by_freq CPU bug pytorch#190063 is fixed there, so directly):
  dense                 GW == weight.grad
  sparse                ROWS/GW == weight.grad.coalesce() (PyTorch's sparse
                        gradient is uncoalesced, with duplicates)
  sparse + scale_grad   PyTorch refuses the combination: ROWS must be the
  _by_freq              referenced non-padding rows and GW PyTorch's *dense*
                        scale_grad_by_freq gradient at those rows (which must
                        be zero on every other row)
  per_sample_weights    GP == per_sample_weights.grad
Each gradient is also compared with the exact float64 NumPy model (ref_backward).

The NumPy reference in this file (ref_*) is also used by tools/record_golden.py
to cross-check every recorded golden vector against the documented semantics.

Prints `N passed, M failed` and exits non-zero on any failure.
"""

import argparse
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile

import numpy as np

# ---------------------------------------------------------------------------
# Tolerances.  Comparisons are |actual - expected| <= rtol * (|expected| + S)
# where S is the sum of the absolute values of the terms that made the element
# (the classic bound of a floating-point summation), so a sum that cancels to
# ~0 is still judged relative to the size of its terms.
#   float64: 1e-12.  PyTorch may use FMA and a vectorised (different) summation
#            order; embag sums left to right.  Both are within a few ulps * N.
#   float32: 1e-5, same reasons.
#   float16: 1e-2.  embag accumulates in float32 and rounds once (mean too);
#            PyTorch may round products / intermediate results to half (fp16
#            mean is rounded twice on CPU), so 1-2 half ulps (~1e-3) differ.
# max mode selects an element, so it is compared relative to |expected| only
# (it differs only if renormalisation rounded differently).
# Backward adds to that tolerance the worst-case error of the summations
# (accumulation_slack): PyTorch adds the n terms of a gradient element one after
# another in the table's dtype (float16 in float16), which can be off by
# (n-1)·u·S (u: unit roundoff), beyond rtol·S once a row is held by hundreds of
# positions, and float16 gradients of tiny terms sit on the subnormal grid.
# Against PyTorch the slack of both sides applies; against the exact float64
# model only embag's own (float32 accumulation for float16 tables and one
# rounding), where the plain rtol binds.
# ---------------------------------------------------------------------------
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5, np.dtype(np.float16): 1e-2}


def rtol_of(dtype):
    return RTOL[np.dtype(dtype)]


def accumulation_slack(n_terms, bound, acc_dtype):
    """Worst-case error of adding n_terms terms one after another in acc_dtype (Higham:
    (n-1)·u·Σ|term|, u the unit roundoff), plus one subnormal spacing per term (float16
    gradients of tiny terms live on the subnormal grid)."""
    fi = np.finfo(acc_dtype)
    n = np.asarray(n_terms, np.float64)
    return (np.maximum(n - 1, 0) * (float(fi.eps) / 2) * np.asarray(bound, np.float64)
            + n * float(fi.smallest_subnormal))


# ---------------------------------------------------------------------------
# NumPy reference of shared/SEMANTICS.md (forward, renorm, backward).
# ---------------------------------------------------------------------------

def bag_ranges(inp, offsets, include_last_offset):
    """Half-open position ranges [s, e) of each bag over the flattened input."""
    if inp.ndim == 2:
        B, L = inp.shape
        return [(b * L, (b + 1) * L) for b in range(B)]
    n = inp.shape[0]
    off = [int(x) for x in offsets]
    if include_last_offset:
        return [(off[b], off[b + 1]) for b in range(len(off) - 1)]
    return [(off[b], off[b + 1] if b + 1 < len(off) else n) for b in range(len(off))]


def norm_padding(padding_idx, V):
    if padding_idx is None:
        return None
    return padding_idx + V if padding_idx < 0 else padding_idx


def row_norm(row64, norm_type):
    a = np.abs(row64)
    if math.isinf(norm_type):
        return float(a.max()) if a.size else 0.0
    if norm_type == 0:
        return float(np.count_nonzero(a))
    return float(np.sum(a ** norm_type) ** (1.0 / norm_type))


def ref_renorm(weight, inp, offsets, include_last_offset, max_norm, norm_type):
    """Returns the table after renormalisation (a new array, weight's dtype)."""
    w = weight.copy()
    if max_norm is None:
        return w
    flat = inp.reshape(-1)
    rows = set()
    for s, e in bag_ranges(inp, offsets, include_last_offset):
        rows.update(int(r) for r in flat[s:e])
    # PyTorch scales in the table's arithmetic type: the double scale factor is
    # converted to float for float32 tables (half: float32 arithmetic).
    acc = np.float32 if w.dtype == np.float16 else w.dtype.type
    for r in sorted(rows):
        n = row_norm(w[r].astype(np.float64), norm_type)
        if n > max_norm:
            scale = acc(max_norm / (n + 1e-7))
            w[r] = (w[r].astype(acc) * scale).astype(w.dtype)
    return w


def ref_forward(weight_after, inp, offsets, include_last_offset, mode, padding_idx, psw):
    """Returns (out in weight dtype, absolute-term bound S (float64), argmax (B,D) or None)."""
    V, D = weight_after.shape
    P = norm_padding(padding_idx, V)
    flat = inp.reshape(-1).astype(np.int64)
    fpsw = None if psw is None else psw.reshape(-1).astype(np.float64)
    ranges = bag_ranges(inp, offsets, include_last_offset)
    B = len(ranges)
    w64 = weight_after.astype(np.float64)
    out = np.zeros((B, D), np.float64)
    bound = np.zeros((B, D), np.float64)
    argmax = np.full((B, D), -1, np.int64) if mode == "max" else None
    for b, (s, e) in enumerate(ranges):
        valid = [p for p in range(s, e) if flat[p] != P]
        if mode == "max":
            best = None
            for p in valid:
                row = weight_after[flat[p]]
                if best is None:
                    best = row.copy()
                    argmax[b] = flat[p]
                else:
                    gt = row > best
                    best[gt] = row[gt]
                    argmax[b][gt] = flat[p]
            if best is not None:
                out[b] = best.astype(np.float64)
                bound[b] = np.abs(out[b])
            continue
        for p in valid:
            term = w64[flat[p]] * (1.0 if fpsw is None else fpsw[p])
            out[b] += term
            bound[b] += np.abs(term)
        if mode == "mean" and valid:
            out[b] /= len(valid)
            bound[b] /= len(valid)
    return out.astype(weight_after.dtype), bound, argmax


def ref_backward(weight_after, inp, offsets, include_last_offset, mode, padding_idx, psw,
                 grad_out, scale_grad_by_freq=False):
    """Returns (grad_weight f64, bound, grad_psw f64 or None, bound or None)."""
    V, D = weight_after.shape
    P = norm_padding(padding_idx, V)
    flat = inp.reshape(-1).astype(np.int64)
    fpsw = None if psw is None else psw.reshape(-1).astype(np.float64)
    ranges = bag_ranges(inp, offsets, include_last_offset)
    g = grad_out.astype(np.float64)
    gw = np.zeros((V, D), np.float64)
    gwb = np.zeros((V, D), np.float64)
    count = np.zeros(V, np.int64)
    for s, e in ranges:
        for p in range(s, e):
            count[flat[p]] += 1
    scale = (1.0 / np.maximum(count, 1)) if scale_grad_by_freq else np.ones(V)
    if mode == "max":
        _, _, argmax = ref_forward(weight_after, inp, offsets, include_last_offset, mode,
                                   padding_idx, psw)
        for b in range(len(ranges)):
            for d in range(D):
                r = argmax[b][d]
                if r >= 0:
                    gw[r][d] += g[b][d]
                    gwb[r][d] += abs(g[b][d])
        return gw, gwb, None, None
    gp = None if psw is None else np.zeros(flat.shape[0], np.float64)
    gpb = None if psw is None else np.zeros(flat.shape[0], np.float64)
    w64 = weight_after.astype(np.float64)
    for b, (s, e) in enumerate(ranges):
        valid = [p for p in range(s, e) if flat[p] != P]
        for p in valid:
            r = flat[p]
            f = 1.0 if fpsw is None else fpsw[p]
            if mode == "mean":
                f /= len(valid)
            gw[r] += f * g[b] * scale[r]
            gwb[r] += np.abs(f * g[b] * scale[r])
            if gp is not None:
                gp[p] = float(np.dot(g[b], w64[r]))
                gpb[p] = float(np.dot(np.abs(g[b]), np.abs(w64[r])))
    if gp is not None:
        gp = gp.reshape(psw.shape)
        gpb = gpb.reshape(psw.shape)
    return gw, gwb, gp, gpb


def compare(actual, expected, bound, dtype, what, slack=None):
    """Returns None when close, else a one-line description of the worst element.  slack
    (broadcast to the shape) is added to the tolerance (see accumulation_slack)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    if actual.shape != expected.shape:
        return f"{what}: shape {actual.shape} != expected {expected.shape}"
    if actual.size == 0:
        return None
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    if np.isnan(a).any() or np.isnan(e).any():
        if not np.array_equal(np.isnan(a), np.isnan(e)):
            return f"{what}: NaN pattern differs"
        a = np.nan_to_num(a)
        e = np.nan_to_num(e)
    b = np.abs(e) if bound is None else np.asarray(bound, np.float64)
    tol = rtol_of(dtype) * (np.abs(e) + b)
    if slack is not None:
        tol = tol + np.broadcast_to(np.asarray(slack, np.float64), tol.shape)
    bad = np.abs(a - e) > tol
    if not bad.any():
        return None
    i = np.unravel_index(np.argmax(np.abs(a - e) - tol), a.shape)
    return (f"{what}: {int(bad.sum())} element(s) differ, worst at {tuple(int(x) for x in i)}: "
            f"got {a[i]!r}, expected {e[i]!r}, tolerance {tol[i]:.3g}")


# ---------------------------------------------------------------------------
# PyTorch side
# ---------------------------------------------------------------------------

def torch_forward(c):
    """Runs F.embedding_bag on copies; returns (output, weight after) as numpy."""
    import torch
    import torch.nn.functional as F
    w = torch.from_numpy(c["weight"].copy())
    kw = dict(mode=c["mode"], include_last_offset=c["include_last_offset"],
              padding_idx=c["padding_idx"])
    if c["max_norm"] is not None:
        kw["max_norm"] = c["max_norm"]
        kw["norm_type"] = c["norm_type"]
    if c["psw"] is not None:
        kw["per_sample_weights"] = torch.from_numpy(c["psw"].copy())
    offsets = None if c["offsets"] is None else torch.from_numpy(c["offsets"].copy())
    with torch.no_grad():
        out = F.embedding_bag(torch.from_numpy(c["input"].copy()), w, offsets, **kw)
    return out.numpy().copy(), w.numpy().copy()


# ---------------------------------------------------------------------------
# Random cases
# ---------------------------------------------------------------------------

DIMS = [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 40, 64]


def draw_layout(rng, V, P, idtype, large, maxn):
    """Random input (+ offsets) over V rows with padding row P (or None): duplicates, empty
    bags, all-padding bags, 1-D + offsets or 2-D.  Returns (input, offsets, include_last_offset);
    include_last_offset only with offsets[-1] == N."""
    def draw_indices(n):
        if n == 0:
            return np.zeros(0, np.int64)
        r = rng.random()
        if r < 0.3:   # duplicate-heavy: a small pool of rows
            pool = rng.integers(0, V, int(rng.integers(1, 4)))
            idx = rng.choice(pool, n)
        else:
            idx = rng.integers(0, V, n)
        if P is not None and rng.random() < 0.7:
            idx[rng.random(n) < 0.3] = P
        return idx

    two_d = rng.random() < 0.3
    include_last_offset = bool(rng.random() < 0.3)
    if two_d:
        B = int(rng.integers(0, 9)) if not large else int(rng.integers(1, 200))
        L = int(rng.integers(1, 9)) if not large else int(rng.integers(1, 20))
        inp = draw_indices(B * L).reshape(B, L).astype(idtype)
        if P is not None and B > 1 and rng.random() < 0.3:
            inp[0, :] = P  # an all-padding bag
        offsets = None
        N = B * L
    else:
        r = rng.random()
        if r < 0.05:
            N, B = 0, 0          # B = 0: offsets [] (or [0] with include_last_offset)
        elif r < 0.1:
            N, B = 0, int(rng.integers(1, 4))  # N = 0, only empty bags
        else:
            N = int(rng.integers(1, maxn + 1))
            B = int(rng.integers(1, max(2, N // 2) + 1)) if not large else int(rng.integers(1, 300))
        inp = draw_indices(N).astype(idtype)
        if B == 0:
            off = np.zeros(0, np.int64)
        else:
            # off[0] = 0; the rest sorted with repeats (empty bags), may equal N
            off = np.concatenate([[0], np.sort(rng.integers(0, N + 1, B - 1))]).astype(np.int64)
            if rng.random() < 0.2 and B > 2:
                off[-1] = N      # trailing empty bag
        if include_last_offset:
            off = np.concatenate([off, [N]]).astype(np.int64)
        if P is not None and B >= 1 and N > 0 and rng.random() < 0.3:
            s = int(off[0]); e = int(off[1]) if len(off) > 1 else N
            inp[s:e] = P         # an all-padding (or empty) first bag
        odtype = idtype if rng.random() < 0.85 else (np.int64 if idtype == np.int32 else np.int32)
        offsets = off.astype(odtype)
    return inp, offsets, include_last_offset


def draw_case(rng, i):
    """One random, well-formed embag forward call (as a dict)."""
    wdtype = rng.choice([np.float32, np.float64, np.float16], p=[0.45, 0.35, 0.20])
    idtype = rng.choice([np.int32, np.int64])
    large = rng.random() < 0.1
    if large:
        V = int(rng.integers(100, 5001))
        D = int(rng.choice([64, 100, 128, 255, 256]))
        maxn = 4000
    else:
        V = int(rng.integers(1, 51))
        D = int(rng.choice(DIMS))
        maxn = 60
    mode = str(rng.choice(["sum", "mean", "max"]))
    weight = rng.standard_normal((V, D)).astype(wdtype)

    padding_idx = None
    if rng.random() < 0.4:
        padding_idx = int(rng.integers(-V, V))
    P = norm_padding(padding_idx, V)

    inp, offsets, include_last_offset = draw_layout(rng, V, P, idtype, large, maxn)

    psw = None
    if mode == "sum" and rng.random() < 0.4:
        psw = rng.standard_normal(inp.shape).astype(wdtype)

    max_norm = None
    norm_type = 2.0
    if rng.random() < 0.3:
        norm_type = float(rng.choice([1.0, 2.0, 2.0, math.inf, 0.0, 3.0]))
        if norm_type == 0.0:
            weight[rng.random(weight.shape) < 0.3] = 0
        norms = sorted(row_norm(weight[r].astype(np.float64), norm_type) for r in range(V))
        margin = 1e-2 if wdtype == np.float16 else 1e-3
        for _ in range(100):
            if norm_type == 0.0:
                cand = float(rng.integers(0, D + 1)) + 0.5
            else:
                cand = float(np.quantile(norms, rng.random()) * rng.uniform(0.9, 1.1))
            if cand > 0 and all(abs(n - cand) > margin * cand for n in norms):
                max_norm = cand
                break
    return dict(name=f"case{i:04d}", weight=weight, input=inp, offsets=offsets, psw=psw,
                mode=mode, padding_idx=padding_idx, max_norm=max_norm, norm_type=norm_type,
                include_last_offset=include_last_offset,
                omit_mode=(mode == "mean" and rng.random() < 0.3),
                pass_norm_type=(max_norm is not None and (norm_type != 2.0 or rng.random() < 0.5))
                or rng.random() < 0.1)


def error_cases(rng):
    """Malformed calls: (case, whether PyTorch can safely be asked to confirm it errors)."""
    w = rng.standard_normal((5, 3)).astype(np.float32)

    def base(**kw):
        c = dict(weight=w, input=np.array([0, 1, 2, 3], np.int64), offsets=np.array([0, 2], np.int64),
                 psw=None, mode="sum", padding_idx=None, max_norm=None, norm_type=2.0,
                 include_last_offset=False, omit_mode=False, pass_norm_type=False)
        c.update(kw)
        return c
    return [
        (base(name="err_index_too_big", input=np.array([0, 1, 5, 3], np.int64)), True),
        (base(name="err_index_negative", input=np.array([0, -1, 2, 3], np.int32),
              offsets=np.array([0, 2], np.int32)), True),
        (base(name="err_index_oob_with_max_norm", input=np.array([0, 1, 7, 3], np.int64),
              max_norm=0.5), True),
        (base(name="err_offsets_first_not_zero", offsets=np.array([1, 2], np.int64)), True),
        (base(name="err_offsets_last_past_n", offsets=np.array([0, 5], np.int64)), True),
        # PyTorch crashes or returns garbage for decreasing offsets: not asked.
        (base(name="err_offsets_decreasing", input=np.array([0, 1, 2, 3, 4], np.int64),
              offsets=np.array([0, 3, 1], np.int64)), False),
        (base(name="err_psw_with_mean", mode="mean", psw=np.ones(4, np.float32)), True),
        (base(name="err_padding_idx_out_of_range", padding_idx=5), True),
        (base(name="err_2d_input_with_offsets", input=np.array([[0, 1], [2, 3]], np.int64)), True),
    ]


# ---------------------------------------------------------------------------
# Running the CLI
# ---------------------------------------------------------------------------

def write_case(c, d):
    paths = {"weight": os.path.join(d, "weight.npy"), "input": os.path.join(d, "input.npy")}
    np.save(paths["weight"], c["weight"])
    np.save(paths["input"], c["input"])
    if c["offsets"] is not None:
        paths["offsets"] = os.path.join(d, "offsets.npy")
        np.save(paths["offsets"], c["offsets"])
    if c["psw"] is not None:
        paths["psw"] = os.path.join(d, "psw.npy")
        np.save(paths["psw"], c["psw"])
    paths["output"] = os.path.join(d, "out.npy")
    paths["weight_output"] = os.path.join(d, "weight_out.npy")
    return paths


def cli_args(embag, c, paths):
    a = [*embag, "forward", "--weight", paths["weight"], "--input", paths["input"]]
    if "offsets" in paths:
        a += ["--offsets", paths["offsets"]]
    if "psw" in paths:
        a += ["--per-sample-weights", paths["psw"]]
    if not c["omit_mode"]:
        a += ["--mode", c["mode"]]
    if c["padding_idx"] is not None:
        a += ["--padding-idx", str(c["padding_idx"])]
    if c["max_norm"] is not None:
        a += ["--max-norm", repr(float(c["max_norm"]))]
    if c["pass_norm_type"]:
        a += ["--norm-type", repr(float(c["norm_type"]))]   # 'inf' for infinity
    if c["include_last_offset"]:
        a += ["--include-last-offset"]
    a += ["--output", paths["output"]]
    if c["max_norm"] is not None:
        a += ["--weight-output", paths["weight_output"]]
    return a


def describe(c):
    shape = "x".join(str(s) for s in c["input"].shape)
    parts = [f"mode={c['mode']}", f"weight={c['weight'].dtype}{list(c['weight'].shape)}",
             f"input={c['input'].dtype}[{shape}]"]
    if c["offsets"] is not None:
        parts.append(f"offsets={c['offsets'].dtype}[{len(c['offsets'])}]")
    if c["psw"] is not None:
        parts.append("psw")
    if c["padding_idx"] is not None:
        parts.append(f"padding_idx={c['padding_idx']}")
    if c["max_norm"] is not None:
        parts.append(f"max_norm={c['max_norm']!r} norm_type={c['norm_type']!r}")
    if c["include_last_offset"]:
        parts.append("include_last_offset")
    if c.get("backward"):
        if c["scale_grad_by_freq"]:
            parts.append("scale_grad_by_freq")
        if c["sparse"]:
            parts.append("sparse")
        if c["want_gp"]:
            parts.append("grad_psw")
        parts.append(f"grad_output={c['grad_output'].dtype}{list(c['grad_output'].shape)}")
    return " ".join(parts)


def file_bytes(p):
    with open(p, "rb") as f:
        return f.read()


def run_cli(args, timeout):
    try:
        r = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, "timed out"
    return r.returncode, (r.stdout + r.stderr).strip()


def check_case(c, embag, tmp, timeout):
    """Returns a list of problems (empty when the case passes)."""
    problems = []
    t_out, t_w = torch_forward(c)
    if embag is None:
        # --torch-only: PyTorch against the NumPy model of SEMANTICS.md.
        w_ref = ref_renorm(c["weight"], c["input"], c["offsets"], c["include_last_offset"],
                           c["max_norm"], c["norm_type"])
        p = compare(t_w, w_ref, None, c["weight"].dtype, "torch renormed table vs reference")
        if p:
            problems.append(p)
        out_ref, bound, _ = ref_forward(t_w, c["input"], c["offsets"], c["include_last_offset"],
                                        c["mode"], c["padding_idx"], c["psw"])
        p = compare(t_out, out_ref, None if c["mode"] == "max" else bound,
                    c["weight"].dtype, "torch output vs reference")
        if p:
            problems.append(p)
        return problems

    d = os.path.join(tmp, c["name"])
    os.makedirs(d)
    paths = write_case(c, d)
    before = {k: file_bytes(v) for k, v in paths.items() if os.path.exists(v)}
    args = cli_args(embag, c, paths)
    rc, msg = run_cli(args, timeout)
    if rc != 0:
        return [f"CLI exit status {rc}: {msg[-500:]}", "command: " + " ".join(args)]
    for k, v in before.items():
        if file_bytes(paths[k]) != v:
            problems.append(f"the CLI modified its input file {os.path.basename(paths[k])}")
    if not os.path.exists(paths["output"]):
        return problems + ["no output file written"]
    out = np.load(paths["output"])
    B = len(bag_ranges(c["input"], c["offsets"], c["include_last_offset"]))
    if out.dtype != c["weight"].dtype:
        problems.append(f"output dtype {out.dtype} != weight dtype {c['weight'].dtype}")
    if out.shape != (B, c["weight"].shape[1]):
        problems.append(f"output shape {out.shape} != {(B, c['weight'].shape[1])}")
        return problems
    # Bound from the sizes of the terms, computed on PyTorch's renormed table.
    _, bound, _ = ref_forward(t_w, c["input"], c["offsets"], c["include_last_offset"],
                              c["mode"], c["padding_idx"], c["psw"])
    p = compare(out, t_out, None if c["mode"] == "max" else bound, c["weight"].dtype,
                "output vs torch")
    if p:
        problems.append(p)
    if c["max_norm"] is not None:
        if not os.path.exists(paths["weight_output"]):
            problems.append("no --weight-output file written")
        else:
            w2 = np.load(paths["weight_output"])
            if w2.dtype != c["weight"].dtype:
                problems.append(f"weight-output dtype {w2.dtype} != {c['weight'].dtype}")
            p = compare(w2, t_w, None, c["weight"].dtype, "renormalised table vs torch")
            if p:
                problems.append(p)
    if problems:
        problems.append("command: " + " ".join(args))
    return problems


def check_error_case(c, torch_ok, embag, tmp, timeout):
    problems = []
    if embag is None:
        if torch_ok:
            try:
                torch_forward(c)
                problems.append("PyTorch accepted this malformed call")
            except Exception:  # noqa: BLE001  (any PyTorch error is the expected outcome)
                pass
        return problems
    d = os.path.join(tmp, c["name"])
    os.makedirs(d)
    paths = write_case(c, d)
    args = cli_args(embag, c, paths)
    if c["max_norm"] is not None and "--weight-output" not in args:
        args += ["--weight-output", paths["weight_output"]]
    rc, msg = run_cli(args, timeout)
    if rc is None:
        problems.append("CLI timed out")
    elif rc == 0:
        problems.append("CLI exited 0 on a malformed call")
    elif rc < 0:
        problems.append(f"CLI died of signal {-rc} instead of exiting with an error")
    if rc is not None and not msg:
        problems.append("CLI printed no message")
    for k in ("output", "weight_output"):
        if os.path.exists(paths[k]):
            problems.append(f"CLI created {os.path.basename(paths[k])} although the call failed")
    if problems:
        problems.append("command: " + " ".join(args))
    return problems


# ---------------------------------------------------------------------------
# Backward (--backward): `embag backward` against torch autograd
# ---------------------------------------------------------------------------

BACKWARD_DIMS = [1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 32, 33, 40, 63, 64, 65, 100, 127, 128,
                 129, 255, 256]


def distinct_columns(rng, w):
    """Redraws entries until no column holds a value twice: no max ties, whatever the bags."""
    for d in range(w.shape[1]):
        col = w[:, d]
        while True:
            _, first = np.unique(col, return_index=True)
            if len(first) == len(col):
                break
            again = np.ones(len(col), bool)
            again[first] = False
            col[again] = rng.standard_normal(int(again.sum())).astype(w.dtype)
    return w


def draw_backward_case(rng, i):
    """One random, well-formed embag backward call (as a dict)."""
    wdtype = rng.choice([np.float32, np.float64, np.float16], p=[0.45, 0.35, 0.20])
    idtype = rng.choice([np.int32, np.int64])
    large = rng.random() < 0.1
    if large:
        V = int(rng.integers(100, 5001))
        D = int(rng.choice([64, 100, 127, 128, 129, 200, 255, 256]))
        maxn = 4000
    else:
        V = int(rng.integers(1, 51))
        D = int(rng.choice(BACKWARD_DIMS))
        maxn = 60
    mode = str(rng.choice(["sum", "mean", "max"]))
    padding_idx = None
    if rng.random() < 0.4:
        padding_idx = int(rng.integers(-V, V))
    P = norm_padding(padding_idx, V)
    inp, offsets, include_last_offset = draw_layout(rng, V, P, idtype, large, maxn)
    weight = rng.standard_normal((V, D)).astype(wdtype)
    if mode == "max":
        weight = distinct_columns(rng, weight)
    psw = None
    if mode == "sum" and rng.random() < 0.4:
        psw = rng.standard_normal(inp.shape).astype(wdtype)
    B = len(bag_ranges(inp, offsets, include_last_offset))
    grad_output = rng.standard_normal((B, D)).astype(wdtype)
    return dict(name=f"bwd{i:04d}", weight=weight, input=inp, offsets=offsets, psw=psw,
                grad_output=grad_output, mode=mode, padding_idx=padding_idx,
                max_norm=None, norm_type=2.0, include_last_offset=include_last_offset,
                scale_grad_by_freq=bool(mode != "max" and rng.random() < 0.35),
                sparse=bool(mode != "max" and rng.random() < 0.35),
                want_gp=bool(psw is not None and rng.random() < 0.8),
                omit_mode=(mode == "mean" and rng.random() < 0.3), backward=True)


def backward_error_cases(rng):
    """Malformed backward calls: (case, whether PyTorch can be asked to confirm it errors)."""
    w = rng.standard_normal((5, 3)).astype(np.float32)
    g = rng.standard_normal((2, 3)).astype(np.float32)

    def base(**kw):
        c = dict(weight=w, input=np.array([0, 1, 2, 3], np.int64),
                 offsets=np.array([0, 2], np.int64), psw=None, grad_output=g, mode="sum",
                 padding_idx=None, max_norm=None, norm_type=2.0, include_last_offset=False,
                 scale_grad_by_freq=False, sparse=False, want_gp=False, omit_mode=False,
                 backward=True)
        c.update(kw)
        return c
    return [
        (base(name="err_bwd_sparse_with_max", mode="max", sparse=True), True),
        (base(name="err_bwd_scale_grad_with_max", mode="max", scale_grad_by_freq=True), True),
        (base(name="err_bwd_index_too_big", input=np.array([0, 1, 5, 3], np.int64)), True),
        (base(name="err_bwd_index_too_big_sparse_psw", input=np.array([0, 1, 5, 3], np.int64),
              psw=np.ones(4, np.float32), want_gp=True, sparse=True), True),
        (base(name="err_bwd_index_negative_max", mode="max",
              input=np.array([0, -1, 2, 3], np.int32), offsets=np.array([0, 2], np.int32)), True),
        (base(name="err_bwd_grad_output_extra_row",
              grad_output=rng.standard_normal((3, 3)).astype(np.float32)), True),
        (base(name="err_bwd_grad_output_wrong_width", mode="mean",
              grad_output=rng.standard_normal((2, 4)).astype(np.float32)), True),
        (base(name="err_bwd_grad_output_1d",
              grad_output=rng.standard_normal(6).astype(np.float32)), True),
        # PyTorch's autograd silently casts a gradient of another dtype: not asked.
        (base(name="err_bwd_grad_output_wrong_dtype", psw=np.ones(4, np.float32), want_gp=True,
              grad_output=g.astype(np.float64)), False),
    ]


def valid_counts(c):
    """(V) int64: the non-padding positions inside bags holding each row, i.e. the number of
    terms added into each row of the weight gradient (an upper bound for max)."""
    V = c["weight"].shape[0]
    flat = c["input"].reshape(-1).astype(np.int64)
    pos = [p for s, e in bag_ranges(c["input"], c["offsets"], c["include_last_offset"])
           for p in range(s, e)]
    counts = np.bincount(flat[pos], minlength=V) if pos else np.zeros(V, np.int64)
    P = norm_padding(c["padding_idx"], V)
    if P is not None:
        counts[P] = 0
    return counts


def referenced_rows(c):
    """Ascending unique non-padding rows the bags hold: the rows of a coalesced sparse grad."""
    flat = c["input"].reshape(-1).astype(np.int64)
    pos = [p for s, e in bag_ranges(c["input"], c["offsets"], c["include_last_offset"])
           for p in range(s, e)]
    rows = np.unique(flat[pos]) if pos else np.zeros(0, np.int64)
    P = norm_padding(c["padding_idx"], c["weight"].shape[0])
    return rows[rows != P].astype(np.int64)


def torch_backward(c, scale_grad_by_freq, sparse):
    """F.embedding_bag(...).backward(G) on copies.  Returns (dense grad weight or None,
    (coalesced rows, values) or None, grad of per_sample_weights or None) as numpy."""
    import torch
    import torch.nn.functional as F
    w = torch.from_numpy(c["weight"].copy()).requires_grad_(True)
    kw = dict(mode=c["mode"], include_last_offset=c["include_last_offset"],
              padding_idx=c["padding_idx"], scale_grad_by_freq=scale_grad_by_freq,
              sparse=sparse)
    psw = None
    if c["psw"] is not None:
        psw = torch.from_numpy(c["psw"].copy()).requires_grad_(True)
        kw["per_sample_weights"] = psw
    offsets = None if c["offsets"] is None else torch.from_numpy(c["offsets"].copy())
    out = F.embedding_bag(torch.from_numpy(c["input"].copy()), w, offsets, **kw)
    out.backward(torch.from_numpy(c["grad_output"].copy()))
    gp = None
    if psw is not None:
        gp = np.zeros_like(c["psw"]) if psw.grad is None else psw.grad.numpy().copy()
    if w.grad is None:
        gw = torch.zeros_like(w)
        if sparse:
            gw = gw.to_sparse()
    else:
        gw = w.grad
    if gw.is_sparse:
        gw = gw.coalesce()
        return None, (gw.indices()[0].numpy().copy(), gw.values().numpy().copy()), gp
    return gw.numpy().copy(), None, gp


def write_backward_case(c, d):
    paths = {"weight": os.path.join(d, "weight.npy"), "input": os.path.join(d, "input.npy"),
             "grad_output": os.path.join(d, "grad_output.npy")}
    np.save(paths["weight"], c["weight"])
    np.save(paths["input"], c["input"])
    np.save(paths["grad_output"], c["grad_output"])
    if c["offsets"] is not None:
        paths["offsets"] = os.path.join(d, "offsets.npy")
        np.save(paths["offsets"], c["offsets"])
    if c["psw"] is not None:
        paths["psw"] = os.path.join(d, "psw.npy")
        np.save(paths["psw"], c["psw"])
    outputs = {"grad_weight": os.path.join(d, "grad_weight.npy"),
               "grad_weight_rows": os.path.join(d, "grad_weight_rows.npy"),
               "grad_psw": os.path.join(d, "grad_psw.npy")}
    return paths, outputs


def backward_cli_args(embag, c, paths, outputs):
    a = [*embag, "backward", "--weight", paths["weight"], "--input", paths["input"]]
    if "offsets" in paths:
        a += ["--offsets", paths["offsets"]]
    if "psw" in paths:
        a += ["--per-sample-weights", paths["psw"]]
    a += ["--grad-output", paths["grad_output"]]
    if not c["omit_mode"]:
        a += ["--mode", c["mode"]]
    if c["padding_idx"] is not None:
        a += ["--padding-idx", str(c["padding_idx"])]
    if c["include_last_offset"]:
        a += ["--include-last-offset"]
    if c["scale_grad_by_freq"]:
        a += ["--scale-grad-by-freq"]
    if c["sparse"]:
        a += ["--sparse"]
    a += ["--grad-weight", outputs["grad_weight"]]
    if c["sparse"]:
        a += ["--grad-weight-rows", outputs["grad_weight_rows"]]
    if c["want_gp"]:
        a += ["--grad-per-sample-weights", outputs["grad_psw"]]
    return a


def expected_gradients(c):
    """PyTorch's gradients, in the form embag writes them: (grad weight (V, D) or (U, D),
    its rows (U) or None, grad psw or None).  Sparse + scale_grad_by_freq (PyTorch refuses)
    is PyTorch's dense scale_grad_by_freq gradient restricted to the referenced rows, checked
    to be zero on every other row."""
    problems = []
    sgf, sparse = c["scale_grad_by_freq"], c["sparse"]
    dense, sp, gp = torch_backward(c, sgf, sparse and not sgf)
    if not sparse:
        return dense, None, gp, problems
    rows = referenced_rows(c)
    if sp is not None:
        t_rows, t_vals = sp
        if not np.array_equal(t_rows, rows):
            problems.append(f"torch's coalesced rows {t_rows.tolist()} != the referenced "
                            f"non-padding rows {rows.tolist()}")
            return None, None, gp, problems
        return t_vals, rows, gp, problems
    others = np.ones(dense.shape[0], bool)
    others[rows] = False
    if np.any(dense[others] != 0):
        problems.append("torch's dense scale_grad_by_freq gradient is non-zero on a row no bag "
                        "holds (or the padding row)")
    return dense[rows], rows, gp, problems


def check_backward_case(c, embag, tmp, timeout):
    """Returns a list of problems (empty when the case passes)."""
    dt = c["weight"].dtype
    exp_gw, exp_rows, exp_gp, problems = expected_gradients(c)
    if problems:
        return problems
    gw_ref, gwb, gp_ref, gpb = ref_backward(c["weight"], c["input"], c["offsets"],
                                            c["include_last_offset"], c["mode"],
                                            c["padding_idx"], c["psw"], c["grad_output"],
                                            c["scale_grad_by_freq"])
    n_gw = valid_counts(c)[:, None]
    if exp_rows is not None:
        gw_ref, gwb, n_gw = gw_ref[exp_rows], gwb[exp_rows], n_gw[exp_rows]
    n_gp = c["weight"].shape[1]
    # PyTorch accumulates in the table's dtype; embag in float32 for float16 tables, then
    # rounds once to the table's dtype (which, on float16's subnormal grid, is off by up to
    # half a spacing whatever the relative tolerance says).
    acc = np.float32 if dt == np.float16 else dt
    final_rounding = float(np.finfo(dt).smallest_subnormal)
    torch_gw_slack = accumulation_slack(n_gw, gwb, dt)
    model_gw_slack = accumulation_slack(n_gw, gwb, acc) + final_rounding
    embag_gw_slack = torch_gw_slack + model_gw_slack
    torch_gp_slack = embag_gp_slack = model_gp_slack = None
    if gp_ref is not None:
        torch_gp_slack = accumulation_slack(n_gp, gpb, dt)
        model_gp_slack = accumulation_slack(n_gp, gpb, acc) + final_rounding
        embag_gp_slack = torch_gp_slack + model_gp_slack
    if embag is None:
        # --torch-only: PyTorch against the NumPy model of SEMANTICS.md.
        for p in (compare(exp_gw, gw_ref, gwb, dt, "torch grad_weight vs reference",
                          torch_gw_slack),
                  None if exp_gp is None else
                  compare(exp_gp, gp_ref, gpb, dt, "torch grad_per_sample_weights vs reference",
                          torch_gp_slack)):
            if p:
                problems.append(p)
        return problems

    d = os.path.join(tmp, c["name"])
    os.makedirs(d)
    paths, outputs = write_backward_case(c, d)
    before = {k: file_bytes(v) for k, v in paths.items()}
    args = backward_cli_args(embag, c, paths, outputs)
    rc, msg = run_cli(args, timeout)
    if rc != 0:
        return [f"CLI exit status {rc}: {msg[-500:]}", "command: " + " ".join(args)]
    for k, v in before.items():
        if file_bytes(paths[k]) != v:
            problems.append(f"the CLI modified its input file {os.path.basename(paths[k])}")
    wanted = {"grad_weight": True, "grad_weight_rows": c["sparse"], "grad_psw": c["want_gp"]}
    for k, want in wanted.items():
        if want and not os.path.exists(outputs[k]):
            problems.append(f"no {os.path.basename(outputs[k])} written")
        if not want and os.path.exists(outputs[k]):
            problems.append(f"{os.path.basename(outputs[k])} written although not asked for")
    if problems:
        return problems + ["command: " + " ".join(args)]

    gw = np.load(outputs["grad_weight"])
    if gw.dtype != dt:
        problems.append(f"grad_weight dtype {gw.dtype} != weight dtype {dt}")
    if c["sparse"]:
        rows = np.load(outputs["grad_weight_rows"])
        if rows.dtype != np.int64:
            problems.append(f"grad_weight_rows dtype {rows.dtype} != int64")
        if not np.array_equal(rows, exp_rows):
            problems.append(f"grad_weight_rows {rows.tolist()} != expected {exp_rows.tolist()}")
    # Against PyTorch (allowing for both accumulations), and against the exact float64 model
    # allowing only for embag's own (float32 for float16 tables: the plain tolerance binds).
    what = "grad_weight" + (" values" if c["sparse"] else "")
    for p in (compare(gw, exp_gw, gwb, dt, what + " vs torch", embag_gw_slack),
              compare(gw, gw_ref, gwb, dt, what + " vs NumPy model", model_gw_slack)):
        if p:
            problems.append(p)
    if c["want_gp"]:
        gp = np.load(outputs["grad_psw"])
        if gp.dtype != dt:
            problems.append(f"grad_per_sample_weights dtype {gp.dtype} != weight dtype {dt}")
        for p in (compare(gp, exp_gp, gpb, dt, "grad_per_sample_weights vs torch",
                          embag_gp_slack),
                  compare(gp, gp_ref, gpb, dt, "grad_per_sample_weights vs NumPy model",
                          model_gp_slack)):
            if p:
                problems.append(p)
    if problems:
        problems.append("command: " + " ".join(args))
    return problems


def check_backward_error_case(c, torch_ok, embag, tmp, timeout):
    problems = []
    if embag is None:
        if torch_ok:
            try:
                torch_backward(c, c["scale_grad_by_freq"], c["sparse"])
                problems.append("PyTorch accepted this malformed call")
            except Exception:  # noqa: BLE001  (any PyTorch error is the expected outcome)
                pass
        return problems
    d = os.path.join(tmp, c["name"])
    os.makedirs(d)
    paths, outputs = write_backward_case(c, d)
    args = backward_cli_args(embag, c, paths, outputs)
    rc, msg = run_cli(args, timeout)
    if rc is None:
        problems.append("CLI timed out")
    elif rc == 0:
        problems.append("CLI exited 0 on a malformed call")
    elif rc < 0:
        problems.append(f"CLI died of signal {-rc} instead of exiting with an error")
    if rc is not None and not msg:
        problems.append("CLI printed no message")
    for p in outputs.values():
        if os.path.exists(p):
            problems.append(f"CLI created {os.path.basename(p)} although the call failed")
    if problems:
        problems.append("command: " + " ".join(args))
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embag", default="build/tools/embag", help="path of the embag CLI")
    ap.add_argument("--emulator", default="",
                    help="command that runs the CLI when it is built for another architecture, "
                         "e.g. 'qemu-aarch64' for build-aarch64/tools/embag")
    ap.add_argument("--cases", type=int, default=200, help="number of random cases")
    ap.add_argument("--seed", type=int, default=0, help="seed of the case generator")
    ap.add_argument("--backward", action="store_true",
                    help="check `embag backward` against torch autograd instead of forward")
    ap.add_argument("--torch-only", action="store_true",
                    help="do not run embag: check PyTorch against the NumPy reference instead")
    ap.add_argument("--no-error-cases", action="store_true", help="skip the malformed calls")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per CLI run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = ap.parse_args()

    embag = None
    if not args.torch_only:
        embag = shlex.split(args.emulator) + [os.path.abspath(args.embag)]
        if not os.access(embag[-1], os.X_OK):
            print(f"error: {args.embag} is not an executable file (build it, or pass --embag)",
                  file=sys.stderr)
            return 2

    import torch
    print(f"torch {torch.__version__}, numpy {np.__version__}, seed {args.seed}, "
          f"{args.cases} {'backward' if args.backward else 'forward'} cases"
          f"{' (torch-only)' if args.torch_only else ''}")
    rng = np.random.default_rng(args.seed)
    tmp = tempfile.mkdtemp(prefix="embag-check-")
    passed = failed = 0
    try:
        draw, errors = ((draw_backward_case, backward_error_cases) if args.backward
                        else (draw_case, error_cases))
        check, check_error = ((check_backward_case, check_backward_error_case) if args.backward
                              else (check_case, check_error_case))
        jobs = [(draw(rng, i), None) for i in range(args.cases)]
        if not args.no_error_cases:
            jobs += [(c, ok) for c, ok in errors(rng)]
        for c, torch_ok in jobs:
            try:
                if torch_ok is None:
                    problems = check(c, embag, tmp, args.timeout)
                else:
                    problems = check_error(c, torch_ok, embag, tmp, args.timeout)
            except Exception as e:  # noqa: BLE001  (report and go on)
                problems = [f"{type(e).__name__}: {e}"]
            if problems:
                failed += 1
                print(f"FAIL {c['name']}: {describe(c)}")
                for p in problems:
                    print(f"    {p}")
            else:
                passed += 1
                if args.verbose:
                    print(f"ok   {c['name']}: {describe(c)}")
    finally:
        if args.keep or failed:
            print(f"case files kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
