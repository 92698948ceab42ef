// BagLayout: the one bag description every kernel takes — flat indices plus B+1 offsets in the
// input's index dtype — built from 1-D input + offsets, include_last_offset, or 2-D input.
#pragma once

#include <cstdint>
#include <vector>

#include "embag/embag.h"
#include "forward_plan.h"

namespace embag::internal {

struct BagLayout {
  DType index_dtype = DType::kInt64;  // of both arrays below
  const void* indices = nullptr;      // plan.positions_end entries are read
  const void* offsets = nullptr;      // num_bags + 1 entries: bag b is [offsets[b], offsets[b+1])
  // Storage for offsets when the caller's cannot be used as they are.
  std::vector<int32_t> owned_offsets32;
  std::vector<int64_t> owned_offsets64;
};

// Uses the caller's offsets directly when they already have the B+1 form and the index dtype
// (include_last_offset); otherwise builds them (B values, a different dtype, or 2-D input).
void make_bag_layout(const ForwardInputs& inputs, const Options& options, const ForwardPlan& plan,
                     BagLayout* layout);

}  // namespace embag::internal
