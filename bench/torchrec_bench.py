#!/usr/bin/env python3
"""TorchRec training steps on a DLRM-like collection: embag's kernel against FBGEMM's, same plan.

make bench-report runs this (bench/report.py) and puts its rows into REPORT.md; it can run alone:

    PYTHONPATH=build/python OMP_WAIT_POLICY=passive .venv-torch/bin/python bench/torchrec_bench.py

The collection is tbe_batched_bench.py's DLRM-like batch as a TorchRec ``EmbeddingBagCollection``
(the same functions define both): 26 tables of rows 10 to 1,000,000 (log-spaced; --row-scale
divides them), D = 64 and 128 alternately, one sum-pooled feature per table, each rank's batch
B = 2048 bags per feature with mean pooling 1 to 80 across the features and a third of them
zipf-skewed (each rank draws its own batches, fixed seeds). Two processes
(torch.multiprocessing.spawn, gloo over 127.0.0.1, 1 thread each: the machine's 2 cores), one
``DistributedModelParallel`` per kernel on the same table-wise plan (each table on one rank,
balanced by lookups x D), built from a meta-device collection; the FBGEMM model loads the embag
model's state_dict (the checkpoint path the tests check), and both models' first outputs are
compared (within 1e-5 relative) before timing.

Rows: one training step (forward with TorchRec's all-to-alls, ``backward`` of the pooled output
against a fixed gradient, the optimizer's step) with
- fused row-wise Adagrad: embag's kernel (``customized_kernel`` with the sharder's
  ``fused_params``) against TorchRec's ``fused`` kernel (FBGEMM's CPU TBE), the same
  ``fused_params``, both stepped through ``model.fused_optimizer``;
- autograd + SGD (--autograd, on by default): embag's autograd kernel (one embag call per feature)
  against TorchRec's ``dense`` kernel (FBGEMM's dense TBE), both trained by ``torch.optim.SGD``
  over ``model.parameters()`` (dense gradients, as both kernels give them).
Each repetition times one step of every model back to back (interleaved, so load changes hit
all alike); rank 0's median of --repetitions steps is reported as steps per second. Also the
cost of the job-wide error agreement (embag.torchrec's one all-reduce of an error count per
forward, docs/torchrec.md): the median of 200 such all-reduces on the same process group.

Prints one JSON object (ms per step, steps per second, ratios).
"""
import argparse
import importlib.metadata
import json
import os
import socket
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from tbe_batched_bench import (  # noqa: E402  (the DLRM-like batch's one definition)
    BAGS, TABLES, make_batch, mean_pooling, table_dim, table_rows, zipf_skewed)

WORLD = 2


def plan_ranks():
    """Each table's rank: heaviest first (mean pooling x D), each onto the lighter rank."""
    load = [0.0] * WORLD
    ranks = {}
    for t in sorted(range(TABLES), key=lambda t: -mean_pooling(t) * table_dim(t)):
        rank = min(range(WORLD), key=lambda r: load[r])
        ranks[t] = rank
        load[rank] += mean_pooling(t) * table_dim(t)
    return ranks


def scaled_rows(t, row_scale):
    return max(10, table_rows(t) // row_scale)


def run_rank(rank, port, args, out_path):
    import torch.distributed as dist
    from fbgemm_gpu.split_embedding_configs import EmbOptimType
    from torchrec import (EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor,
                          PoolingType)
    from torchrec.distributed.model_parallel import DistributedModelParallel
    from torchrec.distributed.sharding_plan import construct_module_sharding_plan, table_wise
    from torchrec.distributed.types import ShardingEnv, ShardingPlan

    import embag
    from embag.torchrec import COMPUTE_KERNEL, EmbagEmbeddingBagCollectionSharder

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), LOCAL_WORLD_SIZE=str(WORLD))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    embag.set_num_threads(1)
    started = time.perf_counter()
    configs = [EmbeddingBagConfig(name=f"t{t}", num_embeddings=scaled_rows(t, args.row_scale),
                                  embedding_dim=table_dim(t), feature_names=[f"f{t}"],
                                  pooling=PoolingType.SUM) for t in range(TABLES)]
    ranks = plan_ranks()
    keys = [f"f{t}" for t in range(TABLES)]
    fused_params = dict(optimizer=EmbOptimType.EXACT_ROWWISE_ADAGRAD,
                        learning_rate=args.learning_rate, eps=1e-8)

    def build(kernel, fused):
        collection = EmbeddingBagCollection(tables=configs, device=torch.device("meta"))
        sharder = EmbagEmbeddingBagCollectionSharder(fused_params=fused_params if fused else None)
        plan = construct_module_sharding_plan(
            collection, {f"t{t}": table_wise(rank=ranks[t], compute_kernel=kernel)
                         for t in range(TABLES)},
            sharder=sharder, local_size=WORLD, world_size=WORLD, device_type="cpu")
        return DistributedModelParallel(
            collection, env=ShardingEnv.from_process_group(dist.group.WORLD),
            plan=ShardingPlan({"": plan}), sharders=[sharder], device=torch.device("cpu"))

    # Each rank's batches: tbe_batched_bench's generator, seeded by rank (its tables' rows
    # scaled down with --row-scale: indices are drawn per table below that table's rows).
    def batch(seed):
        indices, offsets = make_batch(seed)
        if args.row_scale > 1:
            lengths = offsets[1:] - offsets[:-1]
            table_of = torch.repeat_interleave(
                torch.repeat_interleave(torch.arange(TABLES), BAGS), lengths)
            rows = torch.tensor([scaled_rows(t, args.row_scale) for t in range(TABLES)])
            indices = indices % rows[table_of]
        return KeyedJaggedTensor(keys=keys, values=indices, offsets=offsets)

    batches = [batch(100 * rank + k) for k in (1, 2)]
    width = sum(table_dim(t) for t in range(TABLES))
    grad = torch.randn(BAGS, width, generator=torch.Generator().manual_seed(3)) * 1e-3

    rows = {"training step (fused row-wise Adagrad)": ("fused", True)}
    if args.autograd:
        rows["training step (autograd + torch.optim.SGD)"] = ("dense", False)
    result = {"rows": []}
    for row, (fbgemm_kernel, fused) in rows.items():
        models = {"embag": build(COMPUTE_KERNEL, fused), "FBGEMM": build(fbgemm_kernel, fused)}
        models["FBGEMM"].load_state_dict(models["embag"].state_dict())
        if fused:
            optimizers = {name: model.fused_optimizer for name, model in models.items()}
        else:
            optimizers = {name: torch.optim.SGD(model.parameters(), lr=args.learning_rate)
                          for name, model in models.items()}
        with torch.no_grad():
            outputs = {name: model(batches[0]).wait().values() for name, model in models.items()}
        error = ((outputs["FBGEMM"] - outputs["embag"]).abs()
                 / (outputs["embag"].abs() + 1e-3)).max().item()
        if not error <= 1e-5:
            raise SystemExit(f"torchrec_bench: FBGEMM's forward differs from embag's by "
                             f"{error:.3g} (relative), {row}")

        def step(name, k):
            pooled = models[name](batches[k]).wait().values()
            pooled.backward(grad)
            optimizers[name].step()
            optimizers[name].zero_grad()

        for name in models:  # warm up (first touch of the optimizer state, gloo's buffers)
            step(name, 1)
        samples = {name: [] for name in models}
        for rep in range(args.repetitions):
            for name in models:
                begin = time.perf_counter()
                step(name, rep % 2)
                samples[name].append(time.perf_counter() - begin)
        ms = {name: round(statistics.median(s) * 1e3, 1) for name, s in samples.items()}
        result["rows"].append({
            "row": row, "ms": ms,
            "steps_per_s": {name: round(1e3 / m, 2) for name, m in ms.items()},
            "fbgemm_over_embag": round(ms["FBGEMM"] / ms["embag"], 2)})
        del models, optimizers, outputs

    flag = torch.zeros(1, dtype=torch.int64)
    agreement = []
    for _ in range(200):
        begin = time.perf_counter()
        dist.all_reduce(flag)
        agreement.append(time.perf_counter() - begin)
    result["agreement_us"] = round(statistics.median(agreement) * 1e6, 1)
    result["rank_seconds"] = round(time.perf_counter() - started, 1)
    dist.destroy_process_group()
    if rank == 0:
        with open(out_path, "w") as f:
            json.dump(result, f)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repetitions", type=int, default=5,
                    help="timed steps per model (a step takes seconds at full size)")
    ap.add_argument("--row-scale", type=int, default=1,
                    help="divide every table's rows by this (memory; 1 = rows up to 1,000,000)")
    ap.add_argument("--autograd", action=argparse.BooleanOptionalAction, default=True,
                    help="also time autograd + torch.optim.SGD (dense gradients)")
    ap.add_argument("--learning-rate", type=float, default=0.01)
    ap.add_argument("--timeout", type=float, default=600,
                    help="seconds before the ranks are killed")
    args = ap.parse_args()

    import fbgemm_gpu
    import torch.multiprocessing as mp

    import embag

    started = time.perf_counter()
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as folder:
        out_path = os.path.join(folder, "rank0.json")
        context = mp.spawn(run_rank, args=(port, args, out_path), nprocs=WORLD, join=False)
        deadline = time.monotonic() + args.timeout
        try:
            while not context.join(timeout=1):
                if time.monotonic() > deadline:
                    raise SystemExit(f"torchrec_bench: the ranks did not finish within "
                                     f"{args.timeout:.0f} s; killed")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
        with open(out_path) as f:
            result = json.load(f)
    rows = [scaled_rows(t, args.row_scale) for t in range(TABLES)]
    result.update({
        "torch": torch.__version__, "torchrec": importlib.metadata.version("torchrec"),
        "fbgemm_gpu": fbgemm_gpu.__version__, "embag_isa": embag.selected_isa(),
        "collection": f"{TABLES} tables, rows {min(rows)}..{max(rows):,}"
                      f"{f' (rows / {args.row_scale})' if args.row_scale > 1 else ''}, "
                      f"D 64/128, B {BAGS} per rank, mean pooling 1..80 per feature, "
                      f"{sum(zipf_skewed(t) for t in range(TABLES))} features zipf-skewed",
        "table_mib": round(sum(r * table_dim(t) * 4 for t, r in enumerate(rows)) / 2**20),
        "world": WORLD, "repetitions": args.repetitions,
        "seconds": round(time.perf_counter() - started, 1)})
    print(json.dumps(result))


if __name__ == "__main__":
    main()
