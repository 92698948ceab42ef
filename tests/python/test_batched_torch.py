"""embag.torch.TableBatchedEmbeddingBags (`make test-python`; needs PyTorch, and fbgemm-gpu-cpu for
the FBGEMM comparisons, which skip with the reason when it is missing).

- forward: bitwise equal to one embag.torch.embedding_bag call per feature, and close to
  F.embedding_bag, over random T, D (1, 3, 33, ...), dtypes, poolings, int32/int64, empty bags,
  padding and shared tables;
- autograd (no optimizer): per-table dense and sparse gradients, and per_sample_weights', against
  per-feature F.embedding_bag;
- fused optimizers over 5 steps of duplicate-heavy batches: within 1e-6 (relative, see _close) of
  FBGEMM's CPU TBE for SGD, Adagrad and row-wise Adagrad, and of tbe_reference's explicit update
  for all four (FBGEMM's CPU build has no Adam, and its CPU kernel ignores weight decay: those
  FBGEMM cases skip, saying so, after checking that it still does);
- a two-tower model trained 20 steps with the losses of the same model on FBGEMM's TBE;
- torch.compile(fullgraph=True), torch.inference_mode(), state_dict round trips, opcheck;
- bad input: embag's error naming the feature and table, nothing written.
"""

from __future__ import annotations

import copy
import itertools
from typing import Optional

import pytest
import torch
import torch.nn.functional as F

import embag
import embag.torch as et
from tbe_reference import (FBGEMM_CPU_OPTIMIZERS, Batch, FbgemmTbe, Hyper, ReferenceState,
                           fbgemm_available, random_batch, reference_forward, reference_step)

needs_fbgemm = pytest.mark.skipif(not fbgemm_available(),
                                  reason="fbgemm_gpu is not installed in this environment "
                                  "(scripts/install-deps.sh --torch installs fbgemm-gpu-cpu)")


def _close(actual: torch.Tensor, expected: torch.Tensor, what: str) -> None:
    """Within 1e-6 relative (and 1e-6 absolute near 0): Adagrad's accumulators reach hundreds
    with duplicate-heavy batches, where float32's own spacing is ~3e-5, so a purely absolute 1e-6
    would ask for more than float32 holds; two float32 computations summing in different orders
    differ by a few ulps."""
    torch.testing.assert_close(actual, expected, rtol=1e-6, atol=1e-6, msg=lambda m: f"{what}: {m}")


def _module(rows, dims, ftm, *, pooling="sum", dtype=torch.float32, optimizer=None, seed=0,
            padding=None, hyper: Optional[Hyper] = None, sparse=False):
    hyper = hyper or Hyper()
    specs = [et.TableSpec(r, d, padding_idx=None if padding is None else padding[t])
             for t, (r, d) in enumerate(zip(rows, dims))]
    module = et.TableBatchedEmbeddingBags(
        specs, ftm, pooling=pooling, dtype=dtype, optimizer=optimizer,
        learning_rate=hyper.lr, eps=hyper.eps, beta1=hyper.beta1, beta2=hyper.beta2,
        weight_decay=hyper.weight_decay, weight_decay_mode=hyper.weight_decay_mode,
        sparse=sparse)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for w in module.split_embedding_weights():
            w.copy_(torch.randn(w.shape, generator=g))
    return module


def _feature_slices(batch: Batch, features: int):
    bags = (batch.offsets.numel() - 1) // features
    for f in range(features):
        start, end = int(batch.offsets[f * bags]), int(batch.offsets[(f + 1) * bags])
        local = batch.offsets[f * bags:(f + 1) * bags + 1] - start
        psw = None if batch.per_sample_weights is None else batch.per_sample_weights[start:end]
        yield f, batch.indices[start:end], local, psw


# ---- Forward -------------------------------------------------------------------------------

FORWARD_CASES = list(itertools.product(
    ("sum", "mean", "max", "weighted"), (torch.float32, torch.float16, torch.bfloat16),
    (torch.int32, torch.int64)))


@pytest.mark.parametrize("pooling,dtype,index_dtype", FORWARD_CASES)
def test_forward_matches_single_calls(pooling: str, dtype: torch.dtype,
                                      index_dtype: torch.dtype) -> None:
    for seed in range(3):
        g = torch.Generator().manual_seed(100 + seed)
        tables = int(torch.randint(1, 5, (1,), generator=g))
        rows = [int(r) for r in torch.randint(1, 40, (tables,), generator=g)]
        dims = [(1, 3, 33, 8, 16, 5)[int(i)] for i in torch.randint(0, 6, (tables,), generator=g)]
        # shared tables, not necessarily adjacent
        ftm = [int(t) for t in torch.randint(0, tables, (tables + 2,), generator=g)]
        padding = [int(torch.randint(-r, r, (1,), generator=g)) if seed == 1 else None
                   for r in rows]
        mode = "sum" if pooling == "weighted" else pooling
        module = _module(rows, dims, ftm, pooling=mode, dtype=dtype, seed=seed, padding=padding)
        batch = random_batch(g, rows, ftm, 7, 6, with_weights=pooling == "weighted",
                             index_dtype=index_dtype)
        if batch.per_sample_weights is not None:
            batch.per_sample_weights = batch.per_sample_weights.to(dtype)
        with torch.no_grad():
            out = module(batch.indices, batch.offsets, batch.per_sample_weights)
        assert out.shape == (7, sum(dims[t] for t in ftm)) and out.dtype == dtype
        weights = module.split_embedding_weights()
        column = 0
        for f, indices, offsets, psw in _feature_slices(batch, len(ftm)):
            t = ftm[f]
            single = et.embedding_bag(indices, weights[t], offsets, mode=mode,
                                      per_sample_weights=psw, include_last_offset=True,
                                      padding_idx=padding[t])
            block = out[:, column:column + dims[t]]
            assert torch.equal(block, single), f"seed {seed} feature {f}: not bitwise equal"
            if dtype == torch.float32:
                expected = F.embedding_bag(indices.long(), weights[t], offsets.long(), mode=mode,
                                           per_sample_weights=psw, include_last_offset=True,
                                           padding_idx=padding[t])
                torch.testing.assert_close(block, expected, rtol=1e-5, atol=1e-5)
            column += dims[t]


def test_forward_inference_mode_and_layout() -> None:
    # FBGEMM's CPU lookup refuses inference_mode (an autograd function); embag's runs.
    module = _module([10, 20, 5], [4, 8, 3], [2, 0, 1, 0])
    batch = random_batch(torch.Generator().manual_seed(1), [10, 20, 5], [2, 0, 1, 0], 5, 4)
    with torch.inference_mode():
        out = module(batch.indices, batch.offsets)
    expected = reference_forward(module.split_embedding_weights(), [2, 0, 1, 0], batch, "sum")
    torch.testing.assert_close(out, expected, rtol=1e-6, atol=1e-6)
    # int32 offsets with int64 indices are taken (FBGEMM takes either)
    with torch.no_grad():
        mixed = module(batch.indices, batch.offsets.int())
    assert torch.equal(mixed, out)


@needs_fbgemm
def test_forward_matches_fbgemm() -> None:
    rows, dims, ftm = [30, 7, 100], [8, 4, 12], [0, 0, 1, 2]
    for pooling, weighted in (("sum", False), ("sum", True), ("mean", False)):
        module = _module(rows, dims, ftm, pooling=pooling)
        tbe = FbgemmTbe(module.split_embedding_weights(), ftm, pooling, "sgd", Hyper())
        batch = random_batch(torch.Generator().manual_seed(5), rows, ftm, 9, 7,
                             with_weights=weighted)
        with torch.no_grad():
            mine = module(batch.indices, batch.offsets, batch.per_sample_weights)
            theirs = tbe.forward(batch)
        _close(mine, theirs, f"forward {pooling}{' weighted' if weighted else ''}")


# ---- Autograd gradients (no fused optimizer) --------------------------------------------

@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("pooling", ["sum", "mean", "weighted"])
def test_autograd_gradients(pooling: str, sparse: bool) -> None:
    rows, dims, ftm = [12, 9, 30], [3, 8, 1], [1, 0, 2, 0]
    mode = "sum" if pooling == "weighted" else pooling
    module = _module(rows, dims, ftm, pooling=mode, sparse=sparse, padding=[None, 2, None])
    g = torch.Generator().manual_seed(7)
    batch = random_batch(g, rows, ftm, 6, 5, hot_rows=4, with_weights=pooling == "weighted")
    psw = None
    if batch.per_sample_weights is not None:
        psw = batch.per_sample_weights.clone().requires_grad_()
    out = module(batch.indices, batch.offsets, psw)
    grad_out = torch.randn(out.shape, generator=g)
    out.backward(grad_out)

    # the same through F.embedding_bag, per feature
    leaves = [w.detach().clone().requires_grad_() for w in module.weights]
    psw_ref = None if psw is None else psw.detach().clone().requires_grad_()
    blocks = []
    for f, indices, offsets, _ in _feature_slices(batch, len(ftm)):
        start = int(batch.offsets[f * 6])
        p = None if psw_ref is None else psw_ref[start:start + indices.numel()]
        blocks.append(F.embedding_bag(indices, leaves[ftm[f]], offsets, mode=mode,
                                      per_sample_weights=p, include_last_offset=True,
                                      padding_idx=[None, 2, None][ftm[f]]))
    torch.cat(blocks, 1).backward(grad_out)
    for t, (w, ref) in enumerate(zip(module.weights, leaves)):
        assert w.grad is not None
        assert w.grad.layout == (torch.sparse_coo if sparse else torch.strided)
        if sparse:
            rows = w.grad._indices()[0]
            assert bool((rows[1:] > rows[:-1]).all()), "sparse rows not strictly ascending"
        torch.testing.assert_close(w.grad.to_dense(), ref.grad, rtol=1e-5, atol=1e-6,
                                   msg=lambda m: f"table {t}: {m}")
    if psw is not None:
        torch.testing.assert_close(psw.grad, psw_ref.grad, rtol=1e-5, atol=1e-6)


# ---- Fused optimizers -------------------------------------------------------------------

FUSED_CASES = [
    ("sgd", "sum", "none"), ("sgd", "mean", "none"), ("sgd", "weighted", "none"),
    ("adagrad", "sum", "none"), ("adagrad", "mean", "none"), ("adagrad", "weighted", "none"),
    ("rowwise_adagrad", "sum", "none"), ("rowwise_adagrad", "mean", "none"),
    ("rowwise_adagrad", "weighted", "none"), ("rowwise_adagrad", "sum", "l2"),
    ("rowwise_adagrad", "weighted", "decoupled"),
    ("adam", "sum", "none"), ("adam", "mean", "none"), ("adam", "weighted", "none"),
]
# FBGEMM's CPU TBE merges the features of a table only when they are adjacent in
# feature_table_map (TorchRec's layout), so the shared table here is adjacent; with a shared
# table elsewhere FBGEMM applies one update per run of features (embag folds every feature's
# terms into one update, test_fused_non_adjacent_shared_table).
ROWS, DIMS, FTM = [40, 7, 100], [8, 4, 12], [0, 0, 1, 2]


def _hyper(optimizer: str, decay: str) -> Hyper:
    return Hyper(lr=0.05, eps=1e-6 if optimizer != "adam" else 1e-8,
                 weight_decay=0.01 if decay != "none" else 0.0, weight_decay_mode=decay)


def _run_fused(optimizer: str, pooling: str, decay: str, peer: str, ftm=FTM) -> None:
    mode = "sum" if pooling == "weighted" else pooling
    hyper = _hyper(optimizer, decay)
    module = _module(ROWS, DIMS, ftm, pooling=mode, optimizer=optimizer, hyper=hyper, seed=3)
    start = module.split_embedding_weights()
    if peer == "fbgemm":
        other = FbgemmTbe(start, ftm, mode, optimizer, hyper)
    else:
        other = ReferenceState(start, optimizer, hyper)
    g = torch.Generator().manual_seed(11)
    for step in range(5):
        # duplicate-heavy: every index among each table's first 3 rows
        batch = random_batch(g, ROWS, ftm, 6, 9, hot_rows=3, with_weights=pooling == "weighted")
        out = module(batch.indices, batch.offsets, batch.per_sample_weights)
        grad_out = torch.randn(out.shape, generator=g)
        if peer == "fbgemm":
            expected = other.step(batch, grad_out)
        else:
            expected = reference_forward(other.weights, ftm, batch, mode)
            reference_step(other, ftm, batch, mode, grad_out)
        _close(out.detach(), expected, f"step {step} output")
        out.backward(grad_out)
        assert all(w.grad is None for w in module.weights), "a fused step keeps no .grad"
    theirs_w = other.weights() if peer == "fbgemm" else other.weights
    for t, (mine, theirs) in enumerate(zip(module.split_embedding_weights(), theirs_w)):
        _close(mine, theirs, f"table {t} after 5 steps")
    if optimizer == "sgd":
        return
    mine_s = module.split_optimizer_states()
    if peer == "fbgemm":
        theirs_s = other.states()
    else:
        theirs_s = [[s[k] for k in ("momentum1", "momentum2") if k in s] for s in other.states]
    for t, (mine, theirs) in enumerate(zip(mine_s, theirs_s)):
        assert len(mine) == len(theirs)
        for k, (a, b) in enumerate(zip(mine, theirs)):
            _close(a, b.reshape(a.shape), f"table {t} momentum{k + 1}")
    assert int(module.step) == 5


@pytest.mark.parametrize("optimizer,pooling,decay", FUSED_CASES)
def test_fused_matches_reference(optimizer: str, pooling: str, decay: str) -> None:
    _run_fused(optimizer, pooling, decay, "reference")


@needs_fbgemm
@pytest.mark.parametrize("optimizer,pooling,decay", FUSED_CASES)
def test_fused_matches_fbgemm(optimizer: str, pooling: str, decay: str) -> None:
    if optimizer not in FBGEMM_CPU_OPTIMIZERS:
        try:
            FbgemmTbe([torch.zeros(4, 4)], [0], "sum", optimizer, Hyper())
        except AssertionError as error:
            pytest.skip(f"FBGEMM's CPU TBE has no {optimizer} ({error}); "
                        "test_fused_matches_reference checks it against the explicit update")
        pytest.fail(f"FBGEMM's CPU TBE now takes {optimizer}: add it to FBGEMM_CPU_OPTIMIZERS")
    if decay != "none" and _fbgemm_ignores_weight_decay(decay):
        pytest.skip(f"FBGEMM's CPU TBE ignores weight_decay (mode {decay}: its weights equal "
                    "those without decay); test_fused_matches_reference checks embag's decay "
                    "against FBGEMM's published update rule")
    _run_fused(optimizer, pooling, decay, "fbgemm")


def _fbgemm_ignores_weight_decay(decay: str) -> bool:
    g = torch.Generator().manual_seed(1)
    start = [torch.randn(6, 4, generator=g)]
    batch = Batch(torch.tensor([1, 2, 1]), torch.tensor([0, 2, 3]))
    grad = torch.randn(2, 4, generator=g)
    results = []
    for mode in ("none", decay):
        hyper = Hyper(lr=0.1, eps=1e-6, weight_decay=0.3 if mode != "none" else 0.0,
                      weight_decay_mode=mode)
        tbe = FbgemmTbe(start, [0], "sum", "rowwise_adagrad", hyper)
        tbe.step(batch, grad)
        results.append(tbe.weights()[0])
    return torch.equal(results[0], results[1])


def test_fused_non_adjacent_shared_table() -> None:
    # Table 0 read by features 0 and 3: one update from both features' terms.
    for optimizer in ("adagrad", "rowwise_adagrad", "adam"):
        _run_fused(optimizer, "sum", "none", "reference", ftm=[0, 1, 2, 0])


def test_fused_sgd_equals_autograd_then_sgd() -> None:
    # Independent of either peer: fused SGD == autograd gradient + w -= lr * grad.
    fused = _module(ROWS, DIMS, FTM, optimizer="sgd", hyper=Hyper(lr=0.1))
    plain = _module(ROWS, DIMS, FTM, hyper=Hyper(lr=0.1))
    batch = random_batch(torch.Generator().manual_seed(2), ROWS, FTM, 5, 8, hot_rows=2)
    grad_out = torch.randn(5, sum(DIMS[t] for t in FTM))
    fused(batch.indices, batch.offsets).backward(grad_out)
    plain(batch.indices, batch.offsets).backward(grad_out)
    with torch.no_grad():
        for w in plain.weights:
            w -= 0.1 * w.grad
    for a, b in zip(fused.split_embedding_weights(), plain.split_embedding_weights()):
        _close(a, b, "fused SGD")


# ---- Two-tower model against FBGEMM -----------------------------------------------------

class TwoTower(torch.nn.Module):
    def __init__(self, user: torch.nn.Module, item: torch.nn.Module, user_width: int,
                 item_width: int) -> None:
        super().__init__()
        self.user, self.item = user, item
        self.user_mlp = torch.nn.Sequential(torch.nn.Linear(user_width, 16), torch.nn.ReLU(),
                                            torch.nn.Linear(16, 8))
        self.item_mlp = torch.nn.Sequential(torch.nn.Linear(item_width, 16), torch.nn.ReLU(),
                                            torch.nn.Linear(16, 8))

    def forward(self, user: Batch, item: Batch) -> torch.Tensor:
        u = self.user_mlp(self.user(user.indices, user.offsets, user.per_sample_weights))
        i = self.item_mlp(self.item(item.indices, item.offsets, item.per_sample_weights))
        return (u * i).sum(1)


@needs_fbgemm
@pytest.mark.parametrize("optimizer", ["rowwise_adagrad", "adagrad", "sgd"])
def test_two_tower_losses_match_fbgemm(optimizer: str) -> None:
    user_rows, user_dims, user_ftm = [1000, 50, 300], [16, 8, 16], [0, 0, 1, 2]
    item_rows, item_dims, item_ftm = [2000, 20], [16, 4], [0, 1]
    hyper = Hyper(lr=0.05, eps=1e-6)
    models = {}
    for peer in ("embag", "fbgemm"):
        user = _module(user_rows, user_dims, user_ftm, optimizer=optimizer, hyper=hyper, seed=1)
        item = _module(item_rows, item_dims, item_ftm, optimizer=optimizer, hyper=hyper,
                       pooling="mean", seed=2)
        if peer == "fbgemm":
            user = FbgemmTbe(user.split_embedding_weights(), user_ftm, "sum", optimizer,
                             hyper).module
            item = FbgemmTbe(item.split_embedding_weights(), item_ftm, "mean", optimizer,
                             hyper).module
        torch.manual_seed(3)  # the same dense layers for both
        models[peer] = TwoTower(user, item, sum(user_dims[t] for t in user_ftm),
                                sum(item_dims[t] for t in item_ftm))
    dense = {peer: torch.optim.SGD([p for n, p in m.named_parameters()
                                    if "mlp" in n], lr=0.05)
             for peer, m in models.items()}
    g = torch.Generator().manual_seed(4)
    losses = {"embag": [], "fbgemm": []}
    for step in range(20):
        user = random_batch(g, user_rows, user_ftm, 32, 6, hot_rows=50, with_weights=True)
        item = random_batch(g, item_rows, item_ftm, 32, 3, hot_rows=100)
        labels = torch.randint(0, 2, (32,), generator=g).float()
        for peer, model in models.items():
            dense[peer].zero_grad()
            loss = F.binary_cross_entropy_with_logits(model(user, item), labels)
            loss.backward()
            dense[peer].step()
            losses[peer].append(loss.item())
    torch.testing.assert_close(torch.tensor(losses["embag"]), torch.tensor(losses["fbgemm"]),
                               rtol=0, atol=1e-5)
    assert losses["embag"][-1] != losses["embag"][0]  # it trained


# ---- torch.compile, state_dict, opcheck -------------------------------------------------

class _Head(torch.nn.Module):
    def __init__(self, tbe: torch.nn.Module, width: int) -> None:
        super().__init__()
        self.tbe = tbe
        self.linear = torch.nn.Linear(width, 1)

    def forward(self, indices: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.linear(self.tbe(indices, offsets)).square().mean()


@pytest.mark.parametrize("optimizer,sparse", [(None, False), (None, True),
                                              ("rowwise_adagrad", False), ("adam", False)])
def test_compile_fullgraph(optimizer: Optional[str], sparse: bool) -> None:
    # Each case compiles afresh: the module instances of earlier cases would count against
    # dynamo's recompile limit of the shared forward code (Adam's step recompiles once).
    torch._dynamo.reset()
    width = sum(DIMS[t] for t in FTM)
    eager = _Head(_module(ROWS, DIMS, FTM, optimizer=optimizer, sparse=sparse), width)
    compiled_model = copy.deepcopy(eager)
    compiled = torch.compile(compiled_model, fullgraph=True)
    g = torch.Generator().manual_seed(6)
    for step in range(3):
        batch = random_batch(g, ROWS, FTM, 8, 5, hot_rows=5)
        a = compiled(batch.indices, batch.offsets)
        b = eager(batch.indices, batch.offsets)
        torch.testing.assert_close(a, b)
        a.backward()
        b.backward()
        for t, (x, y) in enumerate(zip(compiled_model.tbe.weights, eager.tbe.weights)):
            torch.testing.assert_close(x, y, msg=lambda m: f"step {step} table {t}: {m}")
            if optimizer is None:
                torch.testing.assert_close(x.grad.to_dense(), y.grad.to_dense())
                x.grad = y.grad = None
    if optimizer is not None:
        for x, y in zip(compiled_model.tbe.split_optimizer_states(),
                        eager.tbe.split_optimizer_states()):
            for a, b in zip(x, y):
                torch.testing.assert_close(a, b)
    with torch.inference_mode():
        batch = random_batch(g, ROWS, FTM, 8, 5)
        torch.testing.assert_close(compiled(batch.indices, batch.offsets),
                                   eager(batch.indices, batch.offsets))


def test_export() -> None:
    model = _module(ROWS, DIMS, FTM)
    batch = random_batch(torch.Generator().manual_seed(8), ROWS, FTM, 4, 3)
    exported = torch.export.export(model, (batch.indices, batch.offsets))
    assert "embag.batched_embedding_bags" in str(exported.graph)
    with torch.no_grad():
        torch.testing.assert_close(exported.module()(batch.indices, batch.offsets),
                                   model(batch.indices, batch.offsets))


@pytest.mark.parametrize("optimizer", ["sgd", "adagrad", "rowwise_adagrad", "adam"])
def test_state_dict_round_trip(optimizer: str) -> None:
    first = _module(ROWS, DIMS, FTM, optimizer=optimizer)
    g = torch.Generator().manual_seed(9)
    batches = [random_batch(g, ROWS, FTM, 4, 6, hot_rows=4) for _ in range(3)]
    grads = [torch.randn(4, sum(DIMS[t] for t in FTM), generator=g) for _ in range(3)]
    for b, go in zip(batches[:2], grads[:2]):
        first(b.indices, b.offsets).backward(go)
    saved = copy.deepcopy(first.state_dict())
    expected_keys = {f"weights.{t}" for t in range(3)} | {"step"} | \
        {f"momentum{k}_{t}" for k in (1, 2) for t in range(3)}
    assert set(saved) == expected_keys
    second = _module(ROWS, DIMS, FTM, optimizer=optimizer, seed=99)
    second.load_state_dict(saved)
    assert int(second.step) == 2
    for m in (first, second):
        m(batches[2].indices, batches[2].offsets).backward(grads[2])
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)


def test_opcheck() -> None:
    module = _module([9, 5], [3, 4], [1, 0, 1], padding=[None, 0])
    batch = random_batch(torch.Generator().manual_seed(10), [9, 5], [1, 0, 1], 3, 4)
    weights = [w.detach().clone() for w in module.weights]
    forward_args = (weights, [1, 0, 1], "sum,sum", [0, 0], [False, True], batch.indices,
                    batch.offsets, None, "", [0.01, 1e-8, 0.9, 0.999, 0.0], "none", 0,
                    [torch.zeros(0)] * 2, [torch.zeros(0)] * 2, False)
    torch.library.opcheck(torch.ops.embag.batched_embedding_bags.default, forward_args,
                          test_utils=("test_schema", "test_faketensor"))
    grad = torch.randn(3, 11)
    for sparse in (False, True):
        torch.library.opcheck(
            torch.ops.embag.batched_embedding_bags_backward.default,
            (grad, weights, [1, 0, 1], "sum,sum", [0, 0], [False, True], batch.indices,
             batch.offsets, None, sparse),
            test_utils=("test_schema", "test_faketensor"))
    torch.library.opcheck(
        torch.ops.embag.batched_embedding_bags_fused_backward_.default,
        (grad, weights, [1, 0, 1], "sum,sum", [0, 0], [False, True], batch.indices,
         batch.offsets, None, "rowwise_adagrad", [0.01, 1e-8, 0.9, 0.999, 0.0], "none", 1,
         [torch.zeros(9), torch.zeros(5)], [torch.zeros(0)] * 2),
        test_utils=("test_schema", "test_faketensor"))


# ---- Bad input ----------------------------------------------------------------------------

def test_bad_index_raises_and_writes_nothing() -> None:
    module = _module(ROWS, DIMS, FTM, optimizer="adam")
    batch = random_batch(torch.Generator().manual_seed(12), ROWS, FTM, 4, 5, empty_bags=False)
    # one index of feature 2 (table 1, 7 rows) out of range
    bags = 4
    position = int(batch.offsets[2 * bags])
    batch.indices[position] = 7
    before = copy.deepcopy(module.state_dict())
    with pytest.raises(embag.EmbeddingBagError, match=r"feature 2 \(table 1\).*7"):
        module(batch.indices, batch.offsets)
    # the fused step validates again before it writes
    states = module.split_optimizer_states()
    grad = torch.randn(4, sum(DIMS[t] for t in FTM))
    with pytest.raises(embag.EmbeddingBagError, match=r"feature 2 \(table 1\)"):
        torch.ops.embag.batched_embedding_bags_fused_backward_(
            grad, list(module.weights), FTM, "sum,sum,sum", [0, 0, 0], [False] * 3,
            batch.indices, batch.offsets, None, "adam", [0.01, 1e-8, 0.9, 0.999, 0.0], "none",
            1, [s[0] for s in states], [s[1] for s in states])
    for key, value in module.state_dict().items():
        if key != "step":
            assert torch.equal(value, before[key]), f"{key} was written"


@pytest.mark.parametrize("offsets,message", [
    ([0, 2, 3], "F\\*B \\+ 1"),           # 3 entries for 4 features
    ([0, 3, 2, 4, 5], "offsets"),          # decreasing
    ([1, 2, 3, 4, 5], "offsets\\[0\\]"),  # not starting at 0
])
def test_bad_offsets_raise(offsets, message) -> None:
    module = _module(ROWS, DIMS, FTM)
    with pytest.raises(embag.EmbeddingBagError, match=message):
        module(torch.zeros(5, dtype=torch.int64), torch.tensor(offsets))


@pytest.mark.parametrize("kwargs,error,message", [
    ({"embedding_specs": []}, ValueError, "at least one table"),
    ({"embedding_specs": [(10, 0)]}, ValueError, "dim"),
    ({"embedding_specs": [(10, 4, "median")]}, ValueError, "pooling"),
    ({"embedding_specs": [(10, 4, "sum", torch.float32), (10, 4, "sum", torch.float16)]},
     ValueError, "one dtype"),
    ({"feature_table_map": [0, 5]}, ValueError, "feature_table_map\\[1\\] = 5"),
    ({"optimizer": "lamb"}, ValueError, "optimizer"),
    ({"optimizer": "sgd", "embedding_specs": [(10, 4, "max")]}, ValueError, "max"),
    ({"learning_rate": float("nan")}, ValueError, "learning_rate"),
    ({"weight_decay_mode": "l1"}, ValueError, "weight_decay_mode"),
    ({"optimizer": "adam", "weight_decay_mode": "l2"}, ValueError, "rowwise_adagrad only"),
    ({"optimizer": "adagrad", "weight_decay": 0.1}, ValueError, "no weight decay"),
    ({"embedding_specs": ["table"]}, TypeError, "TableSpec"),
    ({"embedding_specs": [(10, 4, "sum", None, 10)]}, ValueError, "padding_idx"),
])
def test_constructor_errors(kwargs, error, message) -> None:
    arguments = {"embedding_specs": [(10, 4)], **kwargs}
    with pytest.raises(error, match=message):
        et.TableBatchedEmbeddingBags(**arguments)


def test_fused_rule_errors_write_nothing() -> None:
    # SGD with weight decay: FBGEMM has no such rule; the constructor refuses it, and so does
    # the fused operator called directly (batched.h's validation), before writing anything.
    with pytest.raises(ValueError, match="weight_decay"):
        et.TableBatchedEmbeddingBags([(10, 4)], optimizer="sgd", weight_decay=0.1)
    module = _module(ROWS, DIMS, FTM, optimizer="sgd")
    batch = random_batch(torch.Generator().manual_seed(13), ROWS, FTM, 3, 4)
    before = [w.clone() for w in module.split_embedding_weights()]
    grad = torch.randn(3, sum(DIMS[t] for t in FTM))
    with pytest.raises(embag.EmbeddingBagError, match="weight_decay"):
        torch.ops.embag.batched_embedding_bags_fused_backward_(
            grad, list(module.weights), FTM, "sum,sum,sum", [0, 0, 0], [False] * 3,
            batch.indices, batch.offsets, None, "sgd", [0.01, 1e-8, 0.9, 0.999, 0.1], "none", 1,
            [torch.zeros(0)] * 3, [torch.zeros(0)] * 3)
    for a, b in zip(module.split_embedding_weights(), before):
        assert torch.equal(a, b)
