// Device-side validation, bag layout and grouping, shared by the GPU forward and backward.
#include "gpu_plan.h"

#include <string>

#include "status_macros.h"

namespace embag::internal::gpu {

namespace {
const halide_type_t kInt32(halide_type_int, 32), kInt64(halide_type_int, 64);
}  // namespace

Status need_kernel(const KernelKey& key, Isa isa, const KernelEntry** kernel) {
  *kernel = find_kernel(key, isa);
  if (*kernel != nullptr) return Status::Ok();
  return Status(StatusCode::kUnsupported,
                "no " + describe(key) + " kernel was compiled for " + isa_name(isa));
}

Status check_cuda_sizes(const Device& device, const ForwardPlan& plan) {
  if (device.type != DeviceType::kCUDA) return Status::Ok();
  const struct {
    const char* what;
    int64_t value, limit;
  } sizes[] = {{"bags", plan.num_bags, kMaxCudaExtent},
               {"indices", plan.num_indices, kMaxCudaExtent},
               {"table rows", plan.num_rows, kMaxCudaExtent},
               {"columns", plan.dim, kMaxCudaColumns}};
  for (const auto& s : sizes) {
    if (s.value > s.limit) {
      return Status(StatusCode::kUnsupported,
                    "the call has " + std::to_string(s.value) + " " + s.what +
                        ", but embag's CUDA kernels launch over at most " +
                        std::to_string(s.limit) + " (CUDA's grid limits)");
    }
  }
  return Status::Ok();
}

Status prepare_bags(CallContext& call, Isa isa, const ForwardInputs& in, const Options& opt,
                    const Execution& execution, const ForwardPlan& plan, DeviceBags* bags) {
  const int64_t N = plan.num_indices;
  const DType index_dtype = in.input.dtype;
  const halide_type_t index_type = index_dtype == DType::kInt32 ? kInt32 : kInt64;
  // With no index at all, a one-element stand-in (never read: no position exists).
  Status wrapped = N > 0 ? bags->indices.wrap(in.input.data, index_dtype, N)
                         : bags->indices.allocate(index_type, 1);
  if (!wrapped.ok()) return wrapped;
  const bool one_d = in.input.ndim == 1;
  const TensorView* offsets = one_d ? in.offsets : nullptr;
  const int64_t num_offsets = offsets != nullptr ? offsets->shape[0] : 0;
  DeviceArray caller_offsets(call);
  if (num_offsets > 0) {
    EMBAG_RETURN_IF_ERROR(caller_offsets.wrap(offsets->data, offsets->dtype, num_offsets));
  }
  // Kernels that take offsets but get none read the indices array instead (never its values).
  DeviceArray& offsets_array = num_offsets > 0 ? caller_offsets : bags->indices;
  const DType offsets_dtype = num_offsets > 0 ? offsets->dtype : index_dtype;

  bags->positions_end = N;
  const bool anything_to_check = num_offsets > 0 || N > 0;
  if (execution.index_check == IndexCheck::kFull && anything_to_check) {
    const KernelEntry* check = nullptr;
    EMBAG_RETURN_IF_ERROR(need_kernel(
        {Pipeline::kCheck, std::nullopt, std::nullopt, index_dtype, offsets_dtype}, isa, &check));
    DeviceArray report(call);
    EMBAG_RETURN_IF_ERROR(report.allocate(kInt64, 8));
    const int32_t num_rows = static_cast<int32_t>(plan.num_rows);
    const int32_t num_indices = static_cast<int32_t>(N);
    const bool has_offsets = num_offsets > 0;
    const bool include_last = opt.include_last_offset;
    KernelArgs args;
    args.buffer("indices", bags->indices.get())
        .buffer("offsets", offsets_array.get())
        .scalar("num_rows", &num_rows)
        .scalar("num_indices", &num_indices)
        .scalar("has_offsets", &has_offsets)
        .scalar("include_last_offset", &include_last)
        .buffer("report", report.get());
    EMBAG_RETURN_IF_ERROR(run_kernel(call, *check, args));
    int64_t r[8] = {};
    EMBAG_RETURN_IF_ERROR(report.read(r));
    if (has_offsets) {
      EMBAG_RETURN_IF_ERROR(offsets_value_error(r[0], r[1], N, r[2], r[3], r[4]));
    }
    if (r[5] >= 0) return index_value_error(r[5], r[6], plan.num_rows, opt);
    bags->positions_end = r[7];
  }

  // The layout: the caller's offsets when they already are it, else built on the device.
  const int64_t B = plan.num_bags;
  if (one_d && opt.include_last_offset && offsets_dtype == index_dtype && num_offsets == B + 1) {
    return bags->layout.wrap(offsets->data, offsets->dtype, B + 1);
  }
  const KernelEntry* layout = nullptr;
  EMBAG_RETURN_IF_ERROR(need_kernel(
      {Pipeline::kLayout, std::nullopt, std::nullopt, index_dtype, offsets_dtype}, isa, &layout));
  EMBAG_RETURN_IF_ERROR(bags->layout.allocate(index_type, B + 1));
  const int32_t num_indices = static_cast<int32_t>(N);
  const int32_t fixed_length = one_d ? 0 : static_cast<int32_t>(in.input.shape[1]);
  // 2-D input with L = 0: every bag is empty, all offsets 0 (fixed_length 0 would read offsets).
  if (!one_d && fixed_length == 0) {
    std::vector<int64_t> zeros(static_cast<size_t>(B + 1), 0);
    if (index_dtype == DType::kInt32) {
      std::vector<int32_t> zeros32(static_cast<size_t>(B + 1), 0);
      return bags->layout.write(zeros32.data());
    }
    return bags->layout.write(zeros.data());
  }
  KernelArgs args;
  args.buffer("offsets", offsets_array.get())
      .scalar("num_indices", &num_indices)
      .scalar("fixed_length", &fixed_length)
      .buffer("layout", bags->layout.get());
  return run_kernel(call, *layout, args);
}

Status group_positions(CallContext& call, Isa isa, const ForwardPlan& plan, DeviceBags& bags,
                       bool exclude_padding, DeviceArray* position_bag, DeviceRowGroups* groups) {
  const DType index_dtype = bags.indices.get()->type.bits == 32 ? DType::kInt32 : DType::kInt64;
  const KernelEntry *find_bag = nullptr, *make_keys = nullptr;
  EMBAG_RETURN_IF_ERROR(need_kernel(
      {Pipeline::kPositionBag, std::nullopt, std::nullopt, index_dtype}, isa, &find_bag));
  EMBAG_RETURN_IF_ERROR(
      need_kernel({Pipeline::kSortKeys, std::nullopt, std::nullopt, index_dtype}, isa, &make_keys));
  const int64_t N = plan.num_indices;
  EMBAG_RETURN_IF_ERROR(position_bag->allocate(kInt32, N));
  DeviceArray keys(call), positions(call);
  EMBAG_RETURN_IF_ERROR(keys.allocate(kInt64, N));
  EMBAG_RETURN_IF_ERROR(positions.allocate(kInt32, N));
  if (N > 0) {
    KernelArgs bag_args;
    bag_args.buffer("layout", bags.layout.get()).buffer("position_bag", position_bag->get());
    EMBAG_RETURN_IF_ERROR(run_kernel(call, *find_bag, bag_args));
    const int32_t num_rows = static_cast<int32_t>(plan.num_rows);
    const int32_t padding = exclude_padding ? plan.padding_idx : -1;
    KernelArgs key_args;
    key_args.buffer("indices", bags.indices.get())
        .buffer("position_bag", position_bag->get())
        .scalar("num_rows", &num_rows)
        .scalar("padding_idx", &padding)
        .buffer("keys", keys.get())
        .buffer("positions", positions.get());
    EMBAG_RETURN_IF_ERROR(run_kernel(call, *make_keys, key_args));
  }
  return group_rows(call, keys, positions, N, plan.num_rows, groups);
}

Status count_bag_positions(CallContext& call, Isa isa, Pipeline pipeline, const ForwardPlan& plan,
                           DeviceBags& bags, DeviceArray* counts) {
  const DType index_dtype = bags.indices.get()->type.bits == 32 ? DType::kInt32 : DType::kInt64;
  const KernelEntry* kernel = nullptr;
  EMBAG_RETURN_IF_ERROR(
      need_kernel({pipeline, std::nullopt, std::nullopt, index_dtype}, isa, &kernel));
  const int32_t padding = plan.padding_idx;
  KernelArgs args;
  args.buffer("indices", bags.indices.get())
      .buffer("layout", bags.layout.get())
      .scalar("padding_idx", &padding)
      .buffer("counts", counts->get());
  return run_kernel(call, *kernel, args);
}

}  // namespace embag::internal::gpu
