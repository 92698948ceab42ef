#!/usr/bin/env python3
"""Records golden vectors of torch.nn.functional.embedding_bag from real PyTorch.

What it is for: embag's tests compare against these files, so they run without
PyTorch.  Every case is a small, fixed-seed call; PyTorch's forward output, the
table it renormalised in place (max_norm) and the autograd gradients are stored
as .npy files, one directory per case, under the directory given (tests/golden).
Before writing, every case is cross-checked against the NumPy model of
shared SEMANTICS.md in tools/check_against_torch.py (and the worked examples
against the exact numbers printed there); a disagreement aborts the recording,
so only calls on which PyTorch and embag's documented semantics agree are
stored.

How to run (CPU-only PyTorch in a throwaway venv, never committed):

    python3 -m venv /tmp/torch-venv
    /tmp/torch-venv/bin/pip install torch numpy
    /tmp/torch-venv/bin/python tools/record_golden.py tests/golden

Re-running with the same PyTorch rewrites identical files (fixed seeds; each
case has its own seed derived from its name, so adding a case changes no other).

Layout of tests/golden/<case>/ (see the README.md this script writes there):
    meta.txt                     key=value lines: mode, padding_idx (absent when
                                 None), max_norm (absent when None), norm_type,
                                 include_last_offset, scale_grad_by_freq (only
                                 when 1), torch_version, note
    weight.npy                   (V, D) table before the call
    input.npy                    int32/int64, 1-D (N) or 2-D (B, L)
    offsets.npy                  only when offsets are passed
    per_sample_weights.npy       only when used (weight dtype)
    output.npy                   (B, D) forward output
    weight_after.npy             only with max_norm: table after in-place renorm
    grad_output.npy              (B, D) upstream gradient      \
    grad_weight.npy              (V, D) dense weight gradient   } absent for max_norm
    grad_per_sample_weights.npy  when per_sample_weights used  /
"""

import math
import os
import shutil
import sys
import zlib

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import check_against_torch as ref  # noqa: E402  (NumPy model of SEMANTICS.md)

f16, f32, f64 = np.float16, np.float32, np.float64
i32, i64 = np.int32, np.int64

CASES = []


def case(name, note, weight, input, offsets=None, mode="mean", padding_idx=None,
         max_norm=None, norm_type=2.0, include_last_offset=False, psw=None,
         grad_output=None, scale_grad_by_freq=False, expect=None, optional=False):
    """Declares one case.  expect: exact values from SEMANTICS.md to assert.
    optional: skip (with a warning) instead of aborting when PyTorch disagrees
    with the documented semantics (used for a known, since-fixed PyTorch bug)."""
    CASES.append(dict(name=name, note=note, weight=weight, input=input, offsets=offsets,
                      mode=mode, padding_idx=padding_idx, max_norm=max_norm,
                      norm_type=float(norm_type), include_last_offset=include_last_offset,
                      psw=psw, grad_output=grad_output, scale_grad_by_freq=scale_grad_by_freq,
                      expect=expect or {}, optional=optional))


def rng_for(name):
    return np.random.default_rng(zlib.crc32(name.encode()))


def rand_offsets(rng, N, B, empties=True):
    """B offsets starting at 0, non-decreasing, in [0, N]; repeats give empty bags."""
    if B == 0:
        return np.zeros(0, i64)
    rest = np.sort(rng.integers(0, N + 1, B - 1)) if empties else \
        np.sort(rng.choice(np.arange(1, N), B - 1, replace=False))
    return np.concatenate([[0], rest]).astype(i64)


def randn(rng, shape, dtype):
    return rng.standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------
# 1. Worked examples of SEMANTICS.md (float64), asserted exactly.
# ---------------------------------------------------------------------------
EX_W = np.array([[1, 2], [3, 4], [5, 6], [7, 8], [9, 10]], f64)
EX_IDX = np.array([3, 1, 1, 1, 4, 0], i64)
EX_OFF = np.array([0, 0, 3, 3, 6], i64)
EX_G = np.array([[99, 99], [1, 2], [99, 99], [3, 4], [99, 99]], f64)
EX_SUM = np.array([[0, 0], [13, 16], [0, 0], [13, 16], [0, 0]], f64)
EX_SUM_G = np.array([[3, 4], [5, 8], [0, 0], [1, 2], [3, 4]], f64)


def worked_examples():
    common = dict(weight=EX_W, input=EX_IDX, offsets=EX_OFF, grad_output=EX_G)
    case("ex_sum", "SEMANTICS.md worked example: sum", mode="sum",
         expect=dict(output=EX_SUM, grad_weight=EX_SUM_G), **common)
    case("ex_mean", "SEMANTICS.md worked example: mean (sum / 3)", mode="mean",
         expect=dict(output=EX_SUM / 3, grad_weight=EX_SUM_G / 3), **common)
    case("ex_max", "SEMANTICS.md worked example: max", mode="max",
         expect=dict(output=np.array([[0, 0], [7, 8], [0, 0], [9, 10], [0, 0]], f64),
                     grad_weight=np.array([[0, 0], [0, 0], [0, 0], [1, 2], [3, 4]], f64)),
         **common)
    case("ex_sum_pad1", "SEMANTICS.md worked example: sum, padding_idx=1", mode="sum",
         padding_idx=1,
         expect=dict(output=np.array([[0, 0], [7, 8], [0, 0], [10, 12], [0, 0]], f64),
                     grad_weight=np.array([[3, 4], [0, 0], [0, 0], [1, 2], [3, 4]], f64)),
         **common)
    case("ex_mean_pad1", "SEMANTICS.md worked example: mean, padding_idx=1", mode="mean",
         padding_idx=1,
         expect=dict(output=np.array([[0, 0], [7, 8], [0, 0], [5, 6], [0, 0]], f64),
                     grad_weight=np.array([[1.5, 2], [0, 0], [0, 0], [1, 2], [1.5, 2]], f64)),
         **common)
    case("ex_sum_psw", "SEMANTICS.md worked example: sum, per_sample_weights=[1..6]",
         mode="sum", psw=np.arange(1, 7).astype(f64),
         expect=dict(output=np.array([[0, 0], [22, 28], [0, 0], [63, 78], [0, 0]], f64),
                     grad_weight=np.array([[18, 24], [17, 26], [0, 0], [1, 2], [15, 20]], f64),
                     grad_per_sample_weights=np.array([23, 11, 11, 25, 67, 11], f64)),
         **common)
    case("ex_max_ties", "SEMANTICS.md max ties: first occurrence wins, argmax [1,2]",
         weight=np.array([[1, 5], [1, 5], [0, 7]], f64), input=np.array([1, 0, 2], i64),
         offsets=np.array([0], i64), mode="max", grad_output=np.array([[10, 20]], f64),
         expect=dict(output=np.array([[1, 7]], f64),
                     grad_weight=np.array([[0, 0], [10, 0], [0, 20]], f64)))
    case("ex_max_norm_f32", "SEMANTICS.md max_norm=2 float32 example: [3,4]->[1.2,1.6], "
         "[10,0]->[2,0], [0.3,0.4] untouched",
         weight=np.array([[3, 4], [10, 0], [0.3, 0.4]], f32), input=np.array([0, 1, 2], i64),
         offsets=np.array([0], i64), mode="sum", max_norm=2.0,
         expect=dict(weight_after=np.array([[1.2000000477, 1.6000000238], [2, 0],
                                            [0.3, 0.4]], f32)))
    # PyTorch CPU before 2.15 divided by the wrong count (pytorch#190063); 2.15.0
    # is fixed.  Recorded only when the PyTorch used agrees with SEMANTICS.md.
    case("ex_sgbf_mixed_counts", "SEMANTICS.md scale_grad_by_freq example: idx=[1,1,3], ones; "
         "rows 1 and 3 both get 1 (needs PyTorch with pytorch#190063 fixed)",
         weight=np.ones((4, 3), f64), input=np.array([1, 1, 3], i64), offsets=np.array([0], i64),
         mode="sum", grad_output=np.ones((1, 3), f64), scale_grad_by_freq=True,
         expect=dict(grad_weight=np.array([[0, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 1]], f64)),
         optional=True)


# ---------------------------------------------------------------------------
# 2. Randomized cases (random normals: well-conditioned for tolerances).
# ---------------------------------------------------------------------------

def randomized():
    tag = {f16: "f16", f32: "f32", f64: "f64", i32: "i32", i64: "i64"}

    # mode x weight dtype x index dtype; empty bags and duplicates included.
    for mode in ("sum", "mean", "max"):
        for wd in (f32, f64):
            for idt in (i32, i64):
                n = f"grid_{mode}_{tag[wd]}_{tag[idt]}"
                r = rng_for(n)
                V, D, N, B = 20, 8, 30, 7
                case(n, f"grid: {mode}, {tag[wd]} table, {tag[idt]} indices, 1-D with offsets",
                     weight=randn(r, (V, D), wd), input=r.integers(0, V, N).astype(idt),
                     offsets=rand_offsets(r, N, B).astype(idt), mode=mode)

    # odd and tiny D
    for n, mode, wd, D in (("d1_sum_f64", "sum", f64, 1), ("d1_max_f32", "max", f32, 1),
                           ("d3_max_f64", "max", f64, 3), ("d3_mean_f32", "mean", f32, 3),
                           ("d33_mean_f64", "mean", f64, 33), ("d33_sum_f32", "sum", f32, 33),
                           ("d33_max_f32", "max", f32, 33)):
        r = rng_for(n)
        V, N, B = 15, 25, 6
        case(n, f"odd embedding dim D={D} ({mode})", weight=randn(r, (V, D), wd),
             input=r.integers(0, V, N).astype(i64), offsets=rand_offsets(r, N, B), mode=mode)

    # empty bags: leading, middle, repeated and trailing (off == N)
    for mode in ("sum", "mean", "max"):
        n = f"empty_bags_{mode}"
        r = rng_for(n)
        V, D, N = 12, 5, 9
        case(n, "empty bags from repeated offsets: leading, middle, trailing (offsets[-1] == N)",
             weight=randn(r, (V, D), f32), input=r.integers(0, V, N).astype(i64),
             offsets=np.array([0, 0, 0, 4, 4, 9, 9, 9], i64), mode=mode)

    # duplicates: a few rows used many times within and across bags
    for mode in ("sum", "mean", "max"):
        n = f"dups_{mode}"
        r = rng_for(n)
        V, D, N, B = 10, 6, 40, 5
        case(n, "heavy duplicates: 3 distinct rows, 40 positions (gradient accumulation)",
             weight=randn(r, (V, D), f64), input=r.choice([2, 5, 7], N).astype(i64),
             offsets=rand_offsets(r, N, B, empties=False), mode=mode)

    # all-padding bags (and mixed, empty) with padding_idx
    for mode in ("sum", "mean", "max"):
        n = f"allpad_{mode}"
        r = rng_for(n)
        V, D, P = 9, 4, 2
        inp = np.array([P, P, 1, P, 3, P, P, P, 4, 5, P, 0], i64)
        case(n, "padding_idx=2 with all-padding bags (output 0, mean n_b=0), mixed and empty bags",
             weight=randn(r, (V, D), f64), input=inp,
             offsets=np.array([0, 2, 5, 5, 8, 10], i64), mode=mode, padding_idx=P)

    # negative padding_idx wraps: -1 is the last row, -V is row 0
    for mode in ("sum", "mean", "max"):
        n = f"negpad_m1_{mode}"
        r = rng_for(n)
        V, D, N = 8, 5, 24
        inp = r.integers(0, V, N).astype(i32)
        inp[:3] = V - 1
        case(n, "padding_idx=-1 (wraps to V-1); first bag all padding", weight=randn(r, (V, D), f32),
             input=inp, offsets=np.array([0, 3, 10, 17], i32), mode=mode, padding_idx=-1)
    n = "negpad_mV_sum_psw"
    r = rng_for(n)
    V, D, N = 6, 3, 15
    inp = r.integers(0, V, N).astype(i64)
    case(n, "padding_idx=-V (wraps to row 0) with per_sample_weights (grad psw 0 at padding)",
         weight=randn(r, (V, D), f64), input=inp, offsets=np.array([0, 5, 9], i64), mode="sum",
         padding_idx=-V, psw=randn(r, N, f64))

    # 2-D input (B, L), no offsets
    for mode, idt, wd in (("sum", i64, f64), ("mean", i32, f32), ("max", i64, f32)):
        n = f"input2d_{mode}"
        r = rng_for(n)
        V, D, B, L = 14, 7, 5, 4
        case(n, f"2-D input (B={B}, L={L}) without offsets ({mode})", weight=randn(r, (V, D), wd),
             input=r.integers(0, V, (B, L)).astype(idt), mode=mode)
    n = "input2d_mean_pad"
    r = rng_for(n)
    V, D, B, L = 10, 4, 4, 3
    inp = r.integers(0, V, (B, L)).astype(i64)
    inp[1, :] = 6
    inp[2, 0] = 6
    case(n, "2-D input with padding_idx=6: an all-padding row and a partly padded row",
         weight=randn(r, (V, D), f64), input=inp, mode="mean", padding_idx=6)
    n = "input2d_sum_psw"
    r = rng_for(n)
    V, D, B, L = 11, 5, 3, 6
    case(n, "2-D input with 2-D per_sample_weights", weight=randn(r, (V, D), f32),
         input=r.integers(0, V, (B, L)).astype(i32), mode="sum", psw=randn(r, (B, L), f32))
    n = "input2d_ilo_ignored_max"
    r = rng_for(n)
    V, D, B, L = 9, 3, 4, 2
    case(n, "2-D input with include_last_offset=True, which is ignored for 2-D (B rows = B bags)",
         weight=randn(r, (V, D), f64), input=r.integers(0, V, (B, L)).astype(i64), mode="max",
         include_last_offset=True)

    # include_last_offset with offsets[-1] == N
    for mode, idt in (("sum", i64), ("mean", i32), ("max", i64)):
        n = f"ilo_{mode}"
        r = rng_for(n)
        V, D, N, B = 16, 6, 20, 6
        off = np.concatenate([rand_offsets(r, N, B), [N]]).astype(idt)
        case(n, "include_last_offset=True with offsets[-1] == N (len(offsets)-1 bags), empty bags",
             weight=randn(r, (V, D), f32), input=r.integers(0, V, N).astype(idt), offsets=off,
             mode=mode, include_last_offset=True)
    n = "ilo_sum_psw_pad"
    r = rng_for(n)
    V, D, N = 10, 4, 12
    inp = r.integers(0, V, N).astype(i64)
    inp[[1, 6]] = 3
    case(n, "include_last_offset + per_sample_weights + padding_idx=3", weight=randn(r, (V, D), f64),
         input=inp, offsets=np.array([0, 4, 4, 9, 12], i64), mode="sum", padding_idx=3,
         include_last_offset=True, psw=randn(r, N, f64))

    # per_sample_weights with sum
    for wd, idt in ((f32, i32), (f64, i64)):
        n = f"psw_sum_{tag[wd]}"
        r = rng_for(n)
        V, D, N, B = 18, 9, 26, 5
        case(n, "per_sample_weights with mode=sum (incl. duplicates, empty bag)",
             weight=randn(r, (V, D), wd), input=r.integers(0, V, N).astype(idt),
             offsets=rand_offsets(r, N, B).astype(idt), mode="sum", psw=randn(r, N, wd))

    # max_norm with each norm_type PyTorch accepts (no backward: renorm mutates)
    for nt, mode, wd in ((1.0, "sum", f32), (2.0, "mean", f64), (math.inf, "max", f32),
                         (0.0, "sum", f64), (3.0, "mean", f32), (2.0, "max", f32),
                         (1.0, "max", f64), (math.inf, "sum", f64)):
        n = f"maxnorm_p{'inf' if math.isinf(nt) else int(nt)}_{mode}_{tag[wd]}"
        r = rng_for(n)
        V, D, N, B = 20, 6, 30, 6
        w = randn(r, (V, D), wd)
        if nt == 0.0:
            w[r.random((V, D)) < 0.4] = 0     # count of non-zeros varies per row
            max_norm = 3.5
        else:
            norms = [ref.row_norm(w[i].astype(f64), nt) for i in range(V)]
            max_norm = float(np.round(np.median(norms), 3))
        # rows 0..14 referenced (duplicates), 15..19 never: they keep their norm
        case(n, f"max_norm={max_norm} norm_type={nt}: referenced rows above it renormed once, "
             "unreferenced rows untouched", weight=w, input=r.integers(0, 15, N).astype(i64),
             offsets=rand_offsets(r, N, B), mode=mode, max_norm=max_norm, norm_type=nt)
    n = "maxnorm_p2_pad_sum"
    r = rng_for(n)
    V, D = 8, 4
    w = randn(r, (V, D), f32) * 3
    case(n, "max_norm with padding_idx=4: the padding row is referenced, so it is renormed too "
         "(but never summed)", weight=w.astype(f32), input=np.array([4, 0, 1, 4, 2, 3, 4], i64),
         offsets=np.array([0, 3, 4], i64), mode="sum", max_norm=2.5, padding_idx=4)
    n = "maxnorm_p2_2d_mean"
    r = rng_for(n)
    V, D, B, L = 12, 5, 3, 4
    w = randn(r, (V, D), f64)
    case(n, "max_norm with 2-D input", weight=w, input=r.integers(0, V, (B, L)).astype(i32),
         mode="mean", max_norm=1.75)
    n = "maxnorm_p2_ilo_max"
    r = rng_for(n)
    V, D, N = 12, 5, 14
    case(n, "max_norm with include_last_offset (offsets[-1] == N)", weight=randn(r, (V, D), f32),
         input=r.integers(0, V, N).astype(i64), offsets=np.array([0, 3, 3, 10, 14], i64),
         mode="max", max_norm=1.9, include_last_offset=True)
    n = "maxnorm_p2_psw_sum"
    r = rng_for(n)
    V, D, N = 10, 3, 12
    case(n, "max_norm with per_sample_weights", weight=randn(r, (V, D), f64),
         input=r.integers(0, V, N).astype(i64), offsets=np.array([0, 5, 8], i64), mode="sum",
         max_norm=1.4, psw=randn(r, N, f64))
    n = "maxnorm_p2_sum_f16"
    r = rng_for(n)
    V, D, N = 10, 4, 12
    w = randn(r, (V, D), f32) * 2
    w[:, 0] = np.where(np.arange(V) % 2 == 0, 4.0, 0.1)   # norms far from max_norm=2.5
    w[:, 1:] *= 0.2
    case(n, "max_norm on a float16 table (norms kept far from max_norm)", weight=w.astype(f16),
         input=r.integers(0, V, N).astype(i64), offsets=np.array([0, 6], i64), mode="sum",
         max_norm=2.5)

    # float16 tables: sum and max only (fp16 mean is rounded twice by PyTorch CPU)
    for n, mode, extra in (("f16_sum", "sum", {}), ("f16_max", "max", {}),
                           ("f16_sum_psw", "sum", {"psw": True}),
                           ("f16_sum_ilo_i32", "sum", {"ilo": True}),
                           ("f16_max_pad", "max", {"pad": True})):
        r = rng_for(n)
        V, D, N, B = 16, 10, 24, 5
        inp = r.integers(0, V, N).astype(i32 if extra.get("ilo") else i64)
        off = rand_offsets(r, N, B)
        if extra.get("ilo"):
            off = np.concatenate([off, [N]])
        off = off.astype(inp.dtype)
        pad = None
        if extra.get("pad"):
            pad = 5
            inp[r.random(N) < 0.3] = pad
        case(n, f"float16 table, {mode}" + (", per_sample_weights" if extra.get("psw") else "")
             + (", include_last_offset" if extra.get("ilo") else "")
             + (", padding_idx=5" if pad is not None else ""),
             weight=randn(r, (V, D), f16), input=inp, offsets=off, mode=mode, padding_idx=pad,
             include_last_offset=bool(extra.get("ilo")),
             psw=(r.uniform(0.5, 2.0, N).astype(f16) if extra.get("psw") else None))
    n = "f16_max_2d"
    r = rng_for(n)
    case(n, "float16 table, max, 2-D input", weight=randn(r, (13, 8), f16),
         input=r.integers(0, 13, (4, 5)).astype(i64), mode="max")

    # zero bags (B = 0) and zero indices (N = 0); PyTorch accepts these forms.
    # (1-D offsets=[] with N > 0 crashes PyTorch: not recorded.  2-D (B, 0) errors.)
    for mode in ("sum", "mean", "max"):
        n = f"b0_offsets_empty_{mode}"
        r = rng_for(n)
        case(n, "B = 0: N = 0, offsets = [] -> (0, D) output, zero gradient",
             weight=randn(r, (5, 3), f32), input=np.zeros(0, i64), offsets=np.zeros(0, i64),
             mode=mode)
    n = "b0_ilo_offsets_0_sum"
    r = rng_for(n)
    case(n, "B = 0: N = 0, offsets = [0] with include_last_offset", weight=randn(r, (5, 3), f64),
         input=np.zeros(0, i64), offsets=np.zeros(1, i64), mode="sum", include_last_offset=True)
    n = "b0_input2d_max"
    r = rng_for(n)
    case(n, "B = 0: 2-D input of shape (0, 3)", weight=randn(r, (5, 3), f64),
         input=np.zeros((0, 3), i32), mode="max")
    for mode in ("mean", "max"):
        n = f"n0_empty_bags_{mode}"
        r = rng_for(n)
        case(n, "N = 0 with offsets [0, 0, 0]: three empty bags -> zeros",
             weight=randn(r, (4, 2), f32), input=np.zeros(0, i64), offsets=np.zeros(3, i64),
             mode=mode)

    # scale_grad_by_freq where every referenced row has the same count (the
    # pytorch#190063 quirk of older versions cannot show), padding included.
    n = "sgbf_equal_counts_sum"
    r = rng_for(n)
    V, D = 9, 4
    inp = np.array([1, 3, 5, 3, 1, 7, 5, 7, 2, 2], i64)          # every row twice
    case(n, "scale_grad_by_freq, every referenced row appears twice", weight=randn(r, (V, D), f64),
         input=inp, offsets=np.array([0, 3, 3, 7], i64), mode="sum", scale_grad_by_freq=True)
    n = "sgbf_equal_counts_mean_pad"
    r = rng_for(n)
    V, D = 8, 3
    inp = np.array([0, 4, 6, 6, 4, 0, 2, 2, 0, 4, 6, 2], i64)    # every row three times
    case(n, "scale_grad_by_freq, mean, padding_idx=2, every referenced row three times",
         weight=randn(r, (V, D), f32), input=inp, offsets=np.array([0, 2, 2, 7], i64),
         mode="mean", padding_idx=2, scale_grad_by_freq=True)
    n = "sgbf_equal_counts_psw_2d"
    r = rng_for(n)
    V, D = 7, 5
    inp = np.array([[1, 4, 5], [5, 1, 4]], i32)                  # every row twice
    case(n, "scale_grad_by_freq with 2-D input and per_sample_weights, all counts 2",
         weight=randn(r, (V, D), f64), input=inp, mode="sum", psw=randn(r, (2, 3), f64),
         scale_grad_by_freq=True)

    # mixed index / offset dtypes (PyTorch accepts them)
    n = "mixed_i32_input_i64_offsets_sum"
    r = rng_for(n)
    V, D, N = 10, 4, 14
    case(n, "int32 input with int64 offsets (PyTorch accepts mixed index dtypes)",
         weight=randn(r, (V, D), f32), input=r.integers(0, V, N).astype(i32),
         offsets=np.array([0, 5, 5, 11], i64), mode="sum")

    # largest allowed size, one per mode
    for mode in ("sum", "mean", "max"):
        n = f"big_{mode}"
        r = rng_for(n)
        V, D, N, B = 50, 40, 60, 9
        case(n, f"largest golden size V=50 D=40 N=60 ({mode}), padding_idx=7",
             weight=randn(r, (V, D), f32), input=r.integers(0, V, N).astype(i64),
             offsets=rand_offsets(r, N, B), mode=mode, padding_idx=7)

    # single bag holding everything / every bag of size one
    n = "one_bag_all_mean"
    r = rng_for(n)
    case(n, "one bag with every position", weight=randn(r, (20, 6), f64),
         input=r.integers(0, 20, 50).astype(i64), offsets=np.array([0], i64), mode="mean")
    n = "bags_of_one_max"
    r = rng_for(n)
    case(n, "every bag holds exactly one index", weight=randn(r, (20, 6), f32),
         input=r.integers(0, 20, 10).astype(i32), offsets=np.arange(10).astype(i32), mode="max")


# ---------------------------------------------------------------------------
# Recording
# ---------------------------------------------------------------------------

def bags_of(c):
    return len(ref.bag_ranges(c["input"], c["offsets"], c["include_last_offset"]))


def run_torch(c):
    """Returns dict of arrays PyTorch produced for case c."""
    backward = c["max_norm"] is None
    w = torch.from_numpy(c["weight"].copy()).requires_grad_(backward)
    psw = None
    if c["psw"] is not None:
        psw = torch.from_numpy(c["psw"].copy()).requires_grad_(backward)
    kw = dict(mode=c["mode"], include_last_offset=c["include_last_offset"],
              padding_idx=c["padding_idx"], per_sample_weights=psw,
              scale_grad_by_freq=c["scale_grad_by_freq"])
    if c["max_norm"] is not None:
        kw.update(max_norm=c["max_norm"], norm_type=c["norm_type"])
    offsets = None if c["offsets"] is None else torch.from_numpy(c["offsets"].copy())
    out = F.embedding_bag(torch.from_numpy(c["input"].copy()), w, offsets, **kw)
    res = {"output": out.detach().numpy().copy()}
    if not backward:
        res["weight_after"] = w.detach().numpy().copy()
        return res
    g = c["grad_output"]
    if g is None:
        g = randn(rng_for(c["name"] + "/grad"), (bags_of(c), c["weight"].shape[1]),
                  c["weight"].dtype)
    c["grad_output"] = g
    out.backward(torch.from_numpy(g.copy()))
    res["grad_output"] = g
    res["grad_weight"] = (w.grad if w.grad is not None else torch.zeros_like(w)).numpy().copy()
    if psw is not None:
        res["grad_per_sample_weights"] = (psw.grad if psw.grad is not None
                                          else torch.zeros_like(psw)).numpy().copy()
    return res


def cross_check(c, res):
    """Problems where PyTorch's results disagree with SEMANTICS.md (model or worked numbers)."""
    problems = []
    dt = c["weight"].dtype
    w_after = ref.ref_renorm(c["weight"], c["input"], c["offsets"], c["include_last_offset"],
                             c["max_norm"], c["norm_type"])
    if "weight_after" in res:
        p = ref.compare(res["weight_after"], w_after, None, dt, "weight_after vs model")
        if p:
            problems.append(p)
        w_after = res["weight_after"]
    out, bound, _ = ref.ref_forward(w_after, c["input"], c["offsets"], c["include_last_offset"],
                                    c["mode"], c["padding_idx"], c["psw"])
    if res["output"].dtype != dt:
        problems.append(f"output dtype {res['output'].dtype} != {dt}")
    p = ref.compare(res["output"], out, None if c["mode"] == "max" else bound, dt,
                    "output vs model")
    if p:
        problems.append(p)
    if "grad_weight" in res:
        gw, gwb, gp, gpb = ref.ref_backward(w_after, c["input"], c["offsets"],
                                            c["include_last_offset"], c["mode"],
                                            c["padding_idx"], c["psw"], res["grad_output"],
                                            c["scale_grad_by_freq"])
        p = ref.compare(res["grad_weight"], gw, gwb, dt, "grad_weight vs model")
        if p:
            problems.append(p)
        if gp is not None:
            p = ref.compare(res["grad_per_sample_weights"], gp, gpb, dt,
                            "grad_per_sample_weights vs model")
            if p:
                problems.append(p)
    for k, v in c["expect"].items():
        got = res[k]
        # "Exactly" up to the last ulp: SEMANTICS.md writes e.g. mean's gradient as
        # "sum's / 3", while it is computed per term (g/3 + g/3 + g/3).
        rt = {np.dtype(f64): 1e-15, np.dtype(f32): 1e-9, np.dtype(f16): 1e-3}[np.dtype(dt)]
        ok = got.shape == v.shape and np.allclose(got.astype(f64), v.astype(f64), rtol=rt, atol=0)
        if not ok:
            problems.append(f"{k} {got.tolist()} != SEMANTICS.md {v.tolist()}")
    return problems


def meta_lines(c):
    lines = [f"mode={c['mode']}"]
    if c["padding_idx"] is not None:
        lines.append(f"padding_idx={c['padding_idx']}")
    if c["max_norm"] is not None:
        lines.append(f"max_norm={float(c['max_norm'])!r}")
    lines.append(f"norm_type={float(c['norm_type'])!r}")
    lines.append(f"include_last_offset={int(c['include_last_offset'])}")
    if c["scale_grad_by_freq"]:
        lines.append("scale_grad_by_freq=1")
    lines.append(f"torch_version={torch.__version__}")
    assert "\n" not in c["note"]
    lines.append(f"note={c['note']}")
    return lines


def write_case(c, res, outdir):
    d = os.path.join(outdir, c["name"])
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    with open(os.path.join(d, "meta.txt"), "w") as f:
        f.write("\n".join(meta_lines(c)) + "\n")
    np.save(os.path.join(d, "weight.npy"), c["weight"])
    np.save(os.path.join(d, "input.npy"), c["input"])
    if c["offsets"] is not None:
        np.save(os.path.join(d, "offsets.npy"), c["offsets"])
    if c["psw"] is not None:
        np.save(os.path.join(d, "per_sample_weights.npy"), c["psw"])
    for k in ("output", "weight_after", "grad_output", "grad_weight", "grad_per_sample_weights"):
        if k in res:
            np.save(os.path.join(d, k + ".npy"), np.ascontiguousarray(res[k]))


README = """# Golden vectors from PyTorch

Written by `tools/record_golden.py` (do not edit by hand; re-run it:
`/tmp/torch-venv/bin/python tools/record_golden.py tests/golden`).
Recorded with torch {torch_version} on CPU, numpy {numpy_version}.

One directory per case:

| file | content |
|---|---|
| `meta.txt` | `key=value` lines: `mode` (sum/mean/max), `padding_idx` (absent when None; may be negative), `max_norm` (absent when None), `norm_type` (always; `inf` for infinity), `include_last_offset` (0/1), `scale_grad_by_freq=1` (only when set), `torch_version`, `note` |
| `weight.npy` | `(V, D)` table before the call: float64, float32 or float16 |
| `input.npy` | int32 or int64, 1-D `(N)` or 2-D `(B, L)` |
| `offsets.npy` | only when offsets are passed (int32 or int64) |
| `per_sample_weights.npy` | only when used; input's shape, weight's dtype |
| `output.npy` | `(B, D)` PyTorch forward output, weight's dtype |
| `weight_after.npy` | only with `max_norm`: the table after PyTorch renormalised it in place |
| `grad_output.npy` | `(B, D)` upstream gradient fed to autograd (absent for max_norm cases) |
| `grad_weight.npy` | `(V, D)` dense weight gradient from autograd (absent for max_norm cases) |
| `grad_per_sample_weights.npy` | per-sample-weight gradient, when per_sample_weights are used |

Every case was cross-checked against the NumPy model of `SEMANTICS.md` before it was
written (tools/check_against_torch.py: float64 1e-12, float32 1e-5, float16 1e-2 relative
to the summed magnitude of the terms); the worked examples match SEMANTICS.md exactly.
Suggested tolerances when comparing embag: float64 1e-12, float32 1e-5, float16 1e-2
(relative to the magnitude of the summed terms; max mode and renormalised tables
relative to the value). float16 sums: embag accumulates in float32 and rounds once.

Deliberately not recorded (embag differs from PyTorch by choice, or PyTorch is broken):
`include_last_offset` with `offsets[-1] < N`; NaN inputs to max; float16 mean (PyTorch
CPU rounds twice); 1-D input with empty offsets and `N > 0` (PyTorch segfaults or returns
garbage); decreasing offsets; 2-D input with `L = 0` (PyTorch errors); backward of
max_norm calls; scale_grad_by_freq with unequal counts except the SEMANTICS.md example,
recorded only from a PyTorch with pytorch#190063 fixed (2.15.0 is).

## Cases

| case | note |
|---|---|
{rows}
"""


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    torch.manual_seed(0)
    worked_examples()
    randomized()
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names)), "duplicate case names"
    recorded, failed = [], 0
    for c in CASES:
        V, D = c["weight"].shape
        assert V <= 50 and D <= 40 and c["input"].size <= 60, c["name"]
        try:
            res = run_torch(c)
            problems = cross_check(c, res)
        except Exception as e:  # noqa: BLE001
            problems = [f"PyTorch raised {type(e).__name__}: {e}"]
        if problems:
            kind = "SKIP" if c["optional"] else "FAIL"
            print(f"{kind} {c['name']}:")
            for p in problems:
                print("    " + p)
            if not c["optional"]:
                failed += 1
            continue
        write_case(c, res, outdir)
        recorded.append(c)
        print(f"ok   {c['name']}")
    stale = sorted(d for d in os.listdir(outdir)
                   if os.path.isfile(os.path.join(outdir, d, "meta.txt"))
                   and d not in {c["name"] for c in recorded})
    for d in stale:
        print(f"removing stale case directory {d}")
        shutil.rmtree(os.path.join(outdir, d))
    rows = "\n".join(f"| `{c['name']}` | {c['note'].replace('|', '/')} |" for c in recorded)
    with open(os.path.join(outdir, "README.md"), "w") as f:
        f.write(README.format(torch_version=torch.__version__, numpy_version=np.__version__,
                              rows=rows))
    print(f"{len(recorded)} cases recorded in {outdir}, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
