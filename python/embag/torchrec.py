"""embag.torchrec: embag as the compute kernel of TorchRec's sharded ``EmbeddingBagCollection``.

Importing this module needs TorchRec (``import embag`` and ``import embag.torch`` do not). It
plugs embag into TorchRec through the one extension point TorchRec keeps for this,
``EmbeddingComputeKernel.CUSTOMIZED_KERNEL`` (``"customized_kernel"``), with four subclasses
and no patching of TorchRec:

- ``EmbagEmbeddingBag``: the kernel of one grouped config (the shards of the tables one rank
  computes together); each local table's shards are one ``nn.Parameter``, trained by autograd
  through ``embag.torch.embedding_bag``.
- ``EmbagPooledEmbeddingsLookup``: the lookup, which builds that kernel for customized configs
  (TorchRec's own ``GroupedPooledEmbeddingsLookup`` raises for them) and TorchRec's kernels for
  every other config.
- ``EmbagShardedEmbeddingBagCollection``: the sharded collection, which builds that lookup and
  does for customized tables what TorchRec leaves to the subclass: their ``state_dict`` entries
  (``ShardedTensor``s under TorchRec's keys) and their initialisation on a rank that holds no
  shard of them.
- ``EmbagEmbeddingBagCollectionSharder``: the sharder to hand ``DistributedModelParallel``; it
  offers ``customized_kernel`` for every sharding type but data-parallel.

A plan picks embag per table: ``table_wise(rank, compute_kernel=COMPUTE_KERNEL)``,
``row_wise(compute_kernel=COMPUTE_KERNEL)``, ``column_wise(ranks, compute_kernel=...)``, and
``embag_kernel(table_row_wise(host_index))`` (TorchRec's ``table_row_wise`` takes no kernel);
``embag_plan`` moves a plan from TorchRec's planner onto embag. docs/torchrec.md is the manual.

Not here yet: fused optimizers (TorchRec's ``FusedOptimizerModule``) and quantized sharded
inference; both wait for embag's table-batched kernel. Each rank runs one embag call per
feature (``EmbagEmbeddingBag._pooled``, the one place the table-batched call will replace).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor
from torch.distributed._shard.sharded_tensor.metadata import TensorProperties
from torchrec.distributed.batched_embedding_kernel import BaseBatchedEmbeddingBag
from torchrec.distributed.embedding_kernel import BaseEmbedding
from torchrec.distributed.embedding_lookup import GroupedPooledEmbeddingsLookup
from torchrec.distributed.embedding_types import (
    EmbeddingComputeKernel,
    GroupedEmbeddingConfig,
)
from torchrec.distributed.embeddingbag import (
    EmbeddingBagCollectionSharder,
    ShardedEmbeddingBagCollection,
)
from torchrec.distributed.types import (
    ParameterSharding,
    ShardingEnv,
    ShardingPlan,
    ShardingType,
)
from torchrec.modules.embedding_configs import data_type_to_dtype
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from . import EmbeddingBagError
from .torch import embedding_bag

__all__ = [
    "COMPUTE_KERNEL",
    "EmbagEmbeddingBag",
    "EmbagEmbeddingBagCollectionSharder",
    "EmbagPooledEmbeddingsLookup",
    "EmbagShardedEmbeddingBagCollection",
    "embag_kernel",
    "embag_plan",
]

#: The compute kernel name a plan gives a table to run it on embag.
COMPUTE_KERNEL: str = EmbeddingComputeKernel.CUSTOMIZED_KERNEL.value

# fbgemm's PoolingMode (what TorchRec hands a kernel: SUM for a row-wise MEAN table, whose mean
# TorchRec takes after the reduce) to embag's mode.
_MODES = {"SUM": "sum", "MEAN": "mean"}


def _is_embag(compute_kernel: Any) -> bool:
    # A grouped config carries the enum, a plan the string.
    value = getattr(compute_kernel, "value", compute_kernel)
    return bool(value == COMPUTE_KERNEL)


class EmbagEmbeddingBag(BaseBatchedEmbeddingBag[torch.Tensor]):
    """The compute kernel of one grouped config: pooled lookups of the KJT's features in the
    config's local shards, by embag.

    Each table this config holds shards of has one ``nn.Parameter`` (``<table>.weight``): its
    local shards stacked by rows, in config order, as TorchRec's TBE slices lay them out (a
    column-wise table can put two shards on one rank), so that ``ShardedEmbeddingBagCollection``
    registers it as ``embedding_bags.<table>.weight`` and loads a checkpoint into it. Each shard
    is computed on its rows of that parameter; autograd reaches the parameter through the view.
    """

    def __init__(
        self,
        config: GroupedEmbeddingConfig,
        pg: Optional[dist.ProcessGroup] = None,
        device: Optional[torch.device] = None,
        sharding_type: Optional[ShardingType] = None,
    ) -> None:
        super().__init__(config, pg, device, sharding_type)
        mode = _MODES.get(self._pooling.name)
        if mode is None:
            names = [table.name for table in config.embedding_tables]
            raise ValueError(
                f"embag.torchrec: table(s) {names} have pooling {config.pooling.value}; embag's "
                "TorchRec kernel computes pooled tables (SUM, MEAN)"
            )
        self._mode = mode
        dtype = data_type_to_dtype(config.data_type)
        # Rows and columns per table name: a table's shards on one rank must agree on columns
        # to be stacked (column_wise gives equal widths; an uneven plan would not).
        shapes: Dict[str, Tuple[int, int]] = {}
        for table in config.embedding_tables:
            rows, cols = shapes.get(table.name, (0, table.local_cols))
            if cols != table.local_cols:
                raise ValueError(
                    f"embag.torchrec: table {table.name!r} has shards of {cols} and "
                    f"{table.local_cols} columns on one rank; embag stacks a table's local shards, "
                    "so they must be equally wide"
                )
            shapes[table.name] = (rows + table.local_rows, cols)
        # (a list, not a ParameterDict: a table's name may hold a ".")
        self._table_names = list(shapes)
        self._table_weights = nn.ParameterList(
            nn.Parameter(torch.empty(rows, cols, dtype=dtype, device=device))
            for rows, cols in shapes.values()
        )
        # Each shard's (table parameter, first row, end row).
        self._shard_rows: List[Tuple[int, int, int]] = []
        next_row: Dict[str, int] = {}
        for table in config.embedding_tables:
            start = next_row.get(table.name, 0)
            index = self._table_names.index(table.name)
            self._shard_rows.append((index, start, start + table.local_rows))
            next_row[table.name] = start + table.local_rows
        self._param_per_table = dict(  # type: ignore[assignment]
            zip(self._table_names, self._table_weights)
        )
        self.init_parameters()

    @property
    def emb_module(self) -> Any:  # type: ignore[override]
        # TorchRec reaches for this only for fbgemm-specific paths (VBE, prefetch, TBE stats),
        # none of which apply to this kernel.
        return self

    def _shard_weights(self) -> List[torch.Tensor]:
        """Each local shard's weight, in config order: autograd views of the table parameters."""
        return [self._table_weights[index][start:end] for index, start, end in self._shard_rows]

    def split_embedding_weights(self) -> List[torch.Tensor]:
        # Detached views (the storage, not the graph): what init_parameters fills, state_dict
        # reports and a checkpoint is loaded into.
        return [weight.detach() for weight in self._shard_weights()]

    def named_split_embedding_weights(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[Tuple[str, torch.Tensor]]:
        for table, weight in zip(self._config.embedding_tables, self.split_embedding_weights()):
            yield f"{prefix}{table.name}.weight", weight

    def named_parameters(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[Tuple[str, nn.Parameter]]:
        # TorchRec's kernels name their parameters by table; so does this one.
        for name, weight in zip(self._table_names, self._table_weights):
            yield f"{prefix}{name}.weight", weight

    def named_buffers(
        self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True
    ) -> Iterator[Tuple[str, torch.Tensor]]:
        yield from ()

    def local_shards(self) -> Iterator[Tuple[str, Shard]]:
        """(table name, ``Shard``) for each local shard: its weight's storage and TorchRec's
        metadata for it, what a ``ShardedTensor`` of the table is made of."""
        for table, weight in zip(self._config.embedding_tables, self.split_embedding_weights()):
            assert table.local_metadata is not None
            yield table.name, Shard(tensor=weight, metadata=table.local_metadata)

    def forward(
        self,
        features: KeyedJaggedTensor,
        vbe_output: Optional[torch.Tensor] = None,
        vbe_output_offsets: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        if features.variable_stride_per_key() or vbe_output is not None:
            raise NotImplementedError(
                "embag.torchrec: variable batch size per feature (VBE) is not supported"
            )
        pooled = self._pooled(features)
        return pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1)

    def _pooled(self, features: KeyedJaggedTensor) -> List[torch.Tensor]:
        """The ``(B, local_cols)`` pooled output of each feature, in feature order.

        One embag call per feature, on its shard's weight. This is the one method the
        table-batched kernel (one call for every shard of the config) replaces."""
        batch = features.stride()
        values = features.values().to(torch.int64)
        offsets = features.offsets().to(torch.int64)
        weights = features.weights_or_none()
        if weights is not None and not torch.is_floating_point(weights):
            weights = None
        shard_weights = self._shard_weights()
        pooled = []
        for feature, shard in enumerate(self._feature_table_map):
            bag_offsets = offsets[feature * batch : (feature + 1) * batch + 1]
            start, end = int(bag_offsets[0]), int(bag_offsets[-1])
            try:
                pooled.append(
                    embedding_bag(
                        values[start:end],
                        shard_weights[shard],
                        bag_offsets - start,
                        mode=self._mode,
                        per_sample_weights=None if weights is None else weights[start:end],
                        include_last_offset=True,
                    )
                )
            except EmbeddingBagError as error:
                where = self._where(features.keys()[feature], shard)
                raise type(error)(where + str(error)) from error
        return pooled

    def _where(self, feature: str, shard: int) -> str:
        # Which of this rank's lookups broke a rule: embag's message counts positions within one
        # feature's values on this rank and rows within one shard (row-wise shards index their
        # own rows), so it names the feature and the shard's place in its table.
        table = self._config.embedding_tables[shard]
        first_row = self._row_offset[shard]
        return (
            f"embag.torchrec: feature {feature!r} of table {table.name!r} (its local shard of rows "
            f"[{first_row}, {first_row + table.local_rows}) of {table.num_embeddings}, indexed "
            "from its first row): "
        )


class EmbagPooledEmbeddingsLookup(GroupedPooledEmbeddingsLookup):
    """TorchRec's pooled lookup, with ``EmbagEmbeddingBag`` for customized configs."""

    def _create_embedding_kernel(
        self,
        config: GroupedEmbeddingConfig,
        device: Optional[torch.device],
        pg: Optional[dist.ProcessGroup],
        sharding_type: Optional[ShardingType],
        env: Optional[ShardingEnv],
    ) -> BaseEmbedding:
        if _is_embag(config.compute_kernel):
            return EmbagEmbeddingBag(config=config, pg=pg, device=device,
                                     sharding_type=sharding_type)
        return super()._create_embedding_kernel(config, device, pg, sharding_type, env)


class EmbagShardedEmbeddingBagCollection(ShardedEmbeddingBagCollection):
    """TorchRec's sharded ``EmbeddingBagCollection`` whose customized tables run on embag.

    TorchRec builds this class's lookups through ``_create_lookups`` and leaves the state of
    customized tables to it: their ``ShardedTensor``s for ``state_dict`` (the keys and layout of
    TorchRec's own kernels, so checkpoints move between the two) and a weight on ranks that
    hold none of their shards."""

    def _create_lookups(self) -> None:
        for sharding_type, sharding in zip(self._sharding_types, self._embedding_shardings):
            if sharding_type == ShardingType.DATA_PARALLEL.value:
                self._lookups.append(sharding.create_lookup())
                continue
            # What each sharding's own create_lookup passes to GroupedPooledEmbeddingsLookup
            # (torchrec 1.9.2's tw/rw/cw/twrw_sharding.py), the class aside.
            if sharding_type == ShardingType.TABLE_ROW_WISE.value:
                grouped_configs = sharding._grouped_embedding_configs_per_rank[sharding._rank]
            else:
                grouped_configs = sharding._grouped_embedding_configs
            mean_after_reduce = sharding_type in (ShardingType.ROW_WISE.value,
                                                  ShardingType.TABLE_ROW_WISE.value)
            self._lookups.append(
                EmbagPooledEmbeddingsLookup(
                    grouped_configs=grouped_configs,
                    pg=sharding._pg,
                    device=sharding._device,
                    sharding_type=ShardingType(sharding_type) if mean_after_reduce else None,
                    env=sharding._env,
                )
            )

    def _embag_tables(self) -> List[str]:
        return [
            name
            for name, sharding in self.module_sharding_plan.items()
            if sharding.sharding_type != ShardingType.DATA_PARALLEL.value
            and _is_embag(sharding.compute_kernel)
        ]

    def _register_missing_embag_weights(self) -> None:
        # As TorchRec does for its own kernels: a rank without a shard of a table gets an empty
        # weight, so that reset_parameters, named_parameters and load_state_dict see every table.
        for name in self._embag_tables():
            module = self.embedding_bags[name]
            if not hasattr(module, "weight"):
                module.register_parameter("weight", nn.Parameter(torch.empty(0)))

    def reset_parameters(self) -> None:
        self._register_missing_embag_weights()
        super().reset_parameters()

    def _initialize_torch_state(self, skip_registering: bool = False) -> None:
        super()._initialize_torch_state(skip_registering)
        tables = self._embag_tables()
        if not tables:
            return
        if self._output_dtensor:
            raise NotImplementedError(
                "embag.torchrec: state_dict as DTensor (ShardingEnv.output_dtensor) is not "
                "supported for embag's tables; they are saved as ShardedTensors"
            )
        shards: Dict[str, List[Shard]] = {name: [] for name in tables}
        for lookup in self._lookups:
            for module in lookup.modules():
                if isinstance(module, EmbagEmbeddingBag):
                    for name, shard in module.local_shards():
                        shards[name].append(shard)
        for name in tables:
            # The tables' ShardedTensors, built as TorchRec builds its own kernels' (from the
            # local shards and the plan's global metadata, no collective): TorchRec's
            # post-state_dict hook saves them and its pre-load hook reads their shards'
            # placement from _model_parallel_name_to_local_shards.
            config = self._table_name_to_config[name]
            spec = self.module_sharding_plan[name].sharding_spec
            assert spec is not None
            metadata = spec.build_metadata(
                tensor_sizes=torch.Size(self._name_to_table_size[name]),
                tensor_properties=TensorProperties(dtype=data_type_to_dtype(config.data_type),
                                                   requires_grad=False),
            )
            self._model_parallel_name_to_local_shards[name] = shards[name]
            self._model_parallel_name_to_shards_wrapper[name] = {"local_tensors": [],
                                                                 "local_offsets": []}
            self._model_parallel_name_to_sharded_tensor[name] = (
                ShardedTensor._init_from_local_shards_and_global_metadata(
                    local_shards=shards[name],
                    sharded_tensor_metadata=metadata,
                    process_group=self._env.process_group,
                )
            )


class EmbagEmbeddingBagCollectionSharder(EmbeddingBagCollectionSharder):
    """The ``EmbeddingBagCollection`` sharder to give ``DistributedModelParallel``: it shards
    into ``EmbagShardedEmbeddingBagCollection`` and offers ``customized_kernel`` (embag) for every
    sharding type but data-parallel. Tables whose plan names another kernel keep TorchRec's."""

    def shard(
        self,
        module: EmbeddingBagCollection,
        params: Dict[str, ParameterSharding],
        env: ShardingEnv,
        device: Optional[torch.device] = None,
        module_fqn: Optional[str] = None,
    ) -> ShardedEmbeddingBagCollection:
        return EmbagShardedEmbeddingBagCollection(
            module=module,
            table_name_to_parameter_sharding=params,
            env=env,
            fused_params=self.fused_params,
            device=device,
            qcomm_codecs_registry=self.qcomm_codecs_registry,
            module_fqn=module_fqn,
            sharded_module_order_overwrite=self._sharded_module_order_overwrite,
        )

    def compute_kernels(self, sharding_type: str, compute_device_type: str) -> List[str]:
        kernels = super().compute_kernels(sharding_type, compute_device_type)
        if sharding_type == ShardingType.DATA_PARALLEL.value:
            return kernels
        return [COMPUTE_KERNEL] + kernels

    @property
    def sharded_module_type(self) -> type:  # type: ignore[override]
        return EmbagShardedEmbeddingBagCollection


def embag_plan(plan: ShardingPlan) -> ShardingPlan:
    """``plan`` with every table that is not data-parallel on embag's kernel, in place (and
    returned): for a plan made by TorchRec's planner, which cannot cost ``customized_kernel``
    (it raises "Unrecognized or unsupported compute kernel"), so plans with TorchRec's own
    ``EmbeddingBagCollectionSharder`` and kernels instead."""
    for module_plan in plan.plan.values():
        for sharding in module_plan.values():  # type: ignore[attr-defined]
            if sharding.sharding_type != ShardingType.DATA_PARALLEL.value:
                sharding.compute_kernel = COMPUTE_KERNEL
    return plan


def embag_kernel(generator: Callable[..., ParameterSharding]) -> Callable[..., ParameterSharding]:
    """A plan generator (``table_row_wise(0)``, ...) whose tables run on embag: for TorchRec's
    generators that take no ``compute_kernel`` argument."""

    def generate(*args: Any, **kwargs: Any) -> ParameterSharding:
        return dataclasses.replace(generator(*args, **kwargs), compute_kernel=COMPUTE_KERNEL)

    return generate
