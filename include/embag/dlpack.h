// Interop with DLPack: view a DLTensor (from PyTorch, NumPy, JAX, ...) as an embag TensorView.
//
// Include this header only if your program has <dlpack/dlpack.h> (Debian: libdlpack-dev); the
// rest of embag's API does not need it.
#pragma once

#include <dlpack/dlpack.h>

#include "embag/export.h"
#include "embag/status.h"
#include "embag/tensor.h"

namespace EMBAG_API embag {

// Describes `tensor`'s memory as a TensorView (no copy). Fails, leaving `view` unchanged, for
// dtypes embag does not know, more than 2 dimensions, vector lanes, or a device other than CPU
// or CUDA. `byte_offset` is applied to the data pointer; null strides mean row-major.
Status from_dlpack(const DLTensor& tensor, TensorView* view);

}  // namespace embag
