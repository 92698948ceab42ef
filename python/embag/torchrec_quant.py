"""embag.torchrec_quant: embag's quantized kernels computing TorchRec's sharded inference tables.

Importing this module needs TorchRec. It gives TorchRec's inference sharding of a quantized
``EmbeddingBagCollection`` (``torchrec.quant.embedding_modules.EmbeddingBagCollection``, called
``QuantEmbeddingBagCollection`` here as in TorchRec's own imports) embag's kernels for every
shard's pooled lookups, with two subclasses and no patching of TorchRec:

- ``EmbagShardedQuantEmbeddingBagCollection`` (a ``ShardedQuantEmbeddingBagCollection``):
  TorchRec builds it unchanged (input dist, lookups, the FBGEMM inference TBEs that hold each
  rank's shards, output dist, state dict); only ``compute``, the stage of TorchRec's sharded
  module API (``input_dist`` / ``compute`` / ``output_dist``) that runs the lookups, is
  replaced: it pools every rank's shards with embag's quantized kernel, reading the quantized
  rows where the TBE keeps them (embag's ``tbe_int8`` / ``tbe_int4`` / ``tbe_int2`` formats are
  that TBE's row layout, so nothing is copied or re-quantized).
- ``EmbagQuantEmbeddingBagCollectionSharder`` (a ``QuantEmbeddingBagCollectionSharder``): the
  sharder to hand ``shard_quant_model`` / ``_shard_modules``; it builds the class above.

Why ``compute`` and not the lookup (what a first look suggested): TorchRec's inference lookups
build their kernels inside ``__init__`` with no method to override
(``MetaInferGroupedPooledEmbeddingsLookup`` in a function local to ``__init__``,
``InferGroupedPooledEmbeddingsLookup`` inline), so a kernel of embag's own would need new
classes for the kernel, both lookups and each sharding's ``create_lookup``, each copying
TorchRec's constructor. But the TBEs those constructors build are where TorchRec keeps the
weights: ``load_state_dict``, ``state_dict`` (with or without split scale / bias) and
``tbes_configs`` all go through them. Keeping them as the storage and replacing only the
computation over them leaves every one of those paths TorchRec's own. ``compute`` is the one
place TorchRec calls the lookups from, and the override follows TorchRec's lookups' forward
(ranks without a shard skipped, features split by grouped config, outputs concatenated) with an
embag call where TorchRec calls the TBE. docs/torchrec.md ("Quantized sharded inference") is the
manual.

One deliberate difference from TorchRec's own kernel: a row-wise MEAN table. TorchRec pools each
row-wise shard with MEAN and sums the shards, which is not the bag's mean; here each shard's sum
is divided by the whole bag's size (all virtual ranks' features are in this process), so the sum
over the shards is the mean the unsharded collection computes.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from torch import nn
from torchrec.distributed.embedding_lookup import (
    InferGroupedPooledEmbeddingsLookup,
    MetaInferGroupedPooledEmbeddingsLookup,
)
from torchrec.distributed.embedding_types import GroupedEmbeddingConfig, ListOfKJTList
from torchrec.distributed.fused_params import (
    FUSED_PARAM_QUANT_STATE_DICT_SPLIT_SCALE_BIAS,
    FUSED_PARAM_REGISTER_TBE_BOOL,
)
from torchrec.distributed.quant_embedding_kernel import QuantBatchedEmbeddingBag
from torchrec.distributed.quant_embeddingbag import (
    QuantEmbeddingBagCollectionSharder,
    ShardedQuantEmbeddingBagCollection,
)
from torchrec.distributed.types import (
    NullShardedModuleContext,
    ParameterSharding,
    ShardingEnv,
    ShardingType,
)
from torchrec.modules.embedding_configs import (
    DataType,
    data_type_to_sparse_type,
    dtype_to_data_type,
)
from torchrec.quant.embedding_modules import (
    MODULE_ATTR_QUANT_STATE_DICT_SPLIT_SCALE_BIAS,
    EmbeddingBagCollection as QuantEmbeddingBagCollection,
)
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from . import EmbeddingBagError
from . import torch as _embag_torch  # noqa: F401  (registers torch.ops.embag.*)
from ._quantized import row_bytes

__all__ = [
    "EmbagQuantEmbeddingBagCollectionSharder",
    "EmbagShardedQuantEmbeddingBagCollection",
]

# TorchRec's table data types that embag computes, as embag's format of the FBGEMM inference
# TBE's rows ([scale f16][bias f16][codes]); None: float32 rows, pooled by embag's float kernel.
_FORMATS: Dict[DataType, Optional[str]] = {
    DataType.INT8: "tbe_int8",
    DataType.INT4: "tbe_int4",
    DataType.INT2: "tbe_int2",
    DataType.FP32: None,
}
# FBGEMM's PoolingMode (by name) to embag's mode.
_MODES = {"SUM": "sum", "MEAN": "mean"}


def _check_kernel(kernel: nn.Module, config: GroupedEmbeddingConfig) -> None:
    """Refuses, when the model is sharded, what embag cannot compute in place of this kernel's
    TBE, naming the table and the reason; a model that shards runs every lookup on embag."""
    names = [table.name for table in config.embedding_tables]
    if type(kernel) is not QuantBatchedEmbeddingBag:
        raise NotImplementedError(
            f"embag.torchrec_quant: tables {names} are computed by {type(kernel).__name__}; "
            "embag replaces TorchRec's QuantBatchedEmbeddingBag (FBGEMM's inference TBE) only"
        )
    if any(table.use_virtual_table for table in config.embedding_tables):
        raise NotImplementedError(
            f"embag.torchrec_quant: tables {names} are virtual (key-value) tables, which embag "
            "does not compute"
        )
    tbe = kernel.emb_module
    if kernel._pooling.name not in _MODES:
        raise NotImplementedError(
            f"embag.torchrec_quant: tables {names} have pooling {kernel._pooling.name}; embag "
            "pools SUM and MEAN here"
        )
    if config.is_weighted and kernel._pooling.name == "MEAN":
        # As PyTorch's EmbeddingBag: per-sample weights with sum only (FBGEMM's TBE would
        # divide the weighted sum by the bag's size).
        raise NotImplementedError(
            f"embag.torchrec_quant: tables {names} are MEAN tables of a weighted collection; "
            "embag takes per-sample weights with SUM pooling only"
        )
    if config.has_feature_processor:
        raise NotImplementedError(
            f"embag.torchrec_quant: tables {names} have a feature processor, which is not "
            "supported"
        )
    if tbe.reverse_qparam or tbe.scale_bias_size_in_bytes != 4:
        raise NotImplementedError(
            f"embag.torchrec_quant: tables {names}: the TBE keeps scale and bias "
            f"{'after' if tbe.reverse_qparam else 'before'} the codes in "
            f"{tbe.scale_bias_size_in_bytes} bytes; embag reads FBGEMM's default layout "
            "(float16 scale and bias, 4 bytes, in front)"
        )
    for table, (_, _, dim, _, _), (weight, _, _) in zip(
        config.embedding_tables,
        tbe.embedding_specs,
        tbe.split_embedding_weights_with_scale_bias(split_scale_bias_mode=0),
    ):
        if table.data_type not in _FORMATS:
            raise NotImplementedError(
                f"embag.torchrec_quant: table {table.name!r} is {table.data_type.name}; embag "
                f"computes {', '.join(t.name for t in _FORMATS)} tables"
            )
        fmt = _FORMATS[table.data_type]
        needed = 4 * dim if fmt is None else row_bytes(fmt, dim)
        if weight.shape[1] < needed:
            # FBGEMM sizes a 4-bit (2-bit) row with D // 2 (D // 4) bytes of codes, which drops
            # a column of an odd D (D not a multiple of 4) that embag would read.
            raise ValueError(
                f"embag.torchrec_quant: table {table.name!r} ({table.data_type.name}, D = {dim}) "
                f"has TBE rows of {weight.shape[1]} bytes, fewer than the {needed} its format "
                "needs; FBGEMM drops the last codes of such a D"
            )


class EmbagShardedQuantEmbeddingBagCollection(ShardedQuantEmbeddingBagCollection):
    """TorchRec's sharded quantized ``EmbeddingBagCollection`` whose lookups run on embag.

    Everything is TorchRec's but ``compute``: each virtual rank's grouped configs are pooled by
    embag's quantized kernel on the rows of the TBE TorchRec built for them (one call per
    feature), in the config's pooling (SUM or MEAN; row-wise MEAN as the module docstring
    says), with per-sample weights for a weighted collection, and the output cast to the
    collection's output dtype. What embag cannot compute is refused when the model is sharded
    (``_check_kernel``).
    """

    def __init__(
        self,
        module: QuantEmbeddingBagCollection,
        table_name_to_parameter_sharding: Dict[str, ParameterSharding],
        env: Union[ShardingEnv, Dict[str, ShardingEnv]],
        fused_params: Optional[Dict[str, Any]] = None,
        device: Optional[torch.device] = None,
    ) -> None:
        super().__init__(module, table_name_to_parameter_sharding, env, fused_params, device)
        for lookup in self._lookups:
            for rank_lookup in self._rank_lookups(lookup):
                for config, kernel in zip(rank_lookup.grouped_configs, rank_lookup._emb_modules):
                    _check_kernel(kernel, config)

    @staticmethod
    def _rank_lookups(lookup: nn.Module) -> List[MetaInferGroupedPooledEmbeddingsLookup]:
        if not isinstance(lookup, InferGroupedPooledEmbeddingsLookup):
            raise NotImplementedError(
                f"embag.torchrec_quant: a lookup of type {type(lookup).__name__}; embag computes "
                "TorchRec's InferGroupedPooledEmbeddingsLookup (table-, row- and column-wise)"
            )
        return list(lookup._embedding_lookups_per_rank)

    def compute(
        self,
        ctx: NullShardedModuleContext,
        dist_input: ListOfKJTList,
    ) -> List[List[torch.Tensor]]:
        # TorchRec's: [lookup.forward(dist_input[i]) for i, lookup in enumerate(self._lookups)]
        outputs = []
        for (sharding_type, _), lookup, features in zip(
            self._sharding_type_device_group_to_sharding, self._lookups, dist_input
        ):
            bag_sizes = None
            if sharding_type == ShardingType.ROW_WISE.value:
                # Each rank holds the positions of every bag that fall in its rows; a bag's
                # size is the sum of its parts' (every rank's features share keys and batch).
                bag_sizes = torch.stack([rank_features.lengths() for rank_features in features])
                bag_sizes = bag_sizes.sum(dim=0)
            # As InferGroupedPooledEmbeddingsLookup.forward: a rank without shards has no
            # lookup, and its features are dropped.
            ranks = [rank for rank, empty in enumerate(lookup._is_empty_rank) if not empty]
            outputs.append(
                [
                    self._rank_output(rank, rank_lookup, features[rank], bag_sizes)
                    for rank, rank_lookup in zip(ranks, self._rank_lookups(lookup))
                ]
            )
        return outputs

    def _rank_output(
        self,
        rank: int,
        rank_lookup: MetaInferGroupedPooledEmbeddingsLookup,
        features: KeyedJaggedTensor,
        bag_sizes: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """One rank's pooled output ``(B, sum of its shards' columns)``, as
        MetaInferGroupedPooledEmbeddingsLookup.forward lays it out. ``bag_sizes``: for row-wise
        shards, each bag's size over all ranks (``F * B``, in the features' order)."""
        configs = rank_lookup.grouped_configs
        if not configs:
            return torch.empty(
                (features.stride(), 0), dtype=rank_lookup.output_dtype, device=features.device()
            )
        split = [features] if len(configs) == 1 else features.split(rank_lookup._feature_splits)
        batch = features.stride()
        pooled = []
        first_feature = 0
        for config, kernel, config_features, count in zip(
            configs, rank_lookup._emb_modules, split, rank_lookup._feature_splits
        ):
            sizes = None
            if bag_sizes is not None:
                sizes = bag_sizes[first_feature * batch : (first_feature + count) * batch]
            first_feature += count
            pooled.append(
                self._config_output(
                    rank, config, kernel, config_features, rank_lookup.output_dtype, sizes
                )
            )
        return pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1)

    def _config_output(
        self,
        rank: int,
        config: GroupedEmbeddingConfig,
        kernel: QuantBatchedEmbeddingBag,
        features: KeyedJaggedTensor,
        output_dtype: torch.dtype,
        bag_sizes: Optional[torch.Tensor],
    ) -> torch.Tensor:
        """What the kernel's TBE returns for ``features``: each feature's ``(B, D)`` pooled
        lookup in its table's local shard, concatenated, computed by embag.

        A row-wise shard of a MEAN table (``bag_sizes`` given) is the sum of its part of each
        bag divided by the whole bag's size, so that TorchRec's reduce (a sum over ranks) gives
        the bag's mean. TorchRec's own kernel takes each part's mean, whose sum is not the mean
        (docs/torchrec.md)."""
        tbe = kernel.emb_module
        if (
            tbe.index_remapping_hash_table_cpu is not None
            or tbe.index_remapping_hash_table.numel() > 0
            or tbe.index_remappings_array.numel() > 0
        ):
            raise NotImplementedError(
                "embag.torchrec_quant: the TBE of tables "
                f"{[table.name for table in config.embedding_tables]} remaps indices (pruning); "
                "embag does not"
            )
        if tbe.current_device.type != "cpu":
            raise NotImplementedError(
                "embag.torchrec_quant: tables "
                f"{[table.name for table in config.embedding_tables]} are on "
                f"{tbe.current_device}; embag's quantized kernels run on CPU (TorchRec places "
                "inference shards on cuda:<rank> unless torchrec.distributed.global_settings."
                "set_propogate_device(True) keeps them on the sharding device)"
            )
        mode = _MODES[kernel._pooling.name]
        divide = mode == "mean" and bag_sizes is not None
        if divide:
            mode = "sum"
        # Each local shard's rows as the TBE stores them, padding included (embag's table
        # takes the row stride): views, read in place.
        shards = tbe.split_embedding_weights_with_scale_bias(split_scale_bias_mode=0)
        batch = features.stride()
        values = features.values()
        offsets = features.offsets().to(values.dtype)
        weights = features.weights() if config.is_weighted else None
        pooled = []
        for feature, table_index in enumerate(kernel._feature_table_map):
            table = config.embedding_tables[table_index]
            _, _, dim, _, _ = tbe.embedding_specs[table_index]
            bag_offsets = offsets[feature * batch : (feature + 1) * batch + 1]
            start, end = int(bag_offsets[0]), int(bag_offsets[-1])
            indices = values[start:end]
            bag_offsets = bag_offsets - start
            sample_weights = None if weights is None else weights[start:end].float()
            data = shards[table_index][0]
            fmt = _FORMATS[table.data_type]
            try:
                if fmt is None:
                    out = _embag_torch.embedding_bag(
                        indices,
                        data[:, : 4 * dim].view(torch.float32),
                        bag_offsets,
                        mode=mode,
                        per_sample_weights=sample_weights,
                        include_last_offset=True,
                    )
                else:
                    out = torch.ops.embag.quantized_embedding_bag(
                        data, fmt, dim, indices, bag_offsets, sample_weights, mode, True, None
                    )
            except EmbeddingBagError as error:
                raise type(error)(
                    self._where(rank, features.keys()[feature], table) + str(error)
                ) from error
            if divide:
                assert bag_sizes is not None
                sizes = bag_sizes[feature * batch : (feature + 1) * batch].clamp(min=1)
                out = out / sizes.unsqueeze(1).to(out.dtype)
            pooled.append(out)
        output = pooled[0] if len(pooled) == 1 else torch.cat(pooled, dim=1)
        return output.to(output_dtype)

    def local_shards(self) -> List[Tuple[int, Any, torch.Tensor]]:
        """(virtual rank, TorchRec's ``ShardedEmbeddingTable``, rows) of every local shard, the
        rows being the TBE's ``(local rows, row bytes)`` uint8 view embag reads (for inspection
        and tests: the table's ``local_metadata`` gives the shard's offsets)."""
        shards = []
        for lookup in self._lookups:
            ranks = [rank for rank, empty in enumerate(lookup._is_empty_rank) if not empty]
            for rank, rank_lookup in zip(ranks, self._rank_lookups(lookup)):
                for config, kernel in zip(rank_lookup.grouped_configs, rank_lookup._emb_modules):
                    weights = kernel.emb_module.split_embedding_weights_with_scale_bias(
                        split_scale_bias_mode=0
                    )
                    for table, (weight, _, _) in zip(config.embedding_tables, weights):
                        shards.append((rank, table, weight))
        return shards

    @staticmethod
    def _where(rank: int, feature: str, table: Any) -> str:
        # embag's message counts positions within the feature's values on this rank and rows
        # within the shard (a row-wise shard indexes its own rows): say which ones.
        first_row = table.local_metadata.shard_offsets[0] if table.local_metadata else 0
        return (
            f"embag.torchrec_quant: feature {feature!r} of table {table.name!r} on rank {rank} "
            f"(its shard of rows [{first_row}, {first_row + table.local_rows}) of "
            f"{table.num_embeddings}, indexed from its first row): "
        )


class EmbagQuantEmbeddingBagCollectionSharder(QuantEmbeddingBagCollectionSharder):
    """TorchRec's sharder of a quantized ``EmbeddingBagCollection`` for inference, building
    ``EmbagShardedQuantEmbeddingBagCollection``: the same plans (table-, row- and column-wise,
    compute kernel ``quant``), every table computed by embag."""

    def shard(
        self,
        module: QuantEmbeddingBagCollection,
        params: Dict[str, ParameterSharding],
        env: Union[ShardingEnv, Dict[str, ShardingEnv]],
        device: Optional[torch.device] = None,
        module_fqn: Optional[str] = None,
    ) -> EmbagShardedQuantEmbeddingBagCollection:
        # The fused params TorchRec's shard() derives from the module (on a copy: TorchRec's
        # writes them into the sharder's own dictionary).
        fused_params = dict(self.fused_params or {})
        fused_params["output_dtype"] = data_type_to_sparse_type(
            dtype_to_data_type(module.output_dtype())
        )
        fused_params.setdefault(
            FUSED_PARAM_QUANT_STATE_DICT_SPLIT_SCALE_BIAS,
            getattr(module, MODULE_ATTR_QUANT_STATE_DICT_SPLIT_SCALE_BIAS, False),
        )
        fused_params.setdefault(
            FUSED_PARAM_REGISTER_TBE_BOOL, getattr(module, FUSED_PARAM_REGISTER_TBE_BOOL, False)
        )
        return EmbagShardedQuantEmbeddingBagCollection(
            module, params, env, fused_params, device=device
        )

