"""embag.torchrec_quant: TorchRec's sharded quantized inference on embag (make test-python).

Needs TorchRec in .venv-torch (scripts/install-deps.sh --torch); skipped, saying so, where it
cannot be imported. TorchRec shards an inference model in one process, every rank a "virtual"
rank of ``ShardingEnv.from_local`` whose shards that process computes (on CPU once TorchRec's
``set_propogate_device(True)`` is set, as its own CPU inference does), so no process is started.

Per case (CASES), a quantized EmbeddingBagCollection (int8, int4, int2 and float32 tables of
different rows, dims and poolings, from one float collection with fixed seeds) sharded by a plan
with embag's sharder through TorchRec's shard_quant_model, loaded with the unsharded
collection's state dict. Each shard embag reads, dequantised, must be bitwise its block of the
unsharded table dequantised (the state dict reached the TBEs embag reads); on two batches with
empty bags and a feature with no value at all, the output is checked against
- the unsharded QuantEmbeddingBagCollection (FBGEMM's inference TBE), within FBGEMM_TOLERANCE;
- the same plan sharded with TorchRec's own sharder (FBGEMM's TBE per shard), within
  FBGEMM_TOLERANCE, row-wise MEAN tables aside (TorchRec's own kernel sums the shards' means,
  docs/torchrec.md; embag's is checked against the other two);
- F.embedding_bag on each table dequantised (embag.dequantize of the unsharded TBE's rows),
  within REFERENCE_TOLERANCE.
Then: the empty shard and the empty rank the cases rely on exist; an index outside a table,
table-wise and row-wise, raises embag's message naming the feature, table, virtual rank and
shard; an FP16 table and a weighted MEAN table are refused when sharded. 2.4 s of tests, 26-35 s for the file (importing
TorchRec) on the 2-core development machine.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Tuple

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip(
    "torchrec.distributed", reason="TorchRec is not installed (scripts/install-deps.sh --torch)"
)

from torchrec.distributed.embedding_types import EmbeddingComputeKernel  # noqa: E402
from torchrec.distributed.global_settings import (  # noqa: E402
    get_propogate_device,
    set_propogate_device,
)
from torchrec.distributed.quant_embeddingbag import (  # noqa: E402
    QuantEmbeddingBagCollectionSharder,
)
from torchrec.distributed.sharding_plan import (  # noqa: E402
    column_wise,
    construct_module_sharding_plan,
    row_wise,
    table_wise,
)
from torchrec.distributed.types import ShardingPlan  # noqa: E402
from torchrec.inference.modules import shard_quant_model  # noqa: E402
from torchrec.modules.embedding_configs import (  # noqa: E402
    EmbeddingBagConfig,
    PoolingType,
    QuantConfig,
)
from torchrec.modules.embedding_modules import EmbeddingBagCollection  # noqa: E402
from torchrec.quant.embedding_modules import (  # noqa: E402
    MODULE_ATTR_QUANT_STATE_DICT_SPLIT_SCALE_BIAS,
    MODULE_ATTR_ROW_ALIGNMENT_INT,
    EmbeddingBagCollection as QuantEmbeddingBagCollection,
)
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor  # noqa: E402

import embag  # noqa: E402
from embag.torchrec_quant import (  # noqa: E402
    EmbagQuantEmbeddingBagCollectionSharder,
    EmbagShardedQuantEmbeddingBagCollection,
)

BATCH = 5  # bags per feature
QUANT = EmbeddingComputeKernel.QUANT.value  # the compute kernel of every inference plan
# embag dequantises each element as scale * q + bias, rounded, then adds; FBGEMM's TBE folds
# fma(scale, q, acc + bias) (docs/quantized.md): the same sums up to rounding.
FBGEMM_TOLERANCE = dict(atol=1e-5, rtol=1e-5)
# embag's quantized pool is bitwise its float pool of the dequantised table; PyTorch's
# F.embedding_bag adds the same float32 rows, maybe in another order.
REFERENCE_TOLERANCE = dict(atol=1e-6, rtol=1e-6)

# The quantized dtype TorchRec's QuantConfig takes per table.
DTYPES = {"int8": torch.qint8, "int4": torch.quint4x2, "int2": torch.quint2x4,
          "fp32": torch.float, "fp16": torch.half}
# The format of a TBE row of each type (float32 tables: the float rows themselves).
FORMATS = {"int8": "tbe_int8", "int4": "tbe_int4", "int2": "tbe_int2", "fp32": None}

# (name, rows, dim, pooling, type) per table; plan: name -> (generator, arguments).
Table = Tuple[str, int, int, str, str]
CASES: Dict[str, Dict[str, Any]] = {
    # three virtual ranks: rank 2 holds no table
    "table_wise": dict(
        world=3,
        tables=[("t0", 11, 6, "SUM", "int8"), ("t1", 7, 12, "MEAN", "int4"),
                ("t2", 13, 8, "SUM", "int2"), ("t3", 5, 4, "MEAN", "int4"),
                ("t4", 9, 10, "MEAN", "int8")],
        plan={"t0": ("table_wise", 0), "t1": ("table_wise", 0), "t2": ("table_wise", 1),
              "t3": ("table_wise", 1), "t4": ("table_wise", 0)},
    ),
    # t1 has one row: rank 1's shard of it has none. (int8: TorchRec 1.9.2 cannot load a 4- or
    # 2-bit row-wise table one of whose shards holds all its rows, docs/torchrec.md.)
    "row_wise": dict(
        world=2,
        tables=[("t0", 11, 8, "SUM", "int4"), ("t1", 1, 8, "SUM", "int8"),
                ("t2", 9, 16, "MEAN", "int2"), ("t3", 6, 6, "MEAN", "int8")],
        plan={name: ("row_wise",) for name in ("t0", "t1", "t2", "t3")},
    ),
    "column_wise": dict(
        world=2,
        tables=[("t0", 11, 16, "SUM", "int8"), ("t1", 7, 16, "MEAN", "int4"),
                ("t2", 13, 16, "SUM", "int2")],
        plan={"t0": ("column_wise", [0, 1]), "t1": ("column_wise", [1, 0]),
              "t2": ("column_wise", [1])},
    ),
    # per-sample weights (SUM: F.embedding_bag, the reference, takes them with sum only)
    "weighted": dict(
        world=2,
        tables=[("t0", 11, 8, "SUM", "int8"), ("t1", 7, 16, "SUM", "int4"),
                ("t2", 9, 8, "SUM", "int2")],
        plan={"t0": ("table_wise", 1), "t1": ("row_wise",), "t2": ("table_wise", 0)},
        weighted=True,
    ),
    # float32 tables: TorchRec 1.9.2 shards them only with scale and bias left in the rows
    # (split=False), which it allows table-wise only
    "float_table_wise": dict(
        world=2,
        tables=[("t0", 11, 8, "SUM", "int8"), ("t1", 7, 3, "MEAN", "fp32"),
                ("t2", 5, 5, "SUM", "fp32")],
        plan={"t0": ("table_wise", 1), "t1": ("table_wise", 0), "t2": ("table_wise", 1)},
        split=False,
    ),
}


@pytest.fixture(autouse=True)
def propagate_device() -> Any:
    # TorchRec's inference sharding places each virtual rank's TBE on cuda:<rank> unless its
    # global setting says to keep the sharding device (torchrec.distributed.global_settings;
    # its own CPU inference sets it the same way). Restored after each test.
    before = get_propogate_device()
    set_propogate_device(True)
    yield
    set_propogate_device(before)


def _quantized_collection(tables: List[Table], weighted: bool,
                          split: bool = True) -> QuantEmbeddingBagCollection:
    configs = [
        EmbeddingBagConfig(name=name, num_embeddings=rows, embedding_dim=dim,
                           feature_names=[f"f_{name}"], pooling=PoolingType[pooling])
        for name, rows, dim, pooling, _ in tables
    ]
    collection = EmbeddingBagCollection(tables=configs, is_weighted=weighted,
                                        device=torch.device("cpu"))
    generator = torch.Generator().manual_seed(2026)
    with torch.no_grad():
        for name, rows, dim, _, _ in tables:
            weight = collection.embedding_bags[name].weight
            weight.copy_(torch.randn(rows, dim, generator=generator)
                         * torch.rand(rows, 1, generator=generator) * 4)
    collection.qconfig = QuantConfig(
        activation=torch.quantization.PlaceholderObserver.with_args(dtype=torch.float),
        weight=torch.quantization.PlaceholderObserver.with_args(dtype=torch.qint8),
        per_table_weight_dtype={name: DTYPES[kind] for name, _, _, _, kind in tables},
    )
    # Scale and bias as their own state-dict entries: what TorchRec's row- and column-wise
    # inference sharding requires (and what it cannot do with float tables).
    setattr(collection, MODULE_ATTR_QUANT_STATE_DICT_SPLIT_SCALE_BIAS, split)
    if not split:
        # Whole rows in the state dict: the unsharded TBE's must be as wide as the shards'
        # (TorchRec pads rows to 16 bytes unsharded, to 1 in a CPU shard).
        setattr(collection, MODULE_ATTR_ROW_ALIGNMENT_INT, 1)
    return QuantEmbeddingBagCollection.from_float(collection)


def _plan(module: torch.nn.Module, plan: Dict[str, Tuple[Any, ...]], world: int,
          sharder: Any) -> ShardingPlan:
    generators = {"table_wise": table_wise, "row_wise": row_wise, "column_wise": column_wise}
    per_table = {name: generators[kind](*args, compute_kernel=QUANT)
                 for name, (kind, *args) in plan.items()}
    module_plan = construct_module_sharding_plan(module, per_table, sharder=sharder,
                                                 local_size=world, world_size=world,
                                                 device_type="cpu")
    return ShardingPlan({"": module_plan})


def _shard(quantized: QuantEmbeddingBagCollection, case: Dict[str, Any], sharder: Any) -> Any:
    world = case["world"]
    # TorchRec's inference sharding: world virtual ranks in this process
    # (ShardingEnv.from_local(world, 0)), shards built on the CPU.
    sharded, _ = shard_quant_model(
        copy.deepcopy(quantized),
        world_size=world,
        compute_device="cpu",
        sharding_device="cpu",
        sharders=[sharder],
        sharding_plan=_plan(quantized, case["plan"], world, sharder),
    )
    sharded.load_state_dict(quantized.state_dict())
    return sharded


def _batch(tables: List[Table], weighted: bool, seed: int) -> KeyedJaggedTensor:
    """BATCH bags per feature, some empty; the last feature has no value at all."""
    generator = torch.Generator().manual_seed(seed)
    lengths, values = [], []
    for position, (_, rows, _, _, _) in enumerate(tables):
        if position == len(tables) - 1:
            bag_lengths = [0] * BATCH
        else:
            bag_lengths = torch.randint(0, 4, (BATCH,), generator=generator).tolist()
            bag_lengths[1] = 0
        lengths += bag_lengths
        values.append(torch.randint(0, rows, (sum(bag_lengths),), generator=generator))
    all_values = torch.cat(values)
    return KeyedJaggedTensor(
        keys=[f"f_{name}" for name, *_ in tables],
        values=all_values,
        lengths=torch.tensor(lengths, dtype=torch.int32),
        weights=torch.rand(all_values.numel(), generator=generator) if weighted else None,
    )


def _unsharded_rows(quantized: QuantEmbeddingBagCollection) -> Dict[str, torch.Tensor]:
    """Each table's rows as the unsharded collection's TBE holds them (row padding included)."""
    rows = {}
    for (_, tables), tbe in zip(quantized._key_to_tables.items(), quantized._emb_modules):
        for table, (weight, _, _) in zip(
            tables, tbe.split_embedding_weights_with_scale_bias(split_scale_bias_mode=0)
        ):
            rows[table.name] = weight
    return rows


def _dequantised(rows: torch.Tensor, kind: str, dim: int) -> torch.Tensor:
    if FORMATS[kind] is None:
        return rows[:, : 4 * dim].contiguous().view(torch.float32)
    return embag.dequantize(embag.QuantizedTable(rows, FORMATS[kind], dim))


def _reference(tables: List[Table], quantized: QuantEmbeddingBagCollection,
               batch: KeyedJaggedTensor) -> torch.Tensor:
    """F.embedding_bag per feature on the dequantised unsharded tables, features in key order."""
    rows = _unsharded_rows(quantized)
    pooled = []
    for name, _, dim, pooling, kind in tables:
        feature = batch[f"f_{name}"]
        pooled.append(F.embedding_bag(
            feature.values(), _dequantised(rows[name], kind, dim), feature.offsets(),
            mode=pooling.lower(), per_sample_weights=feature.weights_or_none(),
            include_last_offset=True))
    return torch.cat(pooled, dim=1)


def _keyed(output: Any, tables: List[Table]) -> torch.Tensor:
    """A KeyedTensor's values with the features in the tables' order."""
    return torch.cat([output[f"f_{name}"] for name, *_ in tables], dim=1)


@pytest.mark.parametrize("name", list(CASES))
def test_sharded_output(name: str) -> None:
    case = CASES[name]
    tables, weighted = case["tables"], case.get("weighted", False)
    quantized = _quantized_collection(tables, weighted, case.get("split", True))
    sharded = _shard(quantized, case, EmbagQuantEmbeddingBagCollectionSharder())
    assert isinstance(sharded, EmbagShardedQuantEmbeddingBagCollection)
    fbgemm_sharded = _shard(quantized, case, QuantEmbeddingBagCollectionSharder())
    assert type(fbgemm_sharded) is not EmbagShardedQuantEmbeddingBagCollection

    # Each shard embag reads, dequantised, is its block of the unsharded table dequantised,
    # bitwise: the state dict reached the TBEs (row-wise: its rows; column-wise: its columns,
    # with the row's scale and bias).
    rows = _unsharded_rows(quantized)
    kinds = {table: (dim, kind) for table, _, dim, _, kind in tables}
    shards = sharded.local_shards()
    assert {table.name for _, table, _ in shards} == set(kinds)
    for _, table, weight in shards:
        dim, kind = kinds[table.name]
        first_row, first_col = table.local_metadata.shard_offsets
        whole = _dequantised(rows[table.name], kind, dim)
        block = whole[first_row:first_row + table.local_rows,
                      first_col:first_col + table.local_cols]
        assert torch.equal(_dequantised(weight, kind, table.local_cols), block), table.name

    for seed in (1, 2):
        batch = _batch(tables, weighted, seed)
        got = _keyed(sharded(batch), tables)
        assert got.shape == (BATCH, sum(dim for _, _, dim, _, _ in tables))
        torch.testing.assert_close(got, _keyed(quantized(batch), tables), **FBGEMM_TOLERANCE)
        # TorchRec's own row-wise MEAN sums each shard's mean (docs/torchrec.md): those
        # features are left out of this comparison.
        same = [table for table in tables
                if not (table[3] == "MEAN" and case["plan"][table[0]][0] == "row_wise")]
        torch.testing.assert_close(_keyed(sharded(batch), same),
                                   _keyed(fbgemm_sharded(batch), same), **FBGEMM_TOLERANCE)
        torch.testing.assert_close(got, _reference(tables, quantized, batch),
                                   **REFERENCE_TOLERANCE)


def test_empty_shard_and_rank_are_computed() -> None:
    # What the cases above rely on: row_wise's one-row table has an empty shard on rank 1, and
    # table_wise's rank 2 holds no table (TorchRec gives it no lookup; its output has no column).
    quantized = _quantized_collection(CASES["row_wise"]["tables"], False)
    sharded = _shard(quantized, CASES["row_wise"], EmbagQuantEmbeddingBagCollectionSharder())
    assert [(rank, table.local_rows) for rank, table, _ in sharded.local_shards()
            if table.name == "t1"] == [(0, 1), (1, 0)]
    quantized = _quantized_collection(CASES["table_wise"]["tables"], False)
    sharded = _shard(quantized, CASES["table_wise"], EmbagQuantEmbeddingBagCollectionSharder())
    assert {rank for rank, _, _ in sharded.local_shards()} == {0, 1}


@pytest.mark.parametrize("name", ["table_wise", "row_wise"])
def test_bad_index_gives_embags_message(name: str) -> None:
    case = CASES[name]
    tables = case["tables"]
    quantized = _quantized_collection(tables, False)
    sharded = _shard(quantized, case, EmbagQuantEmbeddingBagCollectionSharder())
    # t0 has 11 rows: index 11 is outside it. Table-wise, rank 0 holds all of t0; row-wise,
    # TorchRec's bucketization sends 11 to the last rank's shard, rows [6, 11), as its row 5.
    # f_t0: bags [3], [11], then empty; f_t1: [0], then empty; the others empty.
    lengths = [1, 1] + [0] * (BATCH - 2) + [1] + [0] * (BATCH * (len(tables) - 1) - 1)
    batch = KeyedJaggedTensor(
        keys=[f"f_{table}" for table, *_ in tables],
        values=torch.tensor([3, 11, 0]),
        lengths=torch.tensor(lengths, dtype=torch.int32),
    )
    # Where (this module's prefix), then embag's own message, in the shard's own rows.
    message = {
        "table_wise": r"feature 'f_t0' of table 't0' on rank 0 \(its shard of rows \[0, 11\) "
                      r"of 11, indexed from its first row\): Index 1 of input takes value 11 "
                      r"which is not in the valid range \[0, 11\)",
        "row_wise": r"feature 'f_t0' of table 't0' on rank 1 \(its shard of rows \[6, 11\) "
                    r"of 11, indexed from its first row\): Index 0 of input takes value 5 "
                    r"which is not in the valid range \[0, 5\)",
    }[name]
    with pytest.raises(embag.EmbeddingBagError, match=message):
        sharded(batch)


REFUSED = {
    # float16 tables (TorchRec shards them table-wise only, scale and bias not split)
    "fp16": ([("t0", 11, 8, "SUM", "int8"), ("t1", 7, 8, "SUM", "fp16")], False, False,
             r"table 't1' is FP16; embag computes INT8, INT4, INT2, FP32 tables"),
    "weighted_mean": ([("t0", 11, 8, "SUM", "int8"), ("t1", 7, 8, "MEAN", "int8")], True, True,
                      r"tables \['t1'\] are MEAN tables of a weighted collection; embag takes "
                      r"per-sample weights with SUM pooling only"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_what_embag_cannot_compute_is_refused_when_sharded(name: str) -> None:
    tables, weighted, split, message = REFUSED[name]
    case = dict(world=2, tables=tables, plan={"t0": ("table_wise", 0), "t1": ("table_wise", 1)})
    quantized = _quantized_collection(tables, weighted, split)
    with pytest.raises(NotImplementedError, match=message):
        _shard(quantized, case, EmbagQuantEmbeddingBagCollectionSharder())
