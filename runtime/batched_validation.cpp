// Validation of table-batched calls: every rule of include/embag/batched.h, checked before
// anything is written, each message naming the feature and the table it concerns.
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "batched_plan.h"
#include "forward_plan.h"

namespace embag::internal {
namespace {

Status invalid(const std::string& message) { return Status(StatusCode::kInvalidArgument, message); }

std::string feature_prefix(int64_t f, int64_t t) {
  return "feature " + std::to_string(f) + " (table " + std::to_string(t) + "): ";
}

bool is_table_dtype(DType t) {
  return t == DType::kFloat32 || t == DType::kFloat16 || t == DType::kBFloat16;
}

// Private copies of the index arrays, per calling thread (see IndexSnapshot in forward_plan.h).
thread_local std::vector<int64_t> t_offsets_copy;
thread_local std::vector<int64_t> t_indices_copy;

const void* copy_array(const void* data, int64_t count, DType dtype, std::vector<int64_t>* store) {
  const size_t bytes = static_cast<size_t>(count) * dtype_size(dtype);
  store->resize((bytes + sizeof(int64_t) - 1) / sizeof(int64_t) + 1);
  if (bytes > 0) std::memcpy(store->data(), data, bytes);
  return store->data();
}

Status check_tables(const BatchedInputs& in, BatchedPlan* plan) {
  // Devices first, every table: "one device" is the rule a table on another device breaks,
  // whatever this build has kernels for (the memory checks below refuse a device without them).
  for (size_t t = 0; t < in.tables.size(); ++t) {
    if (Status s = check_batched_device(in.tables[t].weight, "table " + std::to_string(t), *plan);
        !s.ok())
      return s;
  }
  for (size_t t = 0; t < in.tables.size(); ++t) {
    const TensorView& w = in.tables[t].weight;
    const std::string name = "table " + std::to_string(t);
    if (w.ndim != 2) {
      return invalid(name + " must be 2-D (V, D), but has shape " + w.shape_string());
    }
    if (!is_table_dtype(w.dtype)) {
      return invalid(name + " has dtype " + dtype_name(w.dtype) +
                     ", but batched tables are float32, float16 or bfloat16");
    }
    if (w.dtype != in.tables[0].weight.dtype) {
      return invalid(name + " has dtype " + dtype_name(w.dtype) + ", but table 0 has " +
                     dtype_name(in.tables[0].weight.dtype) +
                     ": the tables of a batched call share one dtype");
    }
    if (Status s = check_view_memory(w, name.c_str(), false); !s.ok()) return s;
    const int64_t V = w.shape[0];
    int32_t padding = -1;
    if (const auto& p = in.tables[t].padding_idx) {
      if (*p < -V || *p >= V) {
        return invalid(name + ": padding_idx " + std::to_string(*p) +
                       " must be within the number of rows " + std::to_string(V) + " (in [-" +
                       std::to_string(V) + ", " + std::to_string(V - 1) + "])");
      }
      padding = static_cast<int32_t>(*p < 0 ? *p + V : *p);
    }
    plan->padding.push_back(padding);
    plan->pooling.push_back(pooling_for(in.tables[t].mode, in.per_sample_weights != nullptr));
  }
  if (!in.tables.empty()) plan->dtype = in.tables[0].weight.dtype;
  return Status::Ok();
}

Status check_features(const BatchedInputs& in, BatchedPlan* plan) {
  const int64_t T = plan->num_tables, F = plan->num_features;
  for (int64_t f = 0; f < F; ++f) {
    const int64_t t = in.feature_table[f];
    if (t < 0 || t >= T) {
      return invalid("feature " + std::to_string(f) + ": table " + std::to_string(t) +
                     " is out of range for " + std::to_string(T) + " tables");
    }
    plan->feature_table.push_back(t);
    plan->dims.push_back(in.tables[t].weight.shape[1]);
    if (in.per_sample_weights != nullptr && in.tables[t].mode != Mode::kSum) {
      return invalid(feature_prefix(f, t) + "per_sample_weights need mode sum, but table " +
                     std::to_string(t) + " pools with " + mode_name(in.tables[t].mode));
    }
  }
  if (!in.feature_columns.empty() && static_cast<int64_t>(in.feature_columns.size()) != F) {
    return invalid("feature_columns has " + std::to_string(in.feature_columns.size()) +
                   " entries, but there are " + std::to_string(F) +
                   " features (give one first column per feature, or none for packed blocks)");
  }
  int64_t packed = 0;
  for (int64_t f = 0; f < F; ++f) {
    const int64_t column = in.feature_columns.empty() ? packed : in.feature_columns[f];
    if (column < 0) {
      return invalid(feature_prefix(f, plan->feature_table[f]) + "feature_columns[" +
                     std::to_string(f) + "] = " + std::to_string(column) + " is negative");
    }
    plan->columns.push_back(column);
    packed += plan->dims[f];
    plan->output_columns = std::max(plan->output_columns, column + plan->dims[f]);
  }
  // Blocks must not overlap: sorted by first column, each must end before the next begins.
  std::vector<int64_t> order(static_cast<size_t>(F));
  for (int64_t f = 0; f < F; ++f) order[f] = f;
  std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return plan->columns[a] != plan->columns[b] ? plan->columns[a] < plan->columns[b] : a < b;
  });
  for (size_t i = 1; i < order.size(); ++i) {
    const int64_t a = order[i - 1], b = order[i];
    if (plan->dims[a] > 0 && plan->dims[b] > 0 &&
        plan->columns[a] + plan->dims[a] > plan->columns[b]) {
      return invalid("feature " + std::to_string(b) + "'s column block [" +
                     std::to_string(plan->columns[b]) + ", " +
                     std::to_string(plan->columns[b] + plan->dims[b]) + ") overlaps feature " +
                     std::to_string(a) + "'s [" + std::to_string(plan->columns[a]) + ", " +
                     std::to_string(plan->columns[a] + plan->dims[a]) + ")");
    }
  }
  return Status::Ok();
}

Status check_index_arrays(const BatchedInputs& in, BatchedPlan* plan) {
  const TensorView& idx = in.indices;
  const TensorView& off = in.offsets;
  for (const auto& [view, name] : {std::pair{&idx, "indices"}, std::pair{&off, "offsets"}}) {
    if (Status s = check_batched_device(*view, name, *plan); !s.ok()) return s;
    if (view->ndim != 1) {
      return invalid(std::string(name) + " must be 1-D, but has shape " + view->shape_string());
    }
    if (view->dtype != DType::kInt32 && view->dtype != DType::kInt64) {
      return invalid(std::string(name) + " has dtype " + dtype_name(view->dtype) +
                     ", but must be int32 or int64");
    }
    if (Status s = check_view_memory(*view, name, true); !s.ok()) return s;
  }
  if (off.dtype != idx.dtype) {
    return invalid(std::string("offsets has dtype ") + dtype_name(off.dtype) +
                   ", but indices has " + dtype_name(idx.dtype) + ": they must match");
  }
  plan->index_dtype = idx.dtype;
  plan->num_indices = idx.shape[0];
  const int64_t F = plan->num_features, entries = off.shape[0];
  if (entries < 1) return invalid("offsets must have F*B + 1 entries, but it is empty");
  if (F == 0) {
    if (entries != 1) {
      return invalid("offsets has " + std::to_string(entries) +
                     " entries, but with no features it must have exactly 1 (F*B + 1)");
    }
  } else if ((entries - 1) % F != 0) {
    return invalid("offsets has " + std::to_string(entries) + " entries, but must have F*B + 1 = " +
                   std::to_string(F) + "*B + 1 for some B (" + std::to_string(entries - 1) +
                   " is not a multiple of " + std::to_string(F) + ")");
  }
  plan->num_bags = F == 0 ? 0 : (entries - 1) / F;
  if (const TensorView* psw = in.per_sample_weights) {
    if (Status s = check_batched_device(*psw, "per_sample_weights", *plan); !s.ok()) return s;
    if (psw->ndim != 1 || psw->shape[0] != plan->num_indices) {
      return invalid("per_sample_weights must have the indices' shape (" +
                     std::to_string(plan->num_indices) + "), but has shape " + psw->shape_string());
    }
    if (psw->dtype != plan->dtype) {
      return invalid(std::string("per_sample_weights has dtype ") + dtype_name(psw->dtype) +
                     ", but the tables have " + dtype_name(plan->dtype) + ": they must match");
    }
    if (Status s = check_view_memory(*psw, "per_sample_weights", true); !s.ok()) return s;
  }
  return Status::Ok();
}

Status check_values(BatchedPlan* plan) {
  const int64_t F = plan->num_features, B = plan->num_bags, N = plan->num_indices;
  const int64_t entries = F * B + 1;
  if (plan->offset(0) != 0) {
    return invalid(
        "offsets[0] has to be 0, i.e., the first sequence in the mini-batch has to "
        "start from position 0. However, got " +
        std::to_string(plan->offset(0)));
  }
  for (int64_t i = 0; i + 1 < entries; ++i) {
    const int64_t before = plan->offset(i), after = plan->offset(i + 1);
    if (after < before) {
      const int64_t f = i / B;
      return invalid(feature_prefix(f, plan->feature_table[f]) + "offsets[" +
                     std::to_string(i + 1) + "] = " + std::to_string(after) +
                     " is smaller than offsets[" + std::to_string(i) +
                     "] = " + std::to_string(before) + " (offsets must be non-decreasing)");
    }
  }
  plan->positions_end = plan->offset(entries - 1);
  if (plan->positions_end > N) {
    return invalid("offsets[" + std::to_string(entries - 1) +
                   "] = " + std::to_string(plan->positions_end) +
                   " is past the end of indices (N = " + std::to_string(N) + ")");
  }
  return Status::Ok();
}

Status check_indices(const BatchedInputs& in, const BatchedPlan& plan) {
  const int64_t F = plan.num_features, B = plan.num_bags;
  for (int64_t f = 0; f < F; ++f) {
    const int64_t t = plan.feature_table[f];
    const int64_t V = in.tables[t].weight.shape[0];
    const int64_t padding = plan.padding[t];
    const int64_t end = plan.offset((f + 1) * B);
    for (int64_t p = plan.offset(f * B); p < end; ++p) {
      const int64_t r = plan.index(p);
      if ((r < 0 || r >= V) && r != padding) {
        return invalid(feature_prefix(f, t) + "index " + std::to_string(r) + " at position " +
                       std::to_string(p) + " is out of range for a table of " + std::to_string(V) +
                       " rows");
      }
    }
  }
  return Status::Ok();
}

}  // namespace

Device batched_device(const BatchedInputs& inputs) {
  return inputs.tables.empty() ? inputs.indices.device : inputs.tables[0].weight.device;
}

Status check_batched_device(const TensorView& view, const std::string& name,
                            const BatchedPlan& plan) {
  if (view.device.type == plan.device.type && view.device.index == plan.device.index) {
    return Status::Ok();
  }
  auto where = [](const Device& d) {
    return std::string(device_type_name(d.type)) +
           (d.type == DeviceType::kCPU ? "" : ":" + std::to_string(d.index));
  };
  return invalid(name + " is on " + where(view.device) + ", but " +
                 (plan.num_tables > 0 ? "table 0" : "indices") + " is on " + where(plan.device) +
                 ": every tensor of a batched call must be on one device");
}

Status validate_batched_inputs(const BatchedInputs& in, BatchedPlan* plan, bool copy,
                               DeviceArrayReader* device) {
  *plan = BatchedPlan{};
  plan->device = batched_device(in);
  plan->num_tables = static_cast<int64_t>(in.tables.size());
  plan->num_features = static_cast<int64_t>(in.feature_table.size());
  const bool on_gpu = plan->device.type != DeviceType::kCPU;
  if (on_gpu && device == nullptr) {
    return Status(StatusCode::kUnsupported,
                  std::string("the tensors are on ") + device_type_name(plan->device.type) +
                      ", but this batched call runs on the CPU only (on GPUs: batched_forward "
                      "and batched_fused_backward)");
  }
  if (Status s = check_tables(in, plan); !s.ok()) return s;
  if (Status s = check_index_arrays(in, plan); !s.ok()) return s;
  if (Status s = check_features(in, plan); !s.ok()) return s;
  // A GPU call's offsets and indices are read to the host once, and what is checked is used.
  auto read = [&](const TensorView& view, int64_t count, std::vector<int64_t>* store,
                  const void** out) -> Status {
    if (!on_gpu) {
      *out = copy ? copy_array(view.data, count, plan->index_dtype, store) : view.data;
      return Status::Ok();
    }
    const size_t bytes = static_cast<size_t>(count) * dtype_size(plan->index_dtype);
    store->assign((bytes + sizeof(int64_t) - 1) / sizeof(int64_t) + 1, 0);
    *out = store->data();
    return count > 0 ? device->read(view, count, store->data()) : Status::Ok();
  };
  const int64_t entries = plan->num_features * plan->num_bags + 1;
  if (Status s = read(in.offsets, entries, &t_offsets_copy, &plan->offsets); !s.ok()) return s;
  if (Status s = check_values(plan); !s.ok()) return s;
  if (Status s = read(in.indices, plan->positions_end, &t_indices_copy, &plan->indices); !s.ok())
    return s;
  return check_indices(in, *plan);
}

Status validate_batched_output(const TensorView& view, const char* name, const BatchedPlan& plan) {
  if (Status s = check_batched_device(view, name, plan); !s.ok()) return s;
  if (view.ndim != 2) {
    return invalid(std::string(name) + " must be 2-D (B, C), but has shape " + view.shape_string());
  }
  if (plan.num_tables > 0 && view.dtype != plan.dtype) {
    return invalid(std::string(name) + " has dtype " + dtype_name(view.dtype) +
                   ", but the tables have " + dtype_name(plan.dtype) + ": they must match");
  }
  if (plan.num_features > 0 && view.shape[0] != plan.num_bags) {
    return invalid(std::string(name) + " has " + std::to_string(view.shape[0]) +
                   " rows, but the offsets make B = " + std::to_string(plan.num_bags) + " bags");
  }
  if (view.shape[1] < plan.output_columns) {
    return invalid(std::string(name) + " has " + std::to_string(view.shape[1]) +
                   " columns, but the features' column blocks end at column " +
                   std::to_string(plan.output_columns));
  }
  return check_view_memory(view, name, false);
}

}  // namespace embag::internal
