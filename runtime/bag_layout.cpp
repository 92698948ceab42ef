// Building the B+1 offsets form of a call's bags.
#include "bag_layout.h"

namespace embag::internal {
namespace {

template <typename T>
void fill_offsets(const ForwardInputs& in, const Options& opt, const ForwardPlan& plan,
                  std::vector<T>* out) {
  const int64_t B = plan.num_bags;
  out->resize(static_cast<size_t>(B + 1));
  if (in.input.ndim == 2) {
    const int64_t L = in.input.shape[1];
    for (int64_t b = 0; b <= B; ++b) (*out)[b] = static_cast<T>(b * L);
    return;
  }
  for (int64_t b = 0; b < B; ++b) (*out)[b] = static_cast<T>(load_index(*in.offsets, b));
  // The end of the last bag: the caller's last offset, or the end of the input.
  (*out)[B] =
      static_cast<T>(opt.include_last_offset ? load_index(*in.offsets, B) : plan.num_indices);
}

}  // namespace

void make_bag_layout(const ForwardInputs& in, const Options& opt, const ForwardPlan& plan,
                     BagLayout* layout) {
  layout->index_dtype = in.input.dtype;
  layout->indices = in.input.data;
  if (in.input.ndim == 1 && opt.include_last_offset && in.offsets->dtype == in.input.dtype) {
    layout->offsets = in.offsets->data;
    return;
  }
  if (layout->index_dtype == DType::kInt32) {
    fill_offsets(in, opt, plan, &layout->owned_offsets32);
    layout->offsets = layout->owned_offsets32.data();
  } else {
    fill_offsets(in, opt, plan, &layout->owned_offsets64);
    layout->offsets = layout->owned_offsets64.data();
  }
}

}  // namespace embag::internal
