// A downstream program built only against an installed embag: it runs the worked example of
// SEMANTICS.md (sum and max, forward and backward) through the public API and checks every
// number exactly. It doubles as a test that the installed package links and runs, and as the
// shortest complete example of how to call embag from your own code.
#include <cstdint>
#include <iostream>
#include <string>
#include <vector>

#include "embag/embag.h"

namespace {

constexpr int64_t kRows = 5;  // V: rows of the table
constexpr int64_t kDim = 2;   // D: columns of the table
constexpr int64_t kBags = 5;  // B: one bag per offset

// embag never throws: every call returns a Status, and a failed one has written nothing.
bool succeeded(const embag::Status& status, const std::string& call) {
  if (status.ok()) {
    return true;
  }
  std::cerr << "embag_consumer: " << call << " failed: " << status.message() << "\n";
  return false;
}

// Prints a (rows x kDim) result with the kernel that produced it, then compares it exactly:
// the example's values are small integers, so any rounding at all would be a bug.
template <typename T>
bool check(const std::string& name, const std::vector<T>& got, const std::vector<T>& expected) {
  const size_t cols = static_cast<size_t>(kDim);
  std::cout << name << " [" << embag::last_variant() << "]:\n ";
  for (size_t i = 0; i < got.size(); ++i) {
    const bool row_start = i % cols == 0;
    const bool row_end = i % cols == cols - 1;
    std::cout << (row_start ? " [" : ", ") << got[i] << (row_end ? "]" : "");
  }
  std::cout << "\n";
  bool match = true;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (got[i] != expected[i]) {
      std::cerr << "embag_consumer: " << name << "[" << i / cols << "][" << i % cols << "] is "
                << got[i] << ", expected " << expected[i] << "\n";
      match = false;
    }
  }
  return match;
}

}  // namespace

int main() {
  // The caller owns every array; embag reads and writes them through non-owning views.
  std::vector<float> weight = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};  // (5, 2)
  std::vector<int64_t> indices = {3, 1, 1, 1, 4, 0};
  // Repeated offsets make empty bags: bags 0, 2 and 4 are empty, bag 1 is positions [0, 3)
  // and bag 3 is positions [3, 6).
  std::vector<int64_t> offsets = {0, 0, 3, 3, 6};
  // The rows of empty bags get no gradient, so their 99s must not show up anywhere.
  std::vector<float> grad_output = {99, 99, 1, 2, 99, 99, 3, 4, 99, 99};

  embag::Isa isa;
  if (!succeeded(embag::selected_isa(&isa), "selected_isa")) {
    return 1;
  }
  std::cout << "embag_consumer: ISA " << embag::isa_name(isa) << ", " << embag::num_threads()
            << " threads\n";

  const embag::TensorView offsets_view =
      embag::make_view_1d(offsets.data(), embag::DType::kInt64, kBags);
  embag::ForwardInputs inputs;
  inputs.weight = embag::make_view_2d(weight.data(), embag::DType::kFloat32, kRows, kDim);
  inputs.input = embag::make_view_1d(indices.data(), embag::DType::kInt64,
                                     static_cast<int64_t>(indices.size()));
  inputs.offsets = &offsets_view;

  // Backward reads the same table, indices and offsets as the forward call, plus the gradient
  // of the output.
  embag::BackwardInputs backward_inputs;
  backward_inputs.weight = inputs.weight;
  backward_inputs.input = inputs.input;
  backward_inputs.offsets = inputs.offsets;
  backward_inputs.grad_output =
      embag::make_view_2d(grad_output.data(), embag::DType::kFloat32, kBags, kDim);

  bool all_match = true;

  // Sum. The mode is set explicitly because, as in PyTorch, the default is mean.
  embag::Options sum_options;
  sum_options.mode = embag::Mode::kSum;
  std::vector<float> sum_output(kBags * kDim);
  embag::ForwardOutputs sum_outputs;
  sum_outputs.output = embag::make_view_2d(sum_output.data(), embag::DType::kFloat32, kBags, kDim);
  if (!succeeded(embag::forward(inputs, sum_outputs, sum_options), "forward (sum)")) {
    return 1;
  }
  all_match &= check<float>("sum output", sum_output, {0, 0, 13, 16, 0, 0, 13, 16, 0, 0});

  std::vector<float> sum_grad(kRows * kDim);
  const embag::TensorView sum_grad_view =
      embag::make_view_2d(sum_grad.data(), embag::DType::kFloat32, kRows, kDim);
  embag::BackwardOutputs sum_grads;
  sum_grads.grad_weight = &sum_grad_view;
  if (!succeeded(embag::backward(backward_inputs, sum_grads, sum_options), "backward (sum)")) {
    return 1;
  }
  all_match &= check<float>("sum grad weight", sum_grad, {3, 4, 5, 8, 0, 0, 1, 2, 3, 4});

  // Max. Backward routes each column's gradient to the row that won it, so the forward call
  // must also write argmax (-1 marks an empty bag) and backward must be given it.
  embag::Options max_options;
  max_options.mode = embag::Mode::kMax;
  std::vector<float> max_output(kBags * kDim);
  std::vector<int64_t> argmax(kBags * kDim);
  const embag::TensorView argmax_view =
      embag::make_view_2d(argmax.data(), embag::DType::kInt64, kBags, kDim);
  embag::ForwardOutputs max_outputs;
  max_outputs.output = embag::make_view_2d(max_output.data(), embag::DType::kFloat32, kBags, kDim);
  max_outputs.argmax = &argmax_view;
  if (!succeeded(embag::forward(inputs, max_outputs, max_options), "forward (max)")) {
    return 1;
  }
  all_match &= check<float>("max output", max_output, {0, 0, 7, 8, 0, 0, 9, 10, 0, 0});
  all_match &= check<int64_t>("max argmax", argmax, {-1, -1, 3, 3, -1, -1, 4, 4, -1, -1});

  std::vector<float> max_grad(kRows * kDim);
  const embag::TensorView max_grad_view =
      embag::make_view_2d(max_grad.data(), embag::DType::kFloat32, kRows, kDim);
  backward_inputs.argmax = &argmax_view;
  embag::BackwardOutputs max_grads;
  max_grads.grad_weight = &max_grad_view;
  if (!succeeded(embag::backward(backward_inputs, max_grads, max_options), "backward (max)")) {
    return 1;
  }
  all_match &= check<float>("max grad weight", max_grad, {0, 0, 0, 0, 0, 0, 1, 2, 3, 4});

  if (!all_match) {
    std::cerr << "embag_consumer: results differ from SEMANTICS.md's worked example\n";
    return 1;
  }
  std::cout << "embag_consumer: all results match\n";
  return 0;
}
