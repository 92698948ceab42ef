#!/usr/bin/env python3
"""Acceptance check: does `embag forward` agree with PyTorch on randomized calls?

This is what a new user would do: draw a random but well-formed
torch.nn.functional.embedding_bag call, write its tensors as .npy files, run the
embag command-line tool on them and compare the result with PyTorch's on a copy
of the same weight (including the table renormalised in place by max_norm).
A few malformed calls check that the CLI refuses them cleanly: non-zero exit
status (not a crash), a message, and no output file.

Run (needs a Python with numpy and torch, CPU only; see tools/record_golden.py):

    /tmp/torch-venv/bin/python tools/check_against_torch.py \
        --embag build/tools/embag --cases 200 --seed 1

    # Without embag: check that the case generator only draws calls PyTorch
    # accepts and that PyTorch agrees with the NumPy model of SEMANTICS.md:
    /tmp/torch-venv/bin/python tools/check_against_torch.py --torch-only --cases 500

The CLI interface exercised:
    embag forward --weight W.npy --input I.npy [--offsets O.npy]
        [--per-sample-weights P.npy] [--mode sum|mean|max] [--padding-idx N]
        [--max-norm X] [--norm-type P] [--include-last-offset]
        --output OUT.npy [--weight-output W2.npy]
Output dtype = weight dtype; --weight-output writes the renormalised table; the
input files are never modified.

Calls drawn deliberately stay inside what embag promises to match
(shared SEMANTICS.md): include_last_offset only with offsets[-1] == N, no NaN
inputs, no zero bags with N > 0 in 1-D form (PyTorch crashes there), no 2-D
input with zero columns (PyTorch errors there), max_norm never within a hair of
a row's norm (the renorm decision would be a coin toss between two correct
implementations).

The NumPy reference in this file (ref_*) is also used by tools/record_golden.py
to cross-check every recorded golden vector against the documented semantics.

Prints `N passed, M failed` and exits non-zero on any failure.
"""

import argparse
import math
import os
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
# ---------------------------------------------------------------------------
RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 1e-5, np.dtype(np.float16): 1e-2}


def rtol_of(dtype):
    return RTOL[np.dtype(dtype)]


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


def compare(actual, expected, bound, dtype, what):
    """Returns None when close, else a one-line description of the worst element."""
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
    a = [embag, "forward", "--weight", paths["weight"], "--input", paths["input"]]
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--embag", default="build/tools/embag", help="path of the embag CLI")
    ap.add_argument("--cases", type=int, default=200, help="number of random cases")
    ap.add_argument("--seed", type=int, default=0, help="seed of the case generator")
    ap.add_argument("--torch-only", action="store_true",
                    help="do not run embag: check PyTorch against the NumPy reference instead")
    ap.add_argument("--no-error-cases", action="store_true", help="skip the malformed calls")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per CLI run")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = ap.parse_args()

    embag = None
    if not args.torch_only:
        embag = os.path.abspath(args.embag)
        if not os.access(embag, os.X_OK):
            print(f"error: {args.embag} is not an executable file (build it, or pass --embag)",
                  file=sys.stderr)
            return 2

    import torch
    print(f"torch {torch.__version__}, numpy {np.__version__}, seed {args.seed}, "
          f"{args.cases} cases{' (torch-only)' if args.torch_only else ''}")
    rng = np.random.default_rng(args.seed)
    tmp = tempfile.mkdtemp(prefix="embag-check-")
    passed = failed = 0
    try:
        jobs = [(draw_case(rng, i), None) for i in range(args.cases)]
        if not args.no_error_cases:
            jobs += [(c, ok) for c, ok in error_cases(rng)]
        for c, torch_ok in jobs:
            try:
                if torch_ok is None:
                    problems = check_case(c, embag, tmp, args.timeout)
                else:
                    problems = check_error_case(c, torch_ok, embag, tmp, args.timeout)
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
