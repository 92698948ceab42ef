#!/usr/bin/env python3
"""FBGEMM's TBE module against the operator bench_forward times (make bench-report runs this).

bench_forward's fbgemm_tbe rows call fbgemm::split_embedding_codegen_forward_cpu, the CPU forward
that SplitTableBatchedEmbeddingBagsCodegen runs for one table on the host, through the c10
dispatcher. This builds the module itself (EmbeddingLocation.HOST, ComputeDevice.CPU, pooling SUM
and MEAN), calls it under torch.no_grad() (its CPU lookup is an autograd function: inference_mode
is refused) on one warm shape, and checks that the operator, called with the module's own
buffers, returns bitwise the module's output; then it times both, so the report can say what the
module's own per-call work (Python, its default index bounds check, the autograd function) adds
on top of the operator. Fixed seeds; prints one JSON object. Run with .venv-torch's Python.
"""
import argparse
import json
import statistics
import time

import torch


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=10000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--bags", type=int, default=2048)
    ap.add_argument("--pooling", type=int, default=40)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--calls", type=int, default=100, help="timed calls per repetition")
    args = ap.parse_args()

    import fbgemm_gpu  # noqa: F401  (loads the operators)
    from fbgemm_gpu.split_table_batched_embeddings_ops_common import (EmbeddingLocation,
                                                                      PoolingMode)
    from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
        ComputeDevice, SplitTableBatchedEmbeddingBagsCodegen)

    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(16)
    indices = torch.randint(0, args.rows, (args.bags * args.pooling,), generator=g,
                            dtype=torch.int64)
    offsets = torch.arange(0, args.bags * args.pooling + 1, args.pooling, dtype=torch.int64)
    result = {"fbgemm_gpu": fbgemm_gpu.__version__, "torch": torch.__version__,
              "shape": f"{args.rows} x {args.dim}, {args.bags} bags of {args.pooling}",
              "threads": args.threads, "modes": {}}
    for pooling in (PoolingMode.SUM, PoolingMode.MEAN):
        module = SplitTableBatchedEmbeddingBagsCodegen(
            [(args.rows, args.dim, EmbeddingLocation.HOST, ComputeDevice.CPU)],
            pooling_mode=pooling)

        def operator():
            return torch.ops.fbgemm.split_embedding_codegen_forward_cpu(
                module.weights_host, module.weights_offsets, module.D_offsets, args.dim,
                module.hash_size_cumsum, indices, offsets, int(pooling), None, 0)

        def call_module():
            return module(indices, offsets)

        with torch.no_grad():
            same = torch.equal(call_module(), operator())
            times = {}
            for name, f in (("module", call_module), ("operator", operator)):
                for _ in range(10):
                    f()
                reps = []
                for _ in range(5):
                    start = time.perf_counter()
                    for _ in range(args.calls):
                        f()
                    reps.append((time.perf_counter() - start) / args.calls * 1e6)
                times[name] = statistics.median(reps)
        result["modes"][pooling.name.lower()] = {
            "bitwise_equal": same, "module_us": round(times["module"], 1),
            "operator_us": round(times["operator"], 1),
            "module_over_operator": round(times["module"] / times["operator"], 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
