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

Fused optimizers: where the sharder's ``fused_params`` name an ``optimizer`` (FBGEMM's
``EmbOptimType``, as for TorchRec's ``fused`` kernel), the lookup builds
``EmbagFusedEmbeddingBag`` instead: one table-batched embag call for all the config's shards,
with the optimizer applied to the touched rows inside backward, exposed to TorchRec as a
``FusedOptimizerModule`` (``EmbagFusedOptimizer``), so ``DistributedModelParallel``'s
``fused_optimizer`` holds it. Without an optimizer, each rank runs one embag call per feature
through autograd (``EmbagEmbeddingBag._pooled``).

A rule broken on one rank stops the forward on every rank: each embag lookup agrees with the
other ranks, by one all-reduce of an error count per forward, whether any rank's kernel refused
its batch, before the output all-to-all (``_agree_on_errors``). The rank that refused raises
embag's error (naming the feature and the shard), the others an ``EmbeddingBagError`` naming
that rank and quoting it; nothing is written anywhere and the process group stays in step, so
the job can stop, or skip the batch, instead of hanging in the next collective until the
group's timeout (gloo's ``ProcessGroup.abort()`` does nothing, so a failing rank cannot cut its
peers loose any other way while it lives).

Quantized sharded inference is ``embag.torchrec_quant``.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import Shard, ShardedTensor
from torch.distributed._shard.metadata import ShardMetadata
from torch.distributed._shard.sharded_tensor.metadata import (
    ShardedTensorMetadata,
    TensorProperties,
)
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
from torchrec.optim.fused import EmptyFusedOptimizer, FusedOptimizer, FusedOptimizerModule
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from . import EmbeddingBagError
from ._batched_torch import _state_shapes
from .torch import embedding_bag

__all__ = [
    "COMPUTE_KERNEL",
    "EmbagEmbeddingBag",
    "EmbagEmbeddingBagCollectionSharder",
    "EmbagFusedEmbeddingBag",
    "EmbagFusedOptimizer",
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


def _refuse_variable_batch(
    features: KeyedJaggedTensor, vbe_output: Optional[torch.Tensor]
) -> None:
    """Both kernels pool a fixed batch per feature; TorchRec's variable batch (VBE) is refused."""
    if features.variable_stride_per_key() or vbe_output is not None:
        raise NotImplementedError(
            "embag.torchrec: variable batch size per feature (VBE) is not supported"
        )


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
        _refuse_variable_batch(features, vbe_output)
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


# FBGEMM's optimizers (``EmbOptimType``, by name or value) that embag fuses, as embag's names.
_FUSED_OPTIMIZERS = {
    "EXACT_SGD": "sgd",
    "EXACT_ADAGRAD": "adagrad",
    "EXACT_ROWWISE_ADAGRAD": "rowwise_adagrad",
    "ADAM": "adam",
}
_FUSED_OPTIMIZER_VALUES = {
    "exact_sgd": "EXACT_SGD",
    "exact_adagrad": "EXACT_ADAGRAD",
    "exact_row_wise_adagrad": "EXACT_ROWWISE_ADAGRAD",
    "adam": "ADAM",
}
# The keys of each optimizer's state in TorchRec's EmbeddingFusedOptimizer ("momentum1", then
# FBGEMM's own name for the second state), so the optimizer's state_dict has TorchRec's keys.
_STATE_KEYS = {
    "sgd": (),
    "adagrad": ("momentum1",),
    "rowwise_adagrad": ("momentum1",),
    "adam": ("momentum1", "exp_avg_sq"),
}
# FBGEMM's WeightDecayMode (by name) to embag's.
_WEIGHT_DECAY_MODES = {"NONE": "none", "L2": "l2", "DECOUPLE": "decoupled"}
# The hyper-parameters embag takes, with FBGEMM's defaults.
_HYPER_DEFAULTS = {
    "learning_rate": 0.01,
    "eps": 1.0e-8,
    "beta1": 0.9,
    "beta2": 0.999,
    "weight_decay": 0.0,
}
# fused_params that would change FBGEMM's update rule in ways embag's fused optimizers do not
# implement: refused when set, rather than silently trained differently. Other keys configure
# FBGEMM's memory placement, caching or precision, which this CPU kernel has no counterpart for.
_UNSUPPORTED_FUSED_PARAMS = (
    "gradient_clipping",
    "max_norm",
    "counter_based_regularization",
    "cowclip_regularization",
    "global_weight_decay",
    "use_rowwise_bias_correction",
    "stochastic_rounding_for_optimizer_state",
)


def fused_optimizer_name(fused_params: Optional[Dict[str, Any]]) -> Optional[str]:
    """embag's name for the optimizer ``fused_params`` name (None: none, the autograd path)."""
    optimizer = (fused_params or {}).get("optimizer")
    if optimizer is None:
        return None
    name = getattr(optimizer, "name", None)
    if name is None and isinstance(optimizer, str):
        name = _FUSED_OPTIMIZER_VALUES.get(optimizer, optimizer.upper())
    if name not in _FUSED_OPTIMIZERS:
        raise ValueError(
            f"embag.torchrec: fused_params['optimizer'] is {optimizer!r}; embag's kernel fuses "
            f"{', '.join('EmbOptimType.' + n for n in _FUSED_OPTIMIZERS)}"
        )
    return _FUSED_OPTIMIZERS[name]


class EmbagFusedEmbeddingBag(EmbagEmbeddingBag, FusedOptimizerModule):
    """``EmbagEmbeddingBag`` trained by a fused optimizer, for configs whose ``fused_params``
    name one (what TorchRec's ``BatchedFusedEmbeddingBag`` takes): one table-batched embag call
    (``embag::batched_embedding_bags``) for every shard of the config, whose backward applies
    the optimizer to the rows the batch touched, in place, keeping no ``.grad``.

    Weights keep ``EmbagEmbeddingBag``'s layout (one parameter per table, its local shards
    stacked by rows), and so does the optimizer state (one tensor per table and state, stacked
    the same way: ``(rows, cols)`` pointwise, ``(rows,)`` row-wise); each shard's rows of both
    are views handed to the batched call. The optimizer is ``fused_optimizer``, an
    ``EmbagFusedOptimizer``."""

    def __init__(
        self,
        config: GroupedEmbeddingConfig,
        pg: Optional[dist.ProcessGroup] = None,
        device: Optional[torch.device] = None,
        sharding_type: Optional[ShardingType] = None,
    ) -> None:
        super().__init__(config, pg, device, sharding_type)
        params = dict(config.fused_params or {})
        optimizer = fused_optimizer_name(params)
        assert optimizer is not None, "EmbagFusedEmbeddingBag needs fused_params['optimizer']"
        for key in _UNSUPPORTED_FUSED_PARAMS:
            if params.get(key):
                raise ValueError(
                    f"embag.torchrec: fused_params[{key!r}] is {params[key]!r}; embag's fused "
                    "optimizers do not implement it (leave it unset)"
                )
        mode = params.get("weight_decay_mode")
        mode_name = "NONE" if mode is None else getattr(mode, "name", str(mode).upper())
        if mode_name not in _WEIGHT_DECAY_MODES:
            raise ValueError(
                f"embag.torchrec: fused_params['weight_decay_mode'] is {mode!r}; embag takes "
                f"WeightDecayMode.{', WeightDecayMode.'.join(_WEIGHT_DECAY_MODES)}"
            )
        self._weight_decay_mode = _WEIGHT_DECAY_MODES[mode_name]
        self._hyper = {key: float(params.get(key, default))
                       for key, default in _HYPER_DEFAULTS.items()}
        if optimizer in ("sgd", "adagrad") and self._hyper["weight_decay"] != 0:
            raise ValueError(
                f"embag.torchrec: fused_params['weight_decay'] is {self._hyper['weight_decay']!r}"
                f" with {optimizer}, which has no weight decay (as in FBGEMM): use 0"
            )
        if self._weight_decay_mode != "none" and optimizer != "rowwise_adagrad":
            raise ValueError(
                f"embag.torchrec: fused_params['weight_decay_mode'] is {mode!r}, which is for "
                f"EXACT_ROWWISE_ADAGRAD only, not {optimizer}"
            )
        self._optimizer_name = optimizer
        # Training steps taken (Adam's bias correction counts them; FBGEMM counts in forward).
        self._step = 0
        # Per table and state (momentum1, momentum2): stacked like the weights; a (0,)
        # placeholder where the optimizer keeps no such state.
        self._table_states: List[Tuple[torch.Tensor, torch.Tensor]] = []
        for weight in self._table_weights:
            shapes = _state_shapes(optimizer, int(weight.shape[0]), int(weight.shape[1]))
            self._table_states.append(tuple(  # type: ignore[arg-type]
                torch.zeros(shape, dtype=torch.float32, device=device) for shape in shapes))
        for weight in self._table_weights:
            # As TorchRec's fused kernels mark theirs: no dense optimizer is to step these
            # (torchrec.optim.optimizers.in_backward_optimizer_filter leaves them out).
            weight._in_backward_optimizers = [EmptyFusedOptimizer()]  # type: ignore[attr-defined]
        self._optim = EmbagFusedOptimizer(self, pg)

    @property
    def fused_optimizer(self) -> FusedOptimizer:
        return self._optim

    def get_learning_rate(self) -> float:
        return self._hyper["learning_rate"]

    def set_learning_rate(self, lr: float) -> None:
        self._hyper["learning_rate"] = float(lr)

    def _shard_states(self, state: int) -> List[torch.Tensor]:
        """Each local shard's rows of optimizer state ``state`` (0 or 1), in config order."""
        shards = []
        for index, start, end in self._shard_rows:
            table_state = self._table_states[index][state]
            shards.append(table_state if table_state.numel() == 0 else table_state[start:end])
        return shards

    def split_optimizer_states(self) -> List[List[torch.Tensor]]:
        """Per local shard, in config order, its optimizer state as FBGEMM's
        ``split_optimizer_states`` orders it (views: writing them changes the state)."""
        count = len(_STATE_KEYS[self._optimizer_name])
        states = [self._shard_states(k) for k in range(count)]
        return [[state[shard] for state in states] for shard in range(len(self._shard_rows))]

    def forward(
        self,
        features: KeyedJaggedTensor,
        vbe_output: Optional[torch.Tensor] = None,
        vbe_output_offsets: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        _refuse_variable_batch(features, vbe_output)
        values = features.values().to(torch.int64)
        offsets = features.offsets().to(torch.int64)
        weights = features.weights_or_none()
        if weights is not None and not torch.is_floating_point(weights):
            weights = None
        shard_weights = self._shard_weights()
        shards = len(shard_weights)
        step = self._step
        if torch.is_grad_enabled() and any(w.requires_grad for w in self._table_weights):
            # This forward will have a backward, the optimizer's step (counted once the call
            # has passed validation).
            step = self._step + 1
        hyper = self._hyper
        try:
            pooled = torch.ops.embag.batched_embedding_bags(
                shard_weights, list(self._feature_table_map), ",".join([self._mode] * shards),
                [0] * shards, [False] * shards, values, offsets, weights,
                self._optimizer_name,
                [hyper["learning_rate"], hyper["eps"], hyper["beta1"], hyper["beta2"],
                 hyper["weight_decay"]],
                self._weight_decay_mode, step, self._shard_states(0), self._shard_states(1),
                False,
            )
        except EmbeddingBagError as error:
            # The batched call names feature and table by position in this config.
            message = str(error)
            found = re.match(r"feature (\d+) \(table (\d+)\): ", message)
            if found is None:
                raise type(error)(f"embag.torchrec: features {features.keys()}: {message}") \
                    from error
            where = self._where(features.keys()[int(found.group(1))], int(found.group(2)))
            raise type(error)(where + message[found.end():]) from error
        self._step = step
        return pooled


def _rowwise_state_metadata(
    table: Any, state: torch.Tensor
) -> Tuple[Dict[Any, ShardMetadata], ShardedTensorMetadata]:
    """Each of the table's shards' metadata to its row-wise state's (1-D), and the state's
    global metadata: the layout TorchRec's EmbeddingFusedOptimizer gives row-wise state (a
    column-wise table's shards' states laid end to end, in column order)."""
    global_metadata = table.global_metadata
    shards = list(global_metadata.shards_metadata)
    column_wise = table.local_cols != table.embedding_dim
    if column_wise and table.local_rows != table.num_embeddings:
        raise NotImplementedError(
            f"embag.torchrec: table {table.name!r} is sharded by rows and columns (grid); "
            "embag's fused optimizers have no row-wise state layout for it"
        )
    if column_wise:
        shards.sort(key=lambda shard: shard.shard_offsets[1])
    mapping = {}
    for position, shard in enumerate(shards):
        offset = position * shard.shard_sizes[0] if column_wise else shard.shard_offsets[0]
        mapping[shard] = ShardMetadata(shard_offsets=[offset], shard_sizes=[shard.shard_sizes[0]],
                                       placement=shard.placement)
    size = global_metadata.size[0] * (len(shards) if column_wise else 1)
    return mapping, ShardedTensorMetadata(
        shards_metadata=list(mapping.values()), size=torch.Size([size]),
        tensor_properties=TensorProperties(dtype=state.dtype, requires_grad=False),
    )


class EmbagFusedOptimizer(FusedOptimizer):
    """TorchRec's view of an ``EmbagFusedEmbeddingBag``'s optimizer, as TorchRec's
    ``EmbeddingFusedOptimizer`` is of FBGEMM's: ``params`` each table's weight as a
    ``ShardedTensor`` (``<table>.weight``), ``state`` per weight its optimizer states as
    ``ShardedTensor``s (``<table>.momentum1``, ...), one param group whose ``lr`` is the
    learning rate. ``step()`` and ``zero_grad()`` only hand the group's ``lr`` to the kernel (for
    the next backward): the update itself happened in backward."""

    def __init__(self, kernel: EmbagFusedEmbeddingBag,
                 pg: Optional[dist.ProcessGroup] = None) -> None:
        self._kernel = kernel
        config = kernel.config
        state_keys = _STATE_KEYS[kernel._optimizer_name]
        shard_weights = kernel.split_embedding_weights()
        shard_states = [kernel._shard_states(k) for k in range(len(state_keys))]
        by_table: Dict[str, List[int]] = {}
        for shard, table in enumerate(config.embedding_tables):
            by_table.setdefault(table.name, []).append(shard)
        params: Dict[str, Any] = {}
        state: Dict[Any, Any] = {}
        param_group: Dict[str, Any] = {"params": [], "lr": kernel.get_learning_rate()}
        for name, shard_indices in by_table.items():
            table = config.embedding_tables[shard_indices[0]]
            assert table.global_metadata is not None
            metadata = copy.deepcopy(table.global_metadata)
            metadata.tensor_properties.dtype = shard_weights[shard_indices[0]].dtype
            metadata.tensor_properties.requires_grad = False
            weight = ShardedTensor._init_from_local_shards_and_global_metadata(
                local_shards=[Shard(shard_weights[s], config.embedding_tables[s].local_metadata)
                              for s in shard_indices],
                sharded_tensor_metadata=metadata,
                process_group=pg,
            )
            params[f"{name}.weight"] = weight
            param_group["params"].append(weight)
            state[weight] = {}
            for k, key in enumerate(state_keys):
                local = [shard_states[k][s] for s in shard_indices]
                if local[0].dim() == 1:
                    mapping, state_metadata = _rowwise_state_metadata(table, local[0])
                    shards = [Shard(tensor, mapping[config.embedding_tables[s].local_metadata])
                              for tensor, s in zip(local, shard_indices)]
                else:
                    # pointwise: laid out as the weight
                    state_metadata = copy.deepcopy(metadata)
                    state_metadata.tensor_properties.dtype = local[0].dtype
                    shards = [Shard(tensor, config.embedding_tables[s].local_metadata)
                              for tensor, s in zip(local, shard_indices)]
                state[weight][f"{name}.{key}"] = (
                    ShardedTensor._init_from_local_shards_and_global_metadata(
                        local_shards=shards, sharded_tensor_metadata=state_metadata,
                        process_group=pg,
                    )
                )
        super().__init__(params, state, [param_group])

    def zero_grad(self, set_to_none: bool = False) -> None:
        self._kernel.set_learning_rate(self.param_groups[0]["lr"])  # type: ignore[index]

    def step(self, closure: Any = None) -> None:
        self._kernel.set_learning_rate(self.param_groups[0]["lr"])  # type: ignore[index]


def _agree_on_errors(group: dist.ProcessGroup, error: Optional[EmbeddingBagError]) -> None:
    """Raises on every rank of ``group`` if any rank's lookup raised ``error``: one all-reduce of
    the count of failed ranks (the cost on the normal path), then, only when it is not zero, an
    all-gather of the failed ranks' messages. Every rank calls it at the same point of the same
    forward, so the group's collectives stay in step whether or not one fails."""
    failed = torch.tensor([0 if error is None else 1], dtype=torch.int64)
    dist.all_reduce(failed, group=group)
    if int(failed) == 0:
        return
    messages: List[Optional[str]] = [None] * dist.get_world_size(group)
    dist.all_gather_object(messages, None if error is None else str(error), group=group)
    if error is not None:
        raise error
    rank, message = next((r, m) for r, m in enumerate(messages) if m is not None)
    raise EmbeddingBagError(
        f"embag.torchrec: rank {rank} refused its shards' batch, so this forward stops on every "
        f"rank ({int(failed)} failed; nothing written): {message}"
    )


class EmbagPooledEmbeddingsLookup(GroupedPooledEmbeddingsLookup):
    """TorchRec's pooled lookup, with ``EmbagEmbeddingBag`` for customized configs
    (``EmbagFusedEmbeddingBag`` where their ``fused_params`` name an optimizer).

    With an ``error_group`` (the sharded collection gives one where the plan puts any table of
    this lookup's sharding type on embag, on every rank alike), a batch that a rank's embag
    kernel refuses fails the forward on every rank of the group (``_agree_on_errors``), and the
    fused kernels of ranks whose batch was fine take back the step they counted."""

    def __init__(self, *args: Any, error_group: Optional[dist.ProcessGroup] = None,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._error_group = error_group

    def forward(self, sparse_features: KeyedJaggedTensor) -> torch.Tensor:
        if self._error_group is None:
            return super().forward(sparse_features)
        fused = [module for module in self._emb_modules
                 if isinstance(module, EmbagFusedEmbeddingBag)]
        steps = [module._step for module in fused]
        error: Optional[EmbeddingBagError] = None
        try:
            embeddings = super().forward(sparse_features)
        except EmbeddingBagError as raised:
            error = raised
        try:
            _agree_on_errors(self._error_group, error)
        except EmbeddingBagError:
            for module, step in zip(fused, steps):
                module._step = step
            raise
        return embeddings

    def _create_embedding_kernel(
        self,
        config: GroupedEmbeddingConfig,
        device: Optional[torch.device],
        pg: Optional[dist.ProcessGroup],
        sharding_type: Optional[ShardingType],
        env: Optional[ShardingEnv],
    ) -> BaseEmbedding:
        if _is_embag(config.compute_kernel) and fused_optimizer_name(config.fused_params):
            return EmbagFusedEmbeddingBag(config=config, pg=pg, device=device,
                                          sharding_type=sharding_type)
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
            # Every rank calls every sharding type's lookup once per forward, so all agree on
            # errors in the lookups whose type has an embag table anywhere in the plan.
            on_embag = any(
                sharding.sharding_type == sharding_type and _is_embag(sharding.compute_kernel)
                for sharding in self.module_sharding_plan.values()
            )
            self._lookups.append(
                EmbagPooledEmbeddingsLookup(
                    grouped_configs=grouped_configs,
                    pg=sharding._pg,
                    device=sharding._device,
                    sharding_type=ShardingType(sharding_type) if mean_after_reduce else None,
                    env=sharding._env,
                    error_group=self._env.process_group if on_embag else None,
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
