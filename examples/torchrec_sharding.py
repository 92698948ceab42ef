"""Shards a TorchRec EmbeddingBagCollection over the ranks of a torchrun job with embag as the
compute kernel of every table, trains it a few SGD steps and saves a checkpoint
(docs/torchrec.md).

    torchrun --standalone --nproc-per-node=2 examples/torchrec_sharding.py

Each rank prints its loss and time per step and the shards it holds. CPU and gloo: GPUs would
take NCCL and a CUDA device, which embag's TorchRec kernel does not run yet. Across machines,
one torchrun per machine with --nnodes and a c10d rendezvous (README.md, "Scale out with
TorchRec").
"""

import time

import torch
import torch.distributed as dist
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.distributed.sharding_plan import (
    column_wise,
    construct_module_sharding_plan,
    row_wise,
    table_row_wise,
    table_wise,
)
from torchrec.distributed.types import ShardingEnv, ShardingPlan

from embag.torchrec import COMPUTE_KERNEL, EmbagEmbeddingBagCollectionSharder, embag_kernel


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)  # the same initial tables on every rank
    tables = [
        EmbeddingBagConfig(name="users", num_embeddings=1000, embedding_dim=16,
                           feature_names=["user"], pooling=PoolingType.SUM),
        EmbeddingBagConfig(name="products", num_embeddings=5000, embedding_dim=32,
                           feature_names=["item"], pooling=PoolingType.SUM),
        EmbeddingBagConfig(name="tags", num_embeddings=300, embedding_dim=8,
                           feature_names=["tag"], pooling=PoolingType.MEAN),
        EmbeddingBagConfig(name="places", num_embeddings=200, embedding_dim=16,
                           feature_names=["place"], pooling=PoolingType.SUM),
    ]
    collection = EmbeddingBagCollection(tables=tables, device=torch.device("cpu"))
    sharder = EmbagEmbeddingBagCollectionSharder()
    plan = construct_module_sharding_plan(
        collection,
        {
            "users": table_wise(rank=0, compute_kernel=COMPUTE_KERNEL),
            "products": row_wise(compute_kernel=COMPUTE_KERNEL),
            "tags": column_wise(ranks=[0, world - 1], compute_kernel=COMPUTE_KERNEL),
            "places": embag_kernel(table_row_wise(host_index=0)),
        },
        sharder=sharder,
        device_type="cpu",
    )
    model = DistributedModelParallel(
        collection,
        env=ShardingEnv.from_process_group(dist.group.WORLD),
        plan=ShardingPlan({"": plan}),
        sharders=[sharder],
        device=torch.device("cpu"),
    )
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)

    generator = torch.Generator().manual_seed(rank)
    batch, keys, rows = 64, ["user", "item", "tag", "place"], [1000, 5000, 300, 200]
    for step in range(3):
        started = time.perf_counter()
        lengths = torch.randint(0, 4, (len(keys), batch), generator=generator)
        values = torch.cat([torch.randint(0, r, (int(n),), generator=generator)
                            for r, n in zip(rows, lengths.sum(dim=1))])
        features = KeyedJaggedTensor.from_lengths_sync(keys=keys, values=values,
                                                       lengths=lengths.flatten())
        pooled = model(features).wait().values()  # (batch, 16 + 32 + 8 + 16)
        loss = pooled.square().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        milliseconds = (time.perf_counter() - started) * 1e3
        print(f"rank {rank} step {step}: loss {loss.item():.6f}, {milliseconds:.1f} ms")

    state = model.state_dict()  # ShardedTensors under embedding_bags.<table>.weight
    for key, tensor in state.items():
        shards = [(s.metadata.shard_offsets, list(s.tensor.shape)) for s in tensor.local_shards()]
        print(f"rank {rank} {key}: {shards}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
