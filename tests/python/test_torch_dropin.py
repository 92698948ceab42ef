"""embag.torch as a drop-in, judged by what PyTorch's own tests check of embedding_bag.

PyTorch's suite (test/nn/test_embedding.py and the OpInfo for nn.functional.embedding_bag) checks
more than the numbers: which exception classes a broken rule raises (code catches RuntimeError),
that the message matches a pattern, which rule is reported when two are broken, how a module
behaves when swapped into a model, and that the op's OpInfo samples pass gradcheck and match
across dtypes. These tests check the same things of embag.torch, each against PyTorch itself on
the same call, so a difference shows as a failure here and not in a user's code. The one list of
differences they accept is DOCUMENTED_DIFFERENCES (docs/semantics.md's table says why).

The patterns are PyTorch's (the regexes its tests use); the calls and this code are embag's own.
"""

from __future__ import annotations

import re
import sys
import types
import unittest
from typing import Any, Callable, Optional

import pytest
import torch
import torch.nn.functional as F

import embag
import embag.torch as et


def _op_db() -> list:
    """PyTorch's OpInfo database. torch.testing._internal imports expecttest, a test-only package
    .venv-torch does not have (the project's torch environment pins only what the tests need);
    its TestCase base class and ACCEPT flag are all that importing the database touches, so a
    stand-in with those is enough when the real package is absent."""
    try:
        import expecttest  # noqa: F401
    except ImportError:
        stand_in = types.ModuleType("expecttest")
        stand_in.TestCase = unittest.TestCase  # type: ignore[attr-defined]
        stand_in.ACCEPT = False  # type: ignore[attr-defined]
        sys.modules["expecttest"] = stand_in
    from torch.testing._internal.common_methods_invocations import op_db

    return op_db


# ---------------------------------------------------------------------------------------------
# The documented differences (docs/semantics.md, "Deliberate differences from PyTorch"), the
# only ones these tests accept. Each maps to what it relaxes, and why PyTorch is not followed.
DOCUMENTED_DIFFERENCES = {
    "include_last_offset tail": "with include_last_offset, indices past offsets[-1] are in no "
    "bag (PyTorch's modes and devices disagree on them): the outputs are compared, and the "
    "weight gradient only on rows the bags read",
    "16-bit accumulation": "float16/bfloat16 sums accumulate in float32 and round once "
    "(PyTorch accumulates in 16 bits): compared to PyTorch's float64 result within the dtype's "
    "rounding, not to PyTorch's 16-bit result",
}


# ---------------------------------------------------------------------------------------------
# Rules: one row per rule PyTorch's tests check (and the pairs whose order they check). Each is
# (name, call kwargs builder, the regex PyTorch's tests match). Both PyTorch and embag run it.

W10 = torch.randn(10, 2)


def _call(fn: Callable, **kw: Any) -> Any:
    args = dict(kw)
    input = args.pop("input")
    weight = args.pop("weight", W10)
    return fn(input, weight, **args)


RULES: list[tuple[str, dict[str, Any], str]] = [
    ("index -1, sum, no padding_idx", dict(input=torch.tensor([[-1, 1]]), mode="sum"),
     r"Index 0 of input takes value -1 which is not in the valid range \[0, 10\)"),
    ("index 11, mean, no padding_idx", dict(input=torch.tensor([[11, 8]]), mode="mean"),
     r"Index 0 of input takes value 11 which is not in the valid range \[0, 10\)"),
    ("index -1, sum, padding_idx", dict(input=torch.tensor([[-1, 1]]), mode="sum", padding_idx=0),
     r"Expected idx >= 0 && idx < num_embeddings"),
    ("index 11, mean, padding_idx", dict(input=torch.tensor([[11, 8]]), mode="mean",
                                         padding_idx=0),
     r"Expected idx >= 0 && idx < num_embeddings"),
    ("index -1, max", dict(input=torch.tensor([[-1, 1]]), mode="max"),
     r"Expected idx >= 0 && idx < num_embeddings"),
    ("index 11 int32, sum, padding_idx, per_sample_weights",
     dict(input=torch.tensor([[11, 8]], dtype=torch.int32), mode="sum", padding_idx=0,
          per_sample_weights=torch.randn(1, 2)),
     r"Expected idx >= 0 && idx < num_embeddings"),
    ("padding_idx = V", dict(input=torch.tensor([[1, 3]]), padding_idx=10),
     r"padding_idx must be within the number of embeddings"),
    ("padding_idx = -V-1", dict(input=torch.tensor([[1, 3]]), padding_idx=-11),
     r"padding_idx must be within the number of embeddings"),
    ("offsets[0] = 1", dict(input=torch.tensor([1, 2, 3]), offsets=torch.tensor([1, 2])),
     r"offsets\[0\] has to be 0"),
    ("offsets[-1] past the input",
     dict(input=torch.tensor([1, 2, 3]), offsets=torch.tensor([0, 100])),
     r"offsets\[-1\] can not be greater than input's length"),
    ("input 5-D (and offsets 5-D: the input is reported first)",
     dict(input=torch.full((2, 0, 0, 6, 6), 2), offsets=torch.full((2, 0, 0, 6, 6), 0)),
     r"input has to be 1D or 2D Tensor"),
    ("offsets 5-D", dict(input=torch.tensor([1, 1]), offsets=torch.full((2, 0, 0, 6, 6), 0)),
     r"offsets has to be a 1D Tensor"),
    ("weight 3-D", dict(input=torch.tensor([1, 1]), offsets=torch.tensor([0, 0]),
                        weight=torch.zeros(2, 2, 2)),
     r"weight has to be a 2D Tensor"),
    ("1-D input without offsets", dict(input=torch.tensor([1, 2])),
     r"offsets has to be a 1D Tensor but got None"),
    ("2-D input with offsets", dict(input=torch.ones(3, 4, dtype=torch.long),
                                    offsets=torch.arange(3)),
     r"if input is 2D, then offsets has to be None"),
    ("per_sample_weights float64 for float32", dict(
        input=torch.tensor([3, 1, 1, 1, 4, 0]), offsets=torch.tensor([0, 0, 3, 3, 6]), mode="sum",
        per_sample_weights=torch.randn(6, dtype=torch.float64)),
     r"have the same type as"),
    ("per_sample_weights of 5 for 6 indices", dict(
        input=torch.tensor([3, 1, 1, 1, 4, 0]), offsets=torch.tensor([0, 0, 3, 3, 6]), mode="sum",
        per_sample_weights=torch.randn(5)),
     r"same shape as the input"),
    ("per_sample_weights of 21 for a (7, 3) input", dict(
        input=torch.randint(5, (7, 3)), mode="sum", per_sample_weights=torch.randn(21)),
     r"same shape as the input"),
    ("per_sample_weights with max", dict(input=torch.randint(5, (7, 3)), mode="max",
                                         per_sample_weights=torch.randn(7, 3)),
     r"only supported for mode='sum'"),
    ("per_sample_weights with mean", dict(input=torch.randint(5, (7, 3)), mode="mean",
                                          per_sample_weights=torch.randn(7, 3)),
     r"only supported for mode='sum'"),
    ("per_sample_weights of a wrong shape with max (the shape is reported first)", dict(
        input=torch.randint(5, (7, 3)), mode="max", per_sample_weights=torch.randn(21)),
     r"same shape as the input"),
    ("max with sparse", dict(input=torch.tensor([[1, 2]]), mode="max", sparse=True),
     r"max mode does not support sparse weights"),
    ("max with sparse and per_sample_weights (sparse is reported first)", dict(
        input=torch.tensor([[1, 2]]), mode="max", sparse=True,
        per_sample_weights=torch.ones(1, 2)),
     r"max mode does not support sparse weights"),
    ("max with scale_grad_by_freq", dict(input=torch.tensor([[1, 2]]), mode="max",
                                         scale_grad_by_freq=True),
     r"max mode does not support scaling the gradient by the frequency"),
    ("mode 'foo'", dict(input=torch.tensor([[1, 2]]), mode="foo"),
     r"mode has to be one of sum, mean or max"),
]


def _raised(fn: Callable, kw: dict[str, Any]) -> BaseException:
    with pytest.raises(Exception) as raised:
        _call(fn, **kw)
    return raised.value


@pytest.mark.parametrize("name,kw,pattern", RULES, ids=[r[0] for r in RULES])
def test_rule_raises_pytorchs_classes_and_message(name: str, kw: dict[str, Any],
                                                  pattern: str) -> None:
    expected = _raised(F.embedding_bag, kw)
    got = _raised(et.embedding_bag, kw)
    # The pattern is PyTorch's; check that PyTorch still says it, then that embag does.
    assert re.search(pattern, str(expected)), f"PyTorch now says: {expected}"
    assert re.search(pattern, str(got)), f"embag says: {got}"
    # Every class PyTorch's exception is an instance of (RuntimeError, ValueError,
    # NotImplementedError), embag's is too: `except <that class>` catches both.
    for cls in type(expected).__mro__:
        if cls in (RuntimeError, ValueError, NotImplementedError, TypeError):
            assert isinstance(got, cls), f"{type(got).__mro__} is not a {cls.__name__}"
    # A rule error is always an EmbeddingBagError (embag's one class to catch).
    assert isinstance(got, embag.EmbeddingBagError)


def _pytorch_style_caller(fn: Callable, kw: dict[str, Any]) -> str:
    """Code as written against PyTorch: it catches RuntimeError and carries on."""
    try:
        _call(fn, **kw)
    except RuntimeError as error:
        return "caught: " + type(error).__mro__[-3].__name__
    except ValueError:
        return "ValueError escaped the RuntimeError handler"
    return "no error"


@pytest.mark.parametrize("name,kw,pattern", RULES, ids=[r[0] for r in RULES])
def test_except_runtimeerror_behaves_as_with_pytorch(name: str, kw: dict[str, Any],
                                                     pattern: str) -> None:
    caught_by_torch = _pytorch_style_caller(F.embedding_bag, kw).startswith("caught")
    caught_by_embag = _pytorch_style_caller(et.embedding_bag, kw).startswith("caught")
    # Where PyTorch's RuntimeError handler catches the error, it catches embag's too (embag's
    # is also caught where PyTorch raised ValueError: a superset PyTorch code cannot notice
    # unless it relies on a ValueError escaping an `except RuntimeError`).
    assert caught_by_embag or not caught_by_torch
    assert caught_by_embag


def test_module_constructor_keeps_pytorchs_assertion() -> None:
    # nn.EmbeddingBag's own constructor check (an AssertionError in PyTorch) is inherited.
    for cls in (torch.nn.EmbeddingBag, et.EmbeddingBag):
        with pytest.raises(AssertionError, match=r"padding_idx must be within num_embeddings"):
            cls(4, 3, padding_idx=4)


def test_errors_leave_the_table_unchanged_under_max_norm() -> None:
    weight = torch.randn(10, 2) * 10
    before = weight.clone()
    with pytest.raises(RuntimeError, match="Expected idx >= 0"):
        et.embedding_bag(torch.tensor([[1, 11]]), weight, max_norm=1.0, mode="max")
    assert torch.equal(weight, before)


# ---------------------------------------------------------------------------------------------
# Sparse gradients: PyTorch's layout by default, embag's coalesced one on request.


def _sparse_grad(fn: Callable, **kw: Any) -> torch.Tensor:
    weight = torch.randn(10, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    weight.requires_grad_(True)
    out = fn(kw.pop("input"), weight, sparse=True, **kw)
    out.backward(torch.arange(out.numel(), dtype=weight.dtype).view_as(out))
    assert weight.grad is not None
    return weight.grad


SPARSE_CASES = {
    "1-D mean with padding and an empty bag": dict(
        input=torch.tensor([1, 2, 1, 3, 4, 1]), offsets=torch.tensor([0, 2, 2, 5]), mode="mean",
        padding_idx=2),
    "2-D sum with per_sample_weights": dict(
        input=torch.tensor([[1, 1, 9], [0, 9, 9]]), mode="sum",
        per_sample_weights=torch.tensor([[0.5, 2.0, -1.0], [1.0, 3.0, 0.25]],
                                        dtype=torch.float64)),
    "include_last_offset, no tail, negative padding_idx": dict(
        input=torch.tensor([5, 9, 5, 7]), offsets=torch.tensor([0, 1, 4]), mode="mean",
        include_last_offset=True, padding_idx=-1),
    "all padding": dict(input=torch.tensor([[2, 2]]), mode="mean", padding_idx=2),
    "empty input": dict(input=torch.tensor([], dtype=torch.long), offsets=torch.tensor([0, 0]),
                        mode="sum"),
}


@pytest.mark.parametrize("name", list(SPARSE_CASES))
def test_sparse_gradient_has_pytorchs_layout(name: str) -> None:
    expected = _sparse_grad(F.embedding_bag, **dict(SPARSE_CASES[name]))
    got = _sparse_grad(et.embedding_bag, **dict(SPARSE_CASES[name]))
    assert got.layout == torch.sparse_coo and got.is_coalesced() == expected.is_coalesced()
    # Structurally equal, as torch's assertEqual compares sparse tensors: the same entries in
    # the same order, not only the same dense value.
    assert torch.equal(got._indices(), expected._indices())
    torch.testing.assert_close(got._values(), expected._values(), rtol=0, atol=0)
    assert got.shape == expected.shape


@pytest.mark.parametrize("name", list(SPARSE_CASES))
def test_sparse_gradient_coalesced_on_request(name: str) -> None:
    expected = _sparse_grad(F.embedding_bag, **dict(SPARSE_CASES[name])).coalesce()
    got = _sparse_grad(et.embedding_bag, coalesced=True, **dict(SPARSE_CASES[name]))
    # One entry per distinct row, ascending: coalesced in layout. (.grad itself is not flagged
    # so: AccumulateGrad re-wraps a sparse gradient without the flag.)
    assert torch.equal(got._indices(), expected._indices())
    torch.testing.assert_close(got._values(), expected._values())


# ---------------------------------------------------------------------------------------------
# A module swap in an existing model: forward, backward and errors as with PyTorch's module.


class _Ranker(torch.nn.Module):
    """A small model as users write them: two bags of features and a linear head."""

    def __init__(self, sparse: bool) -> None:
        super().__init__()
        self.users = torch.nn.EmbeddingBag(40, 6, mode="mean", sparse=sparse, padding_idx=0)
        self.items = torch.nn.EmbeddingBag(30, 6, mode="sum", sparse=sparse)
        self.head = torch.nn.Linear(12, 1)

    def forward(self, users: torch.Tensor, items: torch.Tensor, offsets: torch.Tensor,
                weights: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([self.users(users), self.items(items, offsets, weights)], dim=1)
        return self.head(pooled).squeeze(1)


def _swap(model: torch.nn.Module) -> torch.nn.Module:
    """Every torch.nn.EmbeddingBag of ``model`` replaced by embag's, weights and options kept."""
    for name, child in list(model.named_children()):
        if type(child) is torch.nn.EmbeddingBag:
            swapped = et.EmbeddingBag(child.num_embeddings, child.embedding_dim,
                                      max_norm=child.max_norm, norm_type=child.norm_type,
                                      scale_grad_by_freq=child.scale_grad_by_freq,
                                      mode=child.mode, sparse=child.sparse,
                                      include_last_offset=child.include_last_offset,
                                      padding_idx=child.padding_idx)
            swapped.load_state_dict(child.state_dict())
            setattr(model, name, swapped)
    return model


@pytest.mark.parametrize("sparse", [False, True])
def test_module_swap_forward_backward_and_errors(sparse: bool) -> None:
    torch.manual_seed(11)
    reference = _Ranker(sparse)
    swapped = _Ranker(sparse)
    swapped.load_state_dict(reference.state_dict())
    _swap(swapped)
    assert isinstance(swapped.users, et.EmbeddingBag)
    g = torch.Generator().manual_seed(5)
    users = torch.randint(0, 40, (4, 3), generator=g)
    items = torch.randint(0, 30, (9,), generator=g)
    offsets = torch.tensor([0, 2, 2, 6])
    weights = torch.rand(9, generator=g)
    for model in (reference, swapped):
        model.zero_grad()
        model(users, items, offsets, weights).pow(2).sum().backward()
    torch.testing.assert_close(swapped(users, items, offsets, weights),
                               reference(users, items, offsets, weights))
    for (name, p_ref), (_, p_swap) in zip(reference.named_parameters(),
                                          swapped.named_parameters()):
        assert p_ref.grad is not None and p_swap.grad is not None
        assert p_swap.grad.layout == p_ref.grad.layout, name
        if p_ref.grad.is_sparse:
            # The entries PyTorch's backward makes, in its order.
            assert torch.equal(p_swap.grad._indices(), p_ref.grad._indices()), name
            torch.testing.assert_close(p_swap.grad._values(), p_ref.grad._values())
        else:
            torch.testing.assert_close(p_swap.grad, p_ref.grad)
    # An optimizer step from either gives the same model.
    for model in (reference, swapped):
        opt = (torch.optim.SparseAdam(list(model.users.parameters())
                                      + list(model.items.parameters()), lr=0.1)
               if sparse else torch.optim.SGD(model.parameters(), lr=0.1))
        opt.step()
    torch.testing.assert_close(swapped.users.weight, reference.users.weight)
    # Errors: the same classes, PyTorch's message.
    bad = torch.tensor([[1, 40, 2]])
    for model in (reference, swapped):
        with pytest.raises(RuntimeError, match=r"Expected idx >= 0 && idx < num_embeddings"):
            model(bad, items, offsets, weights)
        with pytest.raises(ValueError, match=r"same shape as the input"):
            model(users, items, offsets, weights[:5])


# ---------------------------------------------------------------------------------------------
# PyTorch's OpInfo samples for nn.functional.embedding_bag: gradcheck with the OpInfo's flags,
# and every sample against PyTorch in each dtype the OpInfo lists.


def _opinfo() -> Any:
    return next(op for op in _op_db() if op.name == "nn.functional.embedding_bag")


def _samples(dtype: torch.dtype, requires_grad: bool) -> list:
    torch.manual_seed(0)  # the samples' random indices and weights, reproducibly
    return list(_opinfo().sample_inputs("cpu", dtype, requires_grad=requires_grad))


def _run(fn: Callable, sample: Any) -> torch.Tensor:
    # The OpInfo's sample: input is the weight, args[0] the indices (its op swaps them back).
    return fn(sample.args[0], sample.input, **sample.kwargs)


def _has_tail(sample: Any) -> bool:
    offsets = sample.kwargs.get("offsets")
    return (sample.kwargs.get("include_last_offset", False) and offsets is not None
            and int(offsets[-1]) < sample.args[0].numel())


def _sample_id(sample: Any) -> str:
    kw = {k: (tuple(v.shape) if isinstance(v, torch.Tensor) else v)
          for k, v in sample.kwargs.items()}
    return f"indices{tuple(sample.args[0].shape)} {kw}"


def test_opinfo_samples_exist() -> None:
    # (the parametrised tests below would pass vacuously on an empty list)
    assert len(_samples(torch.float64, True)) >= 24


@pytest.mark.parametrize("index", range(32))
def test_opinfo_gradcheck(index: int) -> None:
    from torch.testing._internal.common_utils import gradcheck

    op = _opinfo()
    samples = _samples(torch.float64, True)
    if index >= len(samples):
        pytest.skip(f"this torch's OpInfo has {len(samples)} samples")
    sample = samples[index]
    weight = sample.input.detach().requires_grad_(True)
    tensors = [weight]
    kwargs = dict(sample.kwargs)
    psw = kwargs.pop("per_sample_weights", None)
    if psw is not None:
        tensors.append(psw.detach().requires_grad_(True))

    def fn(w: torch.Tensor, *rest: torch.Tensor) -> torch.Tensor:
        return et.embedding_bag(sample.args[0], w, per_sample_weights=rest[0] if rest else None,
                                **kwargs)

    # The flags PyTorch's test_ops passes for this OpInfo (batched grad included).
    assert gradcheck(fn, tuple(tensors), check_batched_grad=op.check_batched_grad,
                     check_grad_dtypes=True, nondet_tol=op.gradcheck_nondet_tol,
                     fast_mode=op.gradcheck_fast_mode,
                     check_forward_ad=op.supports_forward_ad,
                     check_backward_ad=op.supports_autograd,
                     check_undefined_grad=True), _sample_id(sample)


def _grads(fn: Callable, sample: Any, dtype: torch.dtype) -> tuple:
    weight = sample.input.detach().clone().requires_grad_(True)
    kwargs = dict(sample.kwargs)
    psw = kwargs.get("per_sample_weights")
    if psw is not None:
        kwargs["per_sample_weights"] = psw.detach().clone().requires_grad_(True)
    out = fn(sample.args[0], weight, **kwargs)
    grad_out = torch.linspace(-1, 1, out.numel(), dtype=torch.float64).view_as(out).to(dtype)
    out.backward(grad_out)
    psw_grad = kwargs["per_sample_weights"].grad if psw is not None else None
    return out.detach(), weight.grad, psw_grad


def _read_rows(sample: Any) -> torch.Tensor:
    """The rows the bags read (the tail past offsets[-1] excluded)."""
    indices = sample.args[0].reshape(-1)
    offsets = sample.kwargs.get("offsets")
    if _has_tail(sample):
        indices = indices[: int(offsets[-1])]
    return torch.unique(indices)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16, torch.float16])
def test_opinfo_samples_match_pytorch(dtype: torch.dtype) -> None:
    sixteen_bit = dtype in (torch.bfloat16, torch.float16)
    samples = _samples(dtype, True)
    assert samples
    for sample in samples:
        what = f"{dtype} {_sample_id(sample)}"
        got = _grads(et.embedding_bag, sample, dtype)
        if sixteen_bit:
            # DOCUMENTED_DIFFERENCES["16-bit accumulation"]: against PyTorch in float64, within
            # the dtype's rounding (embag rounds once; PyTorch's 16-bit sums are further off).
            wide = type(sample)(sample.input.double(), args=sample.args, kwargs={
                k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
                for k, v in sample.kwargs.items()})
            expected = _grads(F.embedding_bag, wide, torch.float64)
            tol = {"rtol": 1.6e-2, "atol": 1e-2} if dtype == torch.bfloat16 else \
                {"rtol": 2e-3, "atol": 2e-3}
        else:
            expected = _grads(F.embedding_bag, sample, dtype)
            tol = {"rtol": 1.3e-6, "atol": 1e-5} if dtype == torch.float32 else {}
        names = ("output", "weight gradient", "per_sample_weights gradient")
        for name, g, e in zip(names, got, expected):
            if e is None:
                assert g is None, f"{what}: {name}"
                continue
            if name == "output" and _has_tail(sample) and sample.kwargs["mode"] != "sum":
                # DOCUMENTED_DIFFERENCES["include_last_offset tail"]: PyTorch's mean and max
                # take the tail into the last bag; the other bags must agree.
                g, e = g[:-1], e[:-1]
            if name == "weight gradient" and _has_tail(sample):
                rows = _read_rows(sample)
                if sample.kwargs["mode"] != "sum":
                    rows = rows[:0]  # the last bag's rows differ too; the rest are untouched
                untouched = torch.ones(g.shape[0], dtype=torch.bool)
                untouched[_read_rows(sample)] = False
                assert torch.all(g[untouched] == 0), f"{what}: tail rows got a gradient"
                g, e = g[rows], e[rows]
            torch.testing.assert_close(g.to(e.dtype), e, msg=f"{what}: {name}", **tol)


def test_module_coalesced_option() -> None:
    # The module's one extra keyword reaches the functional: embag's coalesced layout.
    bag = et.EmbeddingBag(10, 3, mode="sum", sparse=True, coalesced=True)
    bag(torch.tensor([4, 1, 4, 1, 7]), torch.tensor([0, 2])).sum().backward()
    assert bag.weight.grad is not None
    assert bag.weight.grad._indices().tolist() == [[1, 4, 7]]
    with pytest.raises(TypeError, match="coalesced must be a bool"):
        et.EmbeddingBag(10, 3, coalesced="yes")
