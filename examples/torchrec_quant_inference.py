"""Quantizes a TorchRec EmbeddingBagCollection for inference (int8 and int4 tables), shards it
over two virtual ranks with TorchRec's inference sharding and embag's sharder, and pools a batch
with embag's quantized kernels (docs/torchrec.md, "Quantized sharded inference").

    PYTHONPATH=build/python .venv-torch/bin/python examples/torchrec_quant_inference.py

Prints each virtual rank's shards and how far the sharded output is from the unsharded
collection's (FBGEMM's inference TBE). One process, on the CPU: TorchRec shards an inference
model in the process that serves it.
"""

import copy

import torch
from torchrec import EmbeddingBagCollection, EmbeddingBagConfig, KeyedJaggedTensor, PoolingType
from torchrec.distributed.embedding_types import EmbeddingComputeKernel
from torchrec.distributed.global_settings import set_propogate_device
from torchrec.distributed.sharding_plan import (
    construct_module_sharding_plan,
    row_wise,
    table_wise,
)
from torchrec.distributed.types import ShardingPlan
from torchrec.inference.modules import shard_quant_model
from torchrec.modules.embedding_configs import QuantConfig
from torchrec.quant.embedding_modules import (
    MODULE_ATTR_QUANT_STATE_DICT_SPLIT_SCALE_BIAS,
    EmbeddingBagCollection as QuantEmbeddingBagCollection,
)

from embag.torchrec_quant import EmbagQuantEmbeddingBagCollectionSharder

QUANT = EmbeddingComputeKernel.QUANT.value  # inference plans' compute kernel


def main() -> None:
    torch.manual_seed(0)
    collection = EmbeddingBagCollection(
        tables=[
            EmbeddingBagConfig(name="users", embedding_dim=16, num_embeddings=1000,
                               feature_names=["user"], pooling=PoolingType.SUM),
            EmbeddingBagConfig(name="products", embedding_dim=32, num_embeddings=5000,
                               feature_names=["product"], pooling=PoolingType.MEAN),
        ],
        device=torch.device("cpu"),
    )
    collection.qconfig = QuantConfig(
        activation=torch.quantization.PlaceholderObserver.with_args(dtype=torch.float),
        weight=torch.quantization.PlaceholderObserver.with_args(dtype=torch.qint8),  # int8
        per_table_weight_dtype={"products": torch.quint4x2},  # int4
    )
    # Scale and bias as state-dict entries of their own: TorchRec's row-wise inference
    # sharding needs them so.
    setattr(collection, MODULE_ATTR_QUANT_STATE_DICT_SPLIT_SCALE_BIAS, True)
    quantized = QuantEmbeddingBagCollection.from_float(collection)

    set_propogate_device(True)  # TorchRec's switch for CPU inference: shards stay on the CPU
    sharder = EmbagQuantEmbeddingBagCollectionSharder()
    plan = construct_module_sharding_plan(
        quantized,
        {"users": table_wise(rank=0, compute_kernel=QUANT),
         "products": row_wise(compute_kernel=QUANT)},
        sharder=sharder, local_size=2, world_size=2, device_type="cpu",
    )
    sharded, _ = shard_quant_model(
        copy.deepcopy(quantized), world_size=2, compute_device="cpu",
        sharding_device="cpu", sharders=[sharder], sharding_plan=ShardingPlan({"": plan}),
    )
    sharded.load_state_dict(quantized.state_dict())  # TorchRec's own loading

    for rank, table, rows in sharded.local_shards():
        first = table.local_metadata.shard_offsets[0]
        print(f"rank {rank}: {table.name} rows [{first}, {first + table.local_rows}) "
              f"{table.data_type.name}, {rows.shape[1]} bytes a row")
    features = KeyedJaggedTensor(
        keys=["user", "product"],
        values=torch.tensor([1, 999, 7, 4000, 12, 2600]),
        lengths=torch.tensor([2, 0, 1, 3], dtype=torch.int32),  # two bags per feature
    )
    pooled = sharded(features)
    expected = quantized(features)
    for key in ("user", "product"):
        difference = (pooled[key] - expected[key]).abs().max().item()
        print(f"{key}: pooled {tuple(pooled[key].shape)}, max difference from the unsharded "
              f"collection {difference:.2g}")


if __name__ == "__main__":
    main()
