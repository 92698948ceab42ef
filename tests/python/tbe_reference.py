"""Two independent peers for embag's table-batched embedding bags (test helpers, not tests).

- ``FbgemmTbe``: FBGEMM's ``SplitTableBatchedEmbeddingBagsCodegen`` on the CPU
  (``EmbeddingLocation.HOST``, ``ComputeDevice.CPU``), set up from given tables, stepped with a
  given output gradient, read back as plain tensors. fbgemm-gpu-cpu 1.9.0's CPU build trains
  with ``EXACT_SGD``, ``EXACT_ADAGRAD`` and ``EXACT_ROWWISE_ADAGRAD`` only (its constructor
  asserts "Optimizer adam is not supported in CPU mode"), needs D % 4 == 0, and its lookup is an
  autograd function that refuses ``torch.inference_mode()`` (``no_grad`` works).
- ``reference_step``: the same update written out in float32 PyTorch, row by row, from FBGEMM's
  published update rules (fbgemm_gpu/codegen/genscript/optimizers.py, the CPU and CUDA bodies),
  for the optimizer FBGEMM's CPU build lacks (Adam, whose rule is its CUDA one) and as a
  second opinion on the others.

Both take the table-batched layout embag's module takes: T tables, F features with a
feature -> table map, one flat ``indices``, ``offsets`` of F * B + 1 in feature-major order
(feature 0's B bags, then feature 1's, ...), output ``[B, sum of each feature's D]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import torch
from torch import Tensor

# embag's optimizer names -> FBGEMM's OptimType member names.
FBGEMM_OPTIMIZERS = {
    "sgd": "EXACT_SGD",
    "adagrad": "EXACT_ADAGRAD",
    "rowwise_adagrad": "EXACT_ROWWISE_ADAGRAD",
    "adam": "ADAM",
}
# What fbgemm-gpu-cpu's CPU build can train with (asserted in its constructor).
FBGEMM_CPU_OPTIMIZERS = ("sgd", "adagrad", "rowwise_adagrad")


def fbgemm_available() -> bool:
    try:
        import fbgemm_gpu  # noqa: F401, PLC0415
    except (ImportError, OSError):
        return False
    return True


@dataclass
class Hyper:
    """Optimizer hyper-parameters, with FBGEMM's defaults (its constructor's keywords)."""

    lr: float = 0.01
    eps: float = 1.0e-8
    weight_decay: float = 0.0
    weight_decay_mode: str = "none"  # "none", "l2", "decoupled" (FBGEMM's NONE, L2, DECOUPLE)
    beta1: float = 0.9
    beta2: float = 0.999


@dataclass
class Batch:
    indices: Tensor
    offsets: Tensor
    per_sample_weights: Optional[Tensor] = None


@dataclass
class ReferenceState:
    """Tables and optimizer state the reference updates in place (float32)."""

    weights: list[Tensor]
    optimizer: Optional[str]
    hyper: Hyper
    states: list[dict[str, Tensor]] = field(default_factory=list)
    step: int = 0

    def __post_init__(self) -> None:
        self.weights = [w.detach().clone().float() for w in self.weights]
        for w in self.weights:
            rows, dim = w.shape
            if self.optimizer == "adagrad":
                self.states.append({"momentum1": torch.zeros(rows, dim)})
            elif self.optimizer == "rowwise_adagrad":
                self.states.append({"momentum1": torch.zeros(rows)})
            elif self.optimizer == "adam":
                self.states.append({"momentum1": torch.zeros(rows, dim),
                                    "momentum2": torch.zeros(rows, dim)})
            else:
                self.states.append({})


def feature_dims(weights: Sequence[Tensor], feature_table_map: Sequence[int]) -> list[int]:
    return [int(weights[t].shape[1]) for t in feature_table_map]


def reference_forward(weights: Sequence[Tensor], feature_table_map: Sequence[int], batch: Batch,
                      pooling: str) -> Tensor:
    """``[B, sum D]`` by ``F.embedding_bag`` per feature (float32)."""
    features = len(feature_table_map)
    bags = (batch.offsets.numel() - 1) // features
    blocks = []
    for f, t in enumerate(feature_table_map):
        start, end = int(batch.offsets[f * bags]), int(batch.offsets[(f + 1) * bags])
        local = batch.offsets[f * bags:(f + 1) * bags + 1] - start
        psw = None if batch.per_sample_weights is None else batch.per_sample_weights[start:end]
        blocks.append(torch.nn.functional.embedding_bag(
            batch.indices[start:end].long(), weights[t].float(), local.long(),
            mode=pooling, per_sample_weights=psw, include_last_offset=True))
    return torch.cat(blocks, dim=1)


def row_gradients(weights: Sequence[Tensor], feature_table_map: Sequence[int], batch: Batch,
                  pooling: str, grad_output: Tensor) -> list[tuple[Tensor, Tensor]]:
    """Per table: (the rows touched, ascending; their summed gradient rows), every position's
    contribution summed in input order (duplicates included) in float32."""
    features = len(feature_table_map)
    bags = (batch.offsets.numel() - 1) // features
    dims = feature_dims(weights, feature_table_map)
    column = [0]
    for d in dims:
        column.append(column[-1] + d)
    sums: list[dict[int, Tensor]] = [dict() for _ in weights]
    for f, t in enumerate(feature_table_map):
        for b in range(bags):
            start = int(batch.offsets[f * bags + b])
            end = int(batch.offsets[f * bags + b + 1])
            g = grad_output[b, column[f]:column[f + 1]].float()
            for p in range(start, end):
                row = int(batch.indices[p])
                if pooling == "mean":
                    contribution = g / (end - start)
                elif batch.per_sample_weights is not None:
                    contribution = g * batch.per_sample_weights[p]
                else:
                    contribution = g
                if row in sums[t]:
                    sums[t][row] = sums[t][row] + contribution
                else:
                    sums[t][row] = contribution.clone()
    out = []
    for t, w in enumerate(weights):
        rows = sorted(sums[t])
        values = (torch.stack([sums[t][r] for r in rows]) if rows
                  else torch.zeros(0, w.shape[1]))
        out.append((torch.tensor(rows, dtype=torch.int64), values))
    return out


def reference_step(state: ReferenceState, feature_table_map: Sequence[int], batch: Batch,
                   pooling: str, grad_output: Tensor) -> None:
    """One fused step: FBGEMM's update rule on each touched row of each table."""
    state.step += 1
    h = state.hyper
    grads = row_gradients(state.weights, feature_table_map, batch, pooling, grad_output)
    for t, (rows, values) in enumerate(grads):
        w, s = state.weights[t], state.states[t]
        for row, g in zip(rows.tolist(), values):
            if state.optimizer == "sgd":
                w[row] -= h.lr * g
            elif state.optimizer == "adagrad":
                s["momentum1"][row] += g * g
                w[row] -= h.lr * g / (torch.sqrt(s["momentum1"][row]) + h.eps)
            elif state.optimizer == "rowwise_adagrad":
                decayed = g + h.weight_decay * w[row] if h.weight_decay_mode == "l2" else g
                s["momentum1"][row] += (decayed * decayed).sum() / g.numel()
                multiplier = h.lr / (torch.sqrt(s["momentum1"][row]) + h.eps)
                if h.weight_decay_mode == "l2":
                    correction = 1.0 - multiplier * h.weight_decay
                elif h.weight_decay_mode == "decoupled":
                    correction = 1.0 - h.lr * h.weight_decay
                else:
                    correction = 1.0
                w[row] = correction * w[row] - multiplier * g
            elif state.optimizer == "adam":
                m, v = s["momentum1"], s["momentum2"]
                # The betas are float32 first, then 1 - beta (exact in float32), as FBGEMM's
                # kernel has them: (1 - beta2) from the double 0.999 would differ by 1e-5.
                b1, b2 = np.float32(h.beta1), np.float32(h.beta2)
                m[row] = m[row] * float(b1) + g * float(np.float32(1) - b1)
                v[row] = v[row] * float(b2) + (g * g) * float(np.float32(1) - b2)
                # float32 powf (NumPy's float32 power is libm's powf; torch.pow special-cases
                # small integer exponents) and 1 - powf, as FBGEMM's kernel: 1 - beta2^t
                # cancels, so float32's rounding of beta2^t shows in the bias correction
                c1 = np.float32(1) - np.power(b1, np.float32(state.step))
                c2 = np.float32(1) - np.power(b2, np.float32(state.step))
                m_hat = m[row] / float(c1)
                v_hat = v[row] / float(c2)
                w[row] -= h.lr * (m_hat / (torch.sqrt(v_hat) + h.eps) + h.weight_decay * w[row])
            else:
                raise ValueError(f"no reference update for optimizer {state.optimizer!r}")


class FbgemmTbe:
    """FBGEMM's CPU TBE over the given tables (copied in), one module per instance."""

    def __init__(self, weights: Sequence[Tensor], feature_table_map: Sequence[int], pooling: str,
                 optimizer: str, hyper: Hyper) -> None:
        from fbgemm_gpu.split_table_batched_embeddings_ops_common import (  # noqa: PLC0415
            BoundsCheckMode, EmbeddingLocation, PoolingMode)
        from fbgemm_gpu.split_table_batched_embeddings_ops_training import (  # noqa: PLC0415
            ComputeDevice, OptimType, SplitTableBatchedEmbeddingBagsCodegen)
        from fbgemm_gpu.tbe.config.optimizer_config import WeightDecayMode  # noqa: PLC0415

        specs = [(int(w.shape[0]), int(w.shape[1]), EmbeddingLocation.HOST, ComputeDevice.CPU)
                 for w in weights]
        self.module = SplitTableBatchedEmbeddingBagsCodegen(
            specs,
            feature_table_map=list(feature_table_map),
            optimizer=getattr(OptimType, FBGEMM_OPTIMIZERS[optimizer]),
            pooling_mode={"sum": PoolingMode.SUM, "mean": PoolingMode.MEAN}[pooling],
            learning_rate=hyper.lr,
            eps=hyper.eps,
            weight_decay=hyper.weight_decay,
            weight_decay_mode={"none": WeightDecayMode.NONE, "l2": WeightDecayMode.L2,
                               "decoupled": WeightDecayMode.DECOUPLE}[hyper.weight_decay_mode],
            beta1=hyper.beta1,
            beta2=hyper.beta2,
            bounds_check_mode=BoundsCheckMode.FATAL,
        )
        with torch.no_grad():
            for mine, given in zip(self.module.split_embedding_weights(), weights):
                mine.copy_(given)

    def forward(self, batch: Batch) -> Tensor:
        return self.module(batch.indices.long(), batch.offsets.long(),
                           per_sample_weights=batch.per_sample_weights)

    def step(self, batch: Batch, grad_output: Tensor) -> Tensor:
        output = self.forward(batch)
        output.backward(grad_output)
        return output.detach()

    def weights(self) -> list[Tensor]:
        return [w.clone() for w in self.module.split_embedding_weights()]

    def states(self) -> list[list[Tensor]]:
        """Per table, FBGEMM's optimizer states (momentum1 for the two Adagrads; none for SGD)."""
        if self.module.optimizer.name == "EXACT_SGD":
            return [[] for _ in self.module.embedding_specs]
        return [[s.clone() for s in table] for table in self.module.split_optimizer_states()]


def random_batch(generator: torch.Generator, rows: Sequence[int], feature_table_map: Sequence[int],
                 bags: int, max_pooling: int, *, hot_rows: int = 0, with_weights: bool = False,
                 index_dtype: torch.dtype = torch.int64, empty_bags: bool = True) -> Batch:
    """Feature-major indices/offsets. ``hot_rows`` > 0 draws every index from the first
    ``hot_rows`` rows of its table (duplicate-heavy); ``empty_bags`` lets bags have no index."""
    lengths = []
    indices = []
    for t in feature_table_map:
        low = 0 if empty_bags else 1
        counts = torch.randint(low, max_pooling + 1, (bags,), generator=generator)
        lengths.append(counts)
        limit = min(hot_rows, rows[t]) if hot_rows else rows[t]
        indices.append(torch.randint(0, limit, (int(counts.sum()),), generator=generator))
    all_lengths = torch.cat(lengths)
    offsets = torch.zeros(all_lengths.numel() + 1, dtype=torch.int64)
    offsets[1:] = torch.cumsum(all_lengths, 0)
    flat = torch.cat(indices)
    psw = torch.rand(flat.numel(), generator=generator) + 0.5 if with_weights else None
    return Batch(flat.to(index_dtype), offsets.to(index_dtype), psw)
