# Type stubs for embag._embag, the nanobind extension (python/src/embag_module.cpp). Array
# arguments are DLPack capsules ("dltensor", unversioned) that the caller keeps alive for the call;
# None stands for an absent optional array. Use the `embag` package, not this module.
from typing import Any, Optional

class UnsupportedError(RuntimeError): ...
class EmbeddingBagError(RuntimeError, ValueError): ...
class EmbeddingBagNotImplementedError(EmbeddingBagError, NotImplementedError): ...

class Options:
    @property
    def mode(self) -> str: ...
    @property
    def max_norm(self) -> Optional[float]: ...
    @property
    def norm_type(self) -> float: ...
    @property
    def scale_grad_by_freq(self) -> bool: ...
    @property
    def sparse(self) -> bool: ...
    @property
    def include_last_offset(self) -> bool: ...
    @property
    def padding_idx(self) -> Optional[int]: ...

def make_options(
    mode: str,
    max_norm: Optional[float],
    norm_type: float,
    scale_grad_by_freq: bool,
    sparse: bool,
    include_last_offset: bool,
    padding_idx: Optional[int],
) -> Options: ...
def num_bags(input: Any, offsets: Optional[Any], include_last_offset: bool) -> int: ...
def forward(
    weight: Any,
    input: Any,
    offsets: Optional[Any],
    per_sample_weights: Optional[Any],
    output: Any,
    bag_count: Optional[Any],
    argmax: Optional[Any],
    options: Options,
    stream: int,
    check_indices: bool,
) -> None: ...
def sparse_gradient_rows(
    grad_output: Any,
    weight: Any,
    input: Any,
    offsets: Optional[Any],
    per_sample_weights: Optional[Any],
    argmax: Optional[Any],
    options: Options,
    stream: int,
    check_indices: bool,
) -> int: ...
def backward(
    grad_output: Any,
    weight: Any,
    input: Any,
    offsets: Optional[Any],
    per_sample_weights: Optional[Any],
    argmax: Optional[Any],
    grad_weight: Optional[Any],
    grad_weight_rows: Optional[Any],
    grad_weight_values: Optional[Any],
    grad_per_sample_weights: Optional[Any],
    options: Options,
    stream: int,
    check_indices: bool,
) -> None: ...
def batched_forward(
    weights: list[Any],
    modes: list[str],
    padding_idx: list[Optional[int]],
    feature_table: list[int],
    indices: Any,
    offsets: Any,
    per_sample_weights: Optional[Any],
    feature_columns: list[int],
    output: Any,
) -> None: ...
def batched_sparse_gradient_rows(
    weights: list[Any],
    modes: list[str],
    padding_idx: list[Optional[int]],
    feature_table: list[int],
    indices: Any,
    offsets: Any,
    per_sample_weights: Optional[Any],
    feature_columns: list[int],
) -> list[int]: ...
def batched_backward(
    weights: list[Any],
    modes: list[str],
    padding_idx: list[Optional[int]],
    feature_table: list[int],
    indices: Any,
    offsets: Any,
    per_sample_weights: Optional[Any],
    feature_columns: list[int],
    grad_output: Any,
    grad_weight: list[Any],
    grad_weight_rows: list[Any],
    grad_weight_values: list[Any],
    sparse: bool,
) -> None: ...
def batched_fused_backward(
    weights: list[Any],
    modes: list[str],
    padding_idx: list[Optional[int]],
    feature_table: list[int],
    indices: Any,
    offsets: Any,
    per_sample_weights: Optional[Any],
    feature_columns: list[int],
    grad_output: Any,
    optimizer: str,
    learning_rate: float,
    eps: float,
    beta1: float,
    beta2: float,
    weight_decay: float,
    weight_decay_mode: str,
    step: int,
    momentum1: list[Optional[Any]],
    momentum2: list[Optional[Any]],
) -> None: ...
def set_isa(name: Optional[str]) -> None: ...
def selected_isa() -> str: ...
def compiled_isas() -> list[str]: ...
def supported_isas() -> list[str]: ...
def cpu_features() -> str: ...
def cuda_status() -> str: ...
def compiled_variants() -> list[dict[str, str]]: ...
def last_variant() -> str: ...
def set_num_threads(n: int) -> None: ...
def num_threads() -> int: ...
def max_num_threads() -> int: ...
def quantize(weight: Any, out: Any, format: str, dim: int) -> None: ...
def dequantize(data: Any, format: str, dim: int, out: Any) -> None: ...
def forward_quantized(
    data: Any,
    format: str,
    dim: int,
    input: Any,
    offsets: Optional[Any],
    per_sample_weights: Optional[Any],
    output: Any,
    bag_count: Optional[Any],
    argmax: Optional[Any],
    options: Options,
) -> None: ...
def quantized_row_bytes(format: str, dim: int) -> int: ...
