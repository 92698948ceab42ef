"""embag.torch against torch.nn.functional.embedding_bag / torch.nn.EmbeddingBag (`make test-python`).

Needs PyTorch (.venv-torch): randomized calls over every option combination (forward, weight and
per_sample_weights gradients, dense and sparse), gradcheck in float64, the custom operators'
registration (torch.library.opcheck), torch.compile(fullgraph=True) and torch.export of a model
using embag.torch.EmbeddingBag, swapping the module into a model and training, float16/bfloat16,
and the array API on torch tensors (torch in, torch out, zero copy).

The random data avoids embag's deliberate differences from PyTorch (SEMANTICS.md): no NaN, no
float16 mean compared bitwise, no indices past the last offset with include_last_offset. The
sparse gradient is compared entry by entry (PyTorch's layout, embag's default), and after
coalescing PyTorch's where embag's coalesced layout is asked for or is the only one
(scale_grad_by_freq).
"""

from __future__ import annotations

import copy
import itertools
from typing import Any, Optional

import pytest
import torch
import torch.nn.functional as F

import embag
import embag.torch as et

V, D = 23, 7


def _case(
    seed: int,
    *,
    two_d: bool,
    include_last_offset: bool,
    index_dtype: torch.dtype,
    dtype: torch.dtype,
    with_psw: bool,
) -> dict[str, Any]:
    """Random weight, indices and offsets (empty bags and repeated rows included)."""
    g = torch.Generator().manual_seed(seed)
    weight = torch.randn(V, D, generator=g, dtype=torch.float64).to(dtype)
    if two_d:
        input = torch.randint(0, V, (5, 4), generator=g, dtype=index_dtype)
        offsets = None
    else:
        n = 17
        input = torch.randint(0, V, (n,), generator=g, dtype=index_dtype)
        cuts = torch.sort(torch.randint(0, n + 1, (5,), generator=g)).values
        cuts[0] = 0
        if include_last_offset:
            # offsets[-1] == N: no indices past the last bag (embag's deliberate difference).
            cuts = torch.cat([cuts, torch.tensor([n])])
        offsets = cuts.to(index_dtype)
    psw = torch.randn(input.shape, generator=g, dtype=torch.float64).to(dtype) if with_psw else None
    return {"weight": weight, "input": input, "offsets": offsets, "per_sample_weights": psw}


def _tolerance(dtype: torch.dtype) -> dict[str, float]:
    return {
        torch.float64: {"rtol": 1e-12, "atol": 1e-12},
        torch.float32: {"rtol": 1e-5, "atol": 1e-5},
    }[dtype]


# Every combination of the options (the invalid ones — max with scale_grad_by_freq, sparse or
# per_sample_weights — are error tests below), each with float32 or float64 and int32 or int64
# chosen by the combination's position so both appear with every option.
OPTIONS = [
    combo
    for combo in itertools.product(
        ("sum", "mean", "max"),  # mode
        (False, True),  # 2-D input
        (False, True),  # include_last_offset
        (None, 3, -1),  # padding_idx
        (False, True),  # per_sample_weights
        (None, 1.5),  # max_norm
        (False, True),  # scale_grad_by_freq
        (False, True),  # sparse
    )
    if not (combo[0] == "max" and (combo[6] or combo[7]))
    and not (combo[4] and combo[0] != "sum")
]


def _option_id(combo: tuple) -> str:
    mode, two_d, ilo, pidx, psw, max_norm, sgbf, sparse = combo
    return "-".join(
        [mode, "2d" if two_d else "1d"]
        + (["ilo"] if ilo else [])
        + ([f"pad{pidx}"] if pidx is not None else [])
        + (["psw"] if psw else [])
        + (["maxnorm"] if max_norm else [])
        + (["freq"] if sgbf else [])
        + (["sparse"] if sparse else [])
    )


@pytest.mark.parametrize("combo", OPTIONS, ids=[_option_id(c) for c in OPTIONS])
def test_matches_pytorch(combo: tuple) -> None:
    mode, two_d, ilo, pidx, with_psw, max_norm, sgbf, sparse = combo
    position = OPTIONS.index(combo)
    dtype = (torch.float32, torch.float64)[position % 2]
    index_dtype = (torch.int64, torch.int32)[(position // 2) % 2]
    case = _case(
        position, two_d=two_d, include_last_offset=ilo, index_dtype=index_dtype, dtype=dtype,
        with_psw=with_psw,
    )
    kwargs = dict(
        offsets=case["offsets"], max_norm=max_norm, scale_grad_by_freq=sgbf, mode=mode,
        sparse=sparse, include_last_offset=ilo, padding_idx=pidx,
    )
    results = []
    for function in (F.embedding_bag, et.embedding_bag):
        weight = case["weight"].clone().requires_grad_()
        psw = None if case["per_sample_weights"] is None else case["per_sample_weights"].clone().requires_grad_()
        call = dict(kwargs)
        if function is F.embedding_bag and sparse and sgbf:
            # PyTorch refuses sparse with scale_grad_by_freq (embag supports it, SEMANTICS.md):
            # compare with PyTorch's dense gradient.
            call["sparse"] = False
        output = function(case["input"], weight, per_sample_weights=psw, **call)
        grad_output = torch.randn(output.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(dtype)
        output.backward(grad_output)
        results.append((output.detach(), weight.detach(), weight.grad, None if psw is None else psw.grad))
    (out_t, w_t, gw_t, gp_t), (out_e, w_e, gw_e, gp_e) = results
    tol = _tolerance(dtype)
    torch.testing.assert_close(out_e, out_t, **tol)
    torch.testing.assert_close(w_e, w_t, **tol)  # max_norm's in-place renorm
    if sparse and not sgbf:
        # PyTorch's layout: the same entries, in the same order, as PyTorch's backward makes.
        assert gw_e.layout == gw_t.layout == torch.sparse_coo
        assert torch.equal(gw_e._indices(), gw_t._indices())
        gw_e, gw_t = gw_e._values(), gw_t._values()
    elif sparse:
        # (.grad itself is not flagged coalesced: AccumulateGrad re-wraps a sparse gradient
        # without the flag; test_sparse_gradient_is_flagged_coalesced checks the op's own.)
        assert gw_e.layout == torch.sparse_coo
        rows = gw_e._indices()[0]
        assert bool((rows[1:] > rows[:-1]).all()), "rows must be strictly ascending"
        if pidx is not None:
            assert int(pidx) % V not in rows.tolist(), "the padding row must be absent"
        gw_e = gw_e.to_dense()
    torch.testing.assert_close(gw_e, gw_t, **tol)
    if with_psw:
        torch.testing.assert_close(gp_e, gp_t, **tol)


def test_sparse_gradient_is_flagged_coalesced() -> None:
    case = _case(2, two_d=False, include_last_offset=False, index_dtype=torch.int64,
                 dtype=torch.float32, with_psw=False)
    weight = case["weight"].requires_grad_()
    output = et.embedding_bag(case["input"], weight, case["offsets"], mode="sum", sparse=True,
                              coalesced=True)
    (grad,) = torch.autograd.grad(output, [weight], torch.ones_like(output))
    assert grad.layout == torch.sparse_coo and grad.is_coalesced()
    assert grad.indices().shape[1] == len(set(case["input"].tolist()))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["sum", "mean", "max"])
def test_half_precision_tables(dtype: torch.dtype, mode: str) -> None:
    # embag accumulates in float32 and rounds once, so it is compared with PyTorch's float32
    # result rounded to the table's dtype (PyTorch CPU rounds float16 mean twice).
    case = _case(5, two_d=False, include_last_offset=False, index_dtype=torch.int64, dtype=dtype,
                 with_psw=False)
    weight = case["weight"].requires_grad_()
    output = et.embedding_bag(case["input"], weight, case["offsets"], mode=mode)
    assert output.dtype == dtype
    reference = F.embedding_bag(case["input"], case["weight"].detach().float(), case["offsets"], mode=mode)
    torch.testing.assert_close(output.float(), reference.to(dtype).float(), rtol=1e-2, atol=1e-2)
    grad = torch.ones_like(output)
    output.backward(grad)
    w32 = case["weight"].detach().float().requires_grad_()
    F.embedding_bag(case["input"], w32, case["offsets"], mode=mode).backward(grad.float())
    torch.testing.assert_close(weight.grad.float(), w32.grad, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("mode,with_psw", [("sum", False), ("sum", True), ("mean", False), ("max", False)])
def test_gradcheck_float64(mode: str, with_psw: bool) -> None:
    case = _case(11, two_d=False, include_last_offset=False, index_dtype=torch.int64,
                 dtype=torch.float64, with_psw=with_psw)
    weight = case["weight"].requires_grad_()
    inputs = [weight]
    if with_psw:
        inputs.append(case["per_sample_weights"].requires_grad_())

    def function(w: torch.Tensor, psw: Optional[torch.Tensor] = None) -> torch.Tensor:
        return et.embedding_bag(case["input"], w, case["offsets"], mode=mode, padding_idx=2,
                                per_sample_weights=psw)

    assert torch.autograd.gradcheck(function, tuple(inputs))


def _op_args(sparse: bool = False, mode: str = "sum") -> tuple:
    case = _case(3, two_d=False, include_last_offset=False, index_dtype=torch.int64,
                 dtype=torch.float32, with_psw=mode == "sum")
    return (case["weight"].requires_grad_(), case["input"], case["offsets"],
            case["per_sample_weights"], mode, False, None, False, sparse, False)


@pytest.mark.parametrize("mode", ["sum", "max"])
def test_forward_operator_registration(mode: str) -> None:
    # Schema, fake implementation (shapes, dtypes), autograd registration, and dispatch.
    torch.library.opcheck(torch.ops.embag.embedding_bag_forward.default, _op_args(mode=mode))


def test_backward_operator_registration_dense() -> None:
    weight, input, offsets, psw = _op_args()[:4]
    grad = torch.randn(offsets.shape[0], D)
    torch.library.opcheck(
        torch.ops.embag.embedding_bag_backward.default,
        (grad, weight.detach(), input, offsets, psw, None, "sum", False, None, False, False, True),
    )


def test_backward_operator_registration_sparse() -> None:
    # The sparse gradient's row count is data dependent (an unbacked size in the fake impl).
    weight, input, offsets = (t.detach() for t in _op_args()[:3])
    grad = torch.randn(offsets.shape[0], D)
    torch.library.opcheck(
        torch.ops.embag.embedding_bag_backward.default,
        (grad, weight, input, offsets, None, None, "sum", False, None, False, True, False),
    )


def test_renorm_operator_registration() -> None:
    weight, input, offsets = (t.detach() for t in _op_args()[:3])
    torch.library.opcheck(
        torch.ops.embag.embedding_bag_renorm_.default,
        (weight.clone(), input, offsets, None, "sum", 0.5, 2.0, False, None, False, False),
    )


class _Model(torch.nn.Module):
    def __init__(self, bag: torch.nn.Module) -> None:
        super().__init__()
        self.bag = bag
        self.head = torch.nn.Linear(bag.embedding_dim, 1)

    def forward(self, input: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        return self.head(self.bag(input, offsets)).sum()


def _batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(100 + step)
    input = torch.randint(0, 50, (40,), generator=g)
    offsets = torch.tensor([0, 5, 5, 12, 30])
    return input, offsets


@pytest.mark.parametrize(
    "mode,sparse,max_norm",
    [("sum", False, None), ("mean", False, None), ("max", False, None), ("sum", True, None),
     ("mean", False, 0.5)],
)
def test_compile_fullgraph(mode: str, sparse: bool, max_norm: Optional[float]) -> None:
    # The sparse gradient's row count is data dependent: the backward op's fake implementation
    # returns an unbacked size, which fullgraph must accept. max_norm puts the in-place renorm
    # operator in the graph (functionalised by torch.compile).
    torch.manual_seed(0)
    model = _Model(et.EmbeddingBag(50, 8, mode=mode, padding_idx=0, sparse=sparse, max_norm=max_norm))
    reference = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True)
    input, offsets = _batch(0)
    loss = compiled(input, offsets)
    loss.backward()
    grad_compiled = model.bag.weight.grad.clone()
    eager = reference(input, offsets)
    eager.backward()
    torch.testing.assert_close(loss, eager)
    torch.testing.assert_close(model.bag.weight, reference.bag.weight)
    assert grad_compiled.layout == (torch.sparse_coo if sparse else torch.strided)
    torch.testing.assert_close(grad_compiled.to_dense(), reference.bag.weight.grad.to_dense())


def test_export() -> None:
    model = _Model(et.EmbeddingBag(50, 8, mode="sum"))
    input, offsets = _batch(0)
    exported = torch.export.export(model, (input, offsets))
    assert "embag.embedding_bag_forward" in str(exported.graph)
    torch.testing.assert_close(exported.module()(input, offsets), model(input, offsets))


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("mode", ["sum", "mean"])
def test_swap_module_and_train(mode: str, sparse: bool) -> None:
    losses = []
    for cls in (torch.nn.EmbeddingBag, et.EmbeddingBag):
        torch.manual_seed(0)
        model = _Model(cls(50, 8, mode=mode, sparse=sparse))
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        run = []
        for step in range(5):
            optimizer.zero_grad()
            loss = model(*_batch(step))
            loss.backward()
            optimizer.step()
            run.append(loss.item())
        losses.append(run)
    assert losses[0] == pytest.approx(losses[1], rel=1e-5, abs=1e-5)


def test_module_is_torchs_module() -> None:
    ours = et.EmbeddingBag(10, 3, max_norm=2.0, mode="max", padding_idx=1, include_last_offset=True)
    theirs = torch.nn.EmbeddingBag(10, 3, max_norm=2.0, mode="max", padding_idx=1,
                                   include_last_offset=True)
    assert isinstance(ours, torch.nn.EmbeddingBag)
    assert ours.extra_repr() == theirs.extra_repr()
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight"]
    theirs.load_state_dict(ours.state_dict())
    pretrained = et.EmbeddingBag.from_pretrained(torch.eye(4), freeze=True, mode="sum")
    assert type(pretrained) is et.EmbeddingBag and not pretrained.weight.requires_grad
    torch.testing.assert_close(
        pretrained(torch.tensor([[0, 1], [2, 2]])), torch.tensor([[1.0, 1, 0, 0], [0, 0, 2, 0]])
    )
    ours.reset_parameters()
    assert float(ours.weight.detach()[1].abs().sum()) == 0.0  # padding row zeroed, as PyTorch does


ERRORS = [
    ("index out of range", dict(input=torch.tensor([0, 30]), offsets=torch.tensor([0])),
     "Index 1 of input takes value 30 which is not in the valid range [0, 23)"),
    ("max with sparse", dict(input=torch.tensor([0, 1]), offsets=torch.tensor([0]), mode="max",
                             sparse=True), "max mode does not support sparse weights"),
    ("max with scale_grad_by_freq", dict(input=torch.tensor([0, 1]), offsets=torch.tensor([0]),
                                         mode="max", scale_grad_by_freq=True),
     "max mode does not support scaling the gradient by the frequency"),
    ("bad mode", dict(input=torch.tensor([0, 1]), offsets=torch.tensor([0]), mode="median"),
     "mode has to be one of sum, mean or max"),
]


@pytest.mark.parametrize("reason,kwargs,message", ERRORS, ids=[e[0] for e in ERRORS])
def test_errors(reason: str, kwargs: dict, message: str) -> None:
    weight = torch.randn(V, D)
    before = weight.clone()
    with pytest.raises(ValueError) as raised:
        et.embedding_bag(weight=weight, max_norm=0.5, **kwargs)
    assert message in str(raised.value)
    # Validation runs before max_norm's renorm: a failed call changes nothing.
    torch.testing.assert_close(weight, before, rtol=0, atol=0)


def test_array_api_on_torch_tensors_is_zero_copy() -> None:
    weight = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    out = torch.full((1, 2), -1.0)
    result = embag.embedding_bag(weight, torch.tensor([0, 1]), torch.tensor([0]), mode="sum",
                                 max_norm=2.0, out=out)
    assert result is out
    # max_norm renormalised the caller's tensor itself, through DLPack.
    torch.testing.assert_close(weight[0], torch.tensor([1.2, 1.6]))
    fresh = embag.embedding_bag(weight, torch.tensor([[0, 1]]), mode="max", return_aux=True)
    assert isinstance(fresh.output, torch.Tensor) and isinstance(fresh.argmax, torch.Tensor)
    grads = embag.embedding_bag_backward(torch.ones(1, 2), weight, torch.tensor([[0, 1]]),
                                         mode="max", argmax=fresh.argmax, sparse=False)
    assert isinstance(grads.grad_weight, torch.Tensor)
    torch.testing.assert_close(grads.grad_weight, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_tensors_run_or_say_why() -> None:
    # Until embag has CUDA kernels the call must fail clearly; once it has, it must match.
    weight = torch.randn(V, D, device="cuda")
    input, offsets = torch.tensor([0, 3, 5], device="cuda"), torch.tensor([0, 1], device="cuda")
    try:
        output = et.embedding_bag(input, weight, offsets, mode="sum")
    except embag.UnsupportedError as error:
        assert "cuda" in str(error).lower()
        return
    torch.testing.assert_close(output, F.embedding_bag(input, weight, offsets, mode="sum"))
