"""embag: PyTorch's ``embedding_bag`` as ahead-of-time compiled Halide kernels.

``embag.embedding_bag`` / ``embag.embedding_bag_backward`` work on any DLPack array (NumPy,
PyTorch, JAX) without copying; ``embag.torch`` (imported separately, needs PyTorch) is a drop-in
for ``torch.nn.functional.embedding_bag`` and ``torch.nn.EmbeddingBag`` with autograd.

Errors: ``embag.EmbeddingBagError`` when a call breaks a rule (PyTorch's message; nothing was
written): it is both a ``RuntimeError``, as PyTorch raises for these rules, and a ``ValueError``,
embag's earlier contract, so either ``except`` catches it (``EmbeddingBagNotImplementedError``, its
subclass, is also a ``NotImplementedError``, as PyTorch raises for per_sample_weights with mode
mean or max); ``TypeError`` when an argument is not an array embag can view or an option has the
wrong type (the message names the argument and the value); ``embag.UnsupportedError`` (a
``RuntimeError``) when a well-formed call cannot run on this build or machine.
"""

from __future__ import annotations

import operator
from typing import Any, Optional

from . import _embag
from ._arrays import ForwardResult, Gradients, embedding_bag, embedding_bag_backward
from ._quantized import QuantizedTable, dequantize, quantize

__version__ = "0.1.0"

EmbeddingBagError = _embag.EmbeddingBagError
EmbeddingBagError.__module__ = "embag"
EmbeddingBagError.__doc__ = (
    "A call broke one of embedding_bag's rules (PyTorch's message; nothing was written). Both a "
    "RuntimeError (what PyTorch raises for the rule, so `except RuntimeError` written for PyTorch "
    "catches it) and a ValueError (embag's contract before)."
)
EmbeddingBagNotImplementedError = _embag.EmbeddingBagNotImplementedError
EmbeddingBagNotImplementedError.__module__ = "embag"
EmbeddingBagNotImplementedError.__doc__ = (
    "An EmbeddingBagError that is also a NotImplementedError: per_sample_weights with mode mean "
    "or max, which PyTorch reports as not implemented."
)

UnsupportedError = _embag.UnsupportedError
UnsupportedError.__module__ = "embag"
UnsupportedError.__doc__ = (
    "A well-formed call that this build of embag or this machine cannot run: a device without "
    "kernels (CUDA tensors before CUDA kernels exist), a forced ISA the CPU lacks."
)

__all__ = [
    "EmbeddingBagError",
    "EmbeddingBagNotImplementedError",
    "ForwardResult",
    "Gradients",
    "QuantizedTable",
    "UnsupportedError",
    "compiled_variants",
    "cuda_status",
    "dequantize",
    "embedding_bag",
    "embedding_bag_backward",
    "info",
    "last_variant",
    "max_num_threads",
    "num_threads",
    "quantize",
    "selected_isa",
    "set_isa",
    "set_num_threads",
]


def set_isa(isa: Optional[str]) -> None:
    """Forces every later call onto one CPU ISA ("avx512", "avx2", "sse41", "neon", "armv7");
    None returns to the automatic choice. Raises ValueError for an unknown name and
    UnsupportedError when the ISA is not compiled in or this CPU lacks it (nothing changes)."""
    if isa is not None and not isinstance(isa, str):
        raise TypeError(f"set_isa: isa must be a str or None, but got {isa!r} ({type(isa).__name__})")
    _embag.set_isa(isa)


def selected_isa() -> str:
    """The CPU ISA later calls will use."""
    return _embag.selected_isa()


def set_num_threads(n: int) -> None:
    """Threads the kernels use (the calling thread included), 1 to ``max_num_threads()``.
    Results are bitwise identical for every thread count. All or nothing: if the system refuses
    a thread, ``UnsupportedError`` says why and the count stays as it was. A forked child keeps
    the count and starts its own threads."""
    try:
        count = operator.index(n)  # ints and NumPy integers; not floats or bools
    except TypeError:
        count = 0
    limit = _embag.max_num_threads()
    if isinstance(n, bool) or count < 1 or count > limit:
        raise ValueError(
            f"set_num_threads: n must be an integer between 1 and {limit} (max_num_threads()), "
            f"but got {n!r}"
        )
    _embag.set_num_threads(count)


def max_num_threads() -> int:
    """The most threads ``set_num_threads`` accepts: 1024, or 4 per hardware thread on machines
    with more than 256."""
    return _embag.max_num_threads()


def num_threads() -> int:
    """Threads the kernels use."""
    return _embag.num_threads()


def cuda_status() -> str:
    """Whether CUDA calls can run here, in one line (the devices found, or why not)."""
    return _embag.cuda_status()


def last_variant() -> str:
    """The kernel variant the most recent successful call on this thread ran ("" before any)."""
    return _embag.last_variant()


def compiled_variants() -> list[dict[str, str]]:
    """Every compiled kernel: name, pipeline, mode, dtypes, device, ISA and Halide target."""
    return _embag.compiled_variants()


def info() -> dict[str, Any]:
    """What this build holds and what runs here, as ``embag info`` prints it."""
    return {
        "version": __version__,
        "compiled_isas": _embag.compiled_isas(),
        "supported_isas": _embag.supported_isas(),
        "selected_isa": _embag.selected_isa(),
        "cpu_features": _embag.cpu_features(),
        "num_threads": _embag.num_threads(),
        "cuda": _embag.cuda_status(),
        "variants": len(_embag.compiled_variants()),
    }
