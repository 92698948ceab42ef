#!/usr/bin/env python3
"""Table-batched embedding bags on a DLRM-like batch: embag, FBGEMM's CPU TBE, a PyTorch loop.

make bench-report runs this (bench/report.py) and puts its rows into REPORT.md; it can run alone:

    PYTHONPATH=build/python OMP_WAIT_POLICY=passive .venv-torch/bin/python bench/tbe_batched_bench.py

The batch (fixed seeds): 26 tables with rows from 10 to 1,000,000 (log-spaced), D = 64 for the
even tables and 128 for the odd ones, one feature per table, B = 2048 bags per feature, each
feature's bags 1 to 2*L_f - 1 long with L_f from 1 to 80 across the features (mean L_f), and a third
of the features drawing zipf-skewed rows (p(r) ~ 1 / (r + 1)^1.05), the rest uniform; float32,
int64 indices, sum pooling. Three implementations over the same tables (one copy in memory: TBE's
flat buffer, which embag's Parameters and the loop's are views of), each as its users call it
from Python:

- embag: ``embag.torch.TableBatchedEmbeddingBags`` (one custom operator per call);
- TBE: FBGEMM's ``SplitTableBatchedEmbeddingBagsCodegen`` (``EmbeddingLocation.HOST``,
  ``ComputeDevice.CPU``, its default bounds check), forward under ``no_grad`` (its CPU lookup
  refuses inference_mode);
- loop: one ``F.embedding_bag`` per table over that table's slice of the batch, and for training
  ``sparse=True`` gradients with ``torch.optim.Adagrad`` (element-wise Adagrad: PyTorch has no
  row-wise one; the update PyTorch users write).

Rows: forward (the [B, sum D] output), and one training step: forward, ``output.backward(g)`` with
a fixed g, and the optimizer (row-wise Adagrad fused into backward for embag and TBE; the loop's
zero_grad + backward + Adagrad.step). At 1 and 2 threads (``embag.set_num_threads`` and
``torch.set_num_threads``, which FBGEMM's and PyTorch's kernels use). All three get the same
batches, and their forward outputs are compared before timing (within 1e-5 relative). Each
repetition times every implementation back to back (interleaved, so load changes hit all
alike); the median of the repetitions (15 for forward, 3 for the training step, which takes
seconds) is reported.

Why Python and not bench_forward's C++ rows: TBE's training step is its Python module (an
autograd function choosing the fused optimizer's operator and packing ~40 arguments), so timing
it as users run it means timing the module; embag's module and the loop are timed the same way,
and the forward rows show the modules' own per-call overhead the same way for all three.

Prints one JSON object (times in ms, ratios).
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

TABLES = 26
BAGS = 2048


def table_rows(t):
    return int(round(10 ** (1 + 5 * t / (TABLES - 1))))


def table_dim(t):
    return 64 if t % 2 == 0 else 128


def mean_pooling(t):
    # 1 .. 80 across the features, shuffled against table size (a fixed permutation)
    order = [(7 * t + 3) % TABLES for t in range(TABLES)]
    return max(1, round(1 + 79 * order[t] / (TABLES - 1)))


def zipf_skewed(t):
    return t % 3 == 1


def make_batch(seed):
    g = torch.Generator().manual_seed(seed)
    lengths, indices = [], []
    for t in range(TABLES):
        rows, pool = table_rows(t), mean_pooling(t)
        counts = torch.randint(1, 2 * pool, (BAGS,), generator=g)
        n = int(counts.sum())
        if zipf_skewed(t):
            ranks = torch.arange(1, rows + 1, dtype=torch.float64)
            cdf = torch.cumsum(ranks.pow(-1.05), 0)
            cdf /= cdf[-1].clone()
            picks = torch.searchsorted(cdf, torch.rand(n, generator=g, dtype=torch.float64))
            idx = picks.clamp_(max=rows - 1)
        else:
            idx = torch.randint(0, rows, (n,), generator=g)
        lengths.append(counts)
        indices.append(idx)
    all_lengths = torch.cat(lengths)
    offsets = torch.zeros(all_lengths.numel() + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(all_lengths, 0)
    return torch.cat(indices), offsets


def median_ms(samples):
    return round(statistics.median(samples) * 1e3, 2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repetitions", type=int, default=3,
                    help="repetitions of the training-step rows (seconds each)")
    ap.add_argument("--forward-repetitions", type=int, default=15,
                    help="repetitions of the forward rows (a tenth of a second each)")
    ap.add_argument("--learning-rate", type=float, default=0.01)
    args = ap.parse_args()

    import embag
    import embag.torch as et
    import fbgemm_gpu
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (EmbeddingLocation,
                                                                      PoolingMode)
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice, OptimType, SplitTableBatchedEmbeddingBagsCodegen)

    started = time.perf_counter()
    specs = [(table_rows(t), table_dim(t)) for t in range(TABLES)]
    lr = args.learning_rate
    tbe = SplitTableBatchedEmbeddingBagsCodegen(
        [(r, d, EmbeddingLocation.HOST, ComputeDevice.CPU) for r, d in specs],
        optimizer=OptimType.EXACT_ROWWISE_ADAGRAD, learning_rate=lr, eps=1e-8,
        pooling_mode=PoolingMode.SUM)
    # One copy of the tables, TBE's (its flat host buffer): embag's Parameters and the loop's are
    # views of it, so all three read the same memory (and the run fits in less of it). Training
    # steps move the values, which changes nothing timed.
    mine = et.TableBatchedEmbeddingBags(specs, optimizer="rowwise_adagrad", learning_rate=lr,
                                        eps=1e-8)
    shared = tbe.split_embedding_weights()
    for param, table in zip(mine.weights, shared):
        param.data = table
    loop = torch.nn.ModuleList(torch.nn.EmbeddingBag(r, d, mode="sum", sparse=True, _weight=w)
                               for (r, d), w in zip(specs, shared))
    adagrad = torch.optim.Adagrad(loop.parameters(), lr=lr, eps=1e-8)

    batches = [make_batch(seed) for seed in (1, 2)]
    indices, offsets = batches[0]
    width = sum(d for _, d in specs)
    grad = torch.randn(BAGS, width, generator=torch.Generator().manual_seed(3)) * 1e-3

    def split(batch):
        # the loop's per-table views of the feature-major batch
        idx, off = batch
        out = []
        for t in range(TABLES):
            start, end = int(off[t * BAGS]), int(off[(t + 1) * BAGS])
            out.append((idx[start:end], off[t * BAGS:(t + 1) * BAGS] - start))
        return out

    loop_batches = [split(b) for b in batches]

    def loop_forward(k):
        return torch.cat([F.embedding_bag(i, bag.weight, o, mode="sum")
                          for bag, (i, o) in zip(loop, loop_batches[k])], 1)

    with torch.no_grad():
        reference = mine(indices, offsets)
        for name, out in (("TBE", tbe(indices, offsets)), ("loop", loop_forward(0))):
            error = ((out - reference).abs() / (reference.abs() + 1e-3)).max().item()
            if not error <= 1e-5:
                sys.exit(f"tbe_batched_bench: {name}'s forward differs from embag's by "
                         f"{error:.3g} (relative)")

    def embag_forward(k):
        with torch.inference_mode():
            mine(*batches[k])

    def tbe_forward(k):
        with torch.no_grad():
            tbe(*batches[k])

    def loop_forward_timed(k):
        with torch.inference_mode():
            loop_forward(k)

    def embag_train(k):
        mine(*batches[k]).backward(grad)

    def tbe_train(k):
        tbe(*batches[k]).backward(grad)

    def loop_train(k):
        adagrad.zero_grad(set_to_none=True)
        torch.cat([bag(i, o) for bag, (i, o) in zip(loop, loop_batches[k])], 1).backward(grad)
        adagrad.step()

    rows = {"forward": {"embag": embag_forward, "TBE": tbe_forward, "loop": loop_forward_timed},
            "training step (row-wise Adagrad)": {"embag": embag_train, "TBE": tbe_train,
                                                 "loop": loop_train}}
    result = {
        "fbgemm_gpu": fbgemm_gpu.__version__, "torch": torch.__version__,
        "embag_isa": embag.selected_isa(),
        "batch": f"{TABLES} tables, rows {table_rows(0)}..{table_rows(TABLES - 1):,}, D 64/128, "
                 f"B {BAGS}, {indices.numel():,} indices (mean pooling 1..80 per feature, "
                 f"{sum(zipf_skewed(t) for t in range(TABLES))} features zipf-skewed)",
        "table_mib": round(sum(r * d * 4 for r, d in specs) / 2**20),
        "repetitions": args.repetitions, "forward_repetitions": args.forward_repetitions,
        "rows": []}
    for threads in args.threads:
        embag.set_num_threads(threads)
        torch.set_num_threads(threads)
        for row, impls in rows.items():
            for f in impls.values():  # warm up (first-touch of state, thread pools)
                f(0)
                f(1)
            samples = {name: [] for name in impls}
            repetitions = args.forward_repetitions if row == "forward" else args.repetitions
            for rep in range(repetitions):
                for name, f in impls.items():
                    start = time.perf_counter()
                    f(rep % 2)
                    samples[name].append(time.perf_counter() - start)
            ms = {name: median_ms(s) for name, s in samples.items()}
            result["rows"].append({
                "row": row, "threads": threads, "ms": ms,
                "tbe_over_embag": round(ms["TBE"] / ms["embag"], 2),
                "loop_over_embag": round(ms["loop"] / ms["embag"], 2)})
    result["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
