// Table-batched calls (include/embag/batched.h) against their definitions:
//   - batched_forward bitwise equal to one single-table embag::forward per feature (and to the
//     reference), on every CPU ISA, for random tables, features sharing tables, D = 1 / 3 / 33,
//     every table dtype and index dtype, every mode, weighted sum, padding and empty bags, with
//     column blocks in any order and gaps that must stay untouched;
//   - per-table gradients bitwise equal to the reference's single-table backward on the
//     features' gathered bags;
//   - every fused optimizer over 5 steps on duplicate-heavy batches bitwise equal to the
//     reference's update, tables and state, untouched rows included;
//   - 1 and 2 threads giving the same bits;
//   - every batched validation rule as a row of an error table, with nothing written;
//   - on a GPU (EMBAG_TEST_ISAS=opencl or cuda_sm*: the gpu-emulated and cuda-emulated CTest
//     entries; elsewhere these tests skip): the forward bitwise equal to single-table GPU calls per
//     feature and to the reference, every fused optimizer bitwise equal to the reference, and a
//     refused call writing nothing on the device.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "differential_support.h"
#include "embag/batched.h"
#include "error_table_support.h"
#include "gpu_mirror.h"
#include "reference/batched_reference.h"
#include "reference/half_float.h"
#include "reference/reference.h"

namespace embag {
namespace {

using difftest::chance;
using difftest::uniform;

constexpr unsigned char kSentinel = 0x7F;
constexpr DType kTableDTypes[] = {DType::kFloat32, DType::kFloat16, DType::kBFloat16};

void store_value(void* base, DType dtype, int64_t i, float v) {
  switch (dtype) {
    case DType::kFloat16:
      static_cast<uint16_t*>(base)[i] = ref::float_to_half(v);
      break;
    case DType::kBFloat16:
      static_cast<uint16_t*>(base)[i] = ref::float_to_bfloat16(v);
      break;
    default:
      static_cast<float*>(base)[i] = v;
  }
}

float random_float(std::mt19937_64& rng) {
  return static_cast<float>(std::uniform_real_distribution<double>(-1.0, 1.0)(rng));
}

struct CaseShape {
  bool allow_max = true;  // forward cases; backward has no max
  int64_t max_rows = 20;  // small tables: duplicates are common
  int64_t max_bag = 6;
  bool allow_big_table = true;  // now and then a memory-resident table
};

// One random batched call, owning every array its views point at (not copyable or movable).
struct Case {
  Case(uint64_t seed, const CaseShape& shape) {
    std::mt19937_64 rng(seed);
    dtype = kTableDTypes[uniform(rng, 0, 2)];
    index_dtype = chance(rng, 0.5) ? DType::kInt32 : DType::kInt64;
    const bool weighted = chance(rng, 0.25);
    const int64_t T = uniform(rng, 1, 4);
    const int64_t kDims[] = {1, 3, 33, 4, 16, 64};
    const size_t element = dtype_size(dtype);
    table_data.resize(static_cast<size_t>(T));
    for (int64_t t = 0; t < T; ++t) {
      int64_t V = uniform(rng, 1, shape.max_rows);
      if (shape.allow_big_table && chance(rng, 0.08)) V = 3000;
      const int64_t D = kDims[uniform(rng, 0, 5)];
      const int64_t stride = D + (chance(rng, 0.3) ? uniform(rng, 1, 3) : 0);
      table_data[t].assign(static_cast<size_t>(V * stride) * element + 1, kSentinel);
      for (int64_t r = 0; r < V; ++r) {
        for (int64_t d = 0; d < D; ++d) {
          store_value(table_data[t].data(), dtype, r * stride + d, random_float(rng));
        }
      }
      BatchedTable table;
      table.weight = make_view_2d(table_data[t].data(), dtype, V, D, stride);
      const Mode modes[] = {Mode::kSum, Mode::kMean, Mode::kMax};
      table.mode = weighted ? Mode::kSum : modes[uniform(rng, 0, shape.allow_max ? 2 : 1)];
      if (chance(rng, 0.3)) table.padding_idx = uniform(rng, -V, V - 1);
      inputs.tables.push_back(table);
    }
    const int64_t F = uniform(rng, 1, 6);
    for (int64_t f = 0; f < F; ++f) inputs.feature_table.push_back(uniform(rng, 0, T - 1));
    B = uniform(rng, 0, 7);
    std::vector<int64_t> idx, off = {0};
    for (int64_t f = 0; f < F; ++f) {
      const BatchedTable& table = inputs.tables[inputs.feature_table[f]];
      const int64_t V = table.weight.shape[0];
      for (int64_t b = 0; b < B; ++b) {
        const int64_t L = chance(rng, 0.15) ? 0 : uniform(rng, 0, shape.max_bag);
        for (int64_t i = 0; i < L; ++i) {
          int64_t r = uniform(rng, 0, V - 1);
          if (table.padding_idx && chance(rng, 0.2)) {
            r = *table.padding_idx < 0 ? *table.padding_idx + V : *table.padding_idx;
          }
          idx.push_back(r);
        }
        off.push_back(static_cast<int64_t>(idx.size()));
      }
    }
    const int64_t N = static_cast<int64_t>(idx.size()) + (chance(rng, 0.2) ? 2 : 0);  // a tail
    while (static_cast<int64_t>(idx.size()) < N) idx.push_back(0);
    auto fill_index = [&](const std::vector<int64_t>& values, std::vector<int64_t>* store) {
      store->assign(values.size() + 1, 0);
      for (size_t i = 0; i < values.size(); ++i) {
        if (index_dtype == DType::kInt32) {
          reinterpret_cast<int32_t*>(store->data())[i] = static_cast<int32_t>(values[i]);
        } else {
          (*store)[i] = values[i];
        }
      }
    };
    fill_index(idx, &indices_data);
    fill_index(off, &offsets_data);
    inputs.indices = make_view_1d(indices_data.data(), index_dtype, N);
    inputs.offsets = make_view_1d(offsets_data.data(), index_dtype, F * B + 1);
    if (weighted) {
      psw_data.assign(static_cast<size_t>(N) * element + 1, 0);
      for (int64_t p = 0; p < N; ++p) store_value(psw_data.data(), dtype, p, random_float(rng));
      psw = make_view_1d(psw_data.data(), dtype, N);
      inputs.per_sample_weights = &psw;
    }
    // Column blocks: packed, or in a shuffled order with gaps.
    if (chance(rng, 0.4)) {
      std::vector<int64_t> order(static_cast<size_t>(F));
      for (int64_t f = 0; f < F; ++f) order[f] = f;
      std::shuffle(order.begin(), order.end(), rng);
      inputs.feature_columns.assign(static_cast<size_t>(F), 0);
      int64_t column = uniform(rng, 0, 2);
      for (int64_t f : order) {
        inputs.feature_columns[f] = column;
        column += inputs.tables[inputs.feature_table[f]].weight.shape[1] + uniform(rng, 0, 2);
      }
    }
    C = batched_output_columns(inputs) + (chance(rng, 0.3) ? 1 : 0);
    row_stride = C + (chance(rng, 0.3) ? 2 : 0);
    output_data.assign(static_cast<size_t>(std::max<int64_t>(B * row_stride, 1)) * element,
                       kSentinel);
    output = make_view_2d(output_data.data(), dtype, B, C, row_stride);
    grad_data.assign(output_data.size(), 0);
    for (int64_t i = 0; i < B * row_stride; ++i) {
      store_value(grad_data.data(), dtype, i, random_float(rng));
    }
    grad_output = make_view_2d(grad_data.data(), dtype, B, C, row_stride);
  }
  Case(const Case&) = delete;
  Case& operator=(const Case&) = delete;

  std::string describe() const {
    std::string s = std::string(dtype_name(dtype)) + " " + dtype_name(index_dtype) +
                    " B=" + std::to_string(B) + " tables:";
    for (const BatchedTable& t : inputs.tables) {
      s += " (" + std::to_string(t.weight.shape[0]) + "x" + std::to_string(t.weight.shape[1]) +
           " " + mode_name(t.mode) +
           (t.padding_idx ? " pad " + std::to_string(*t.padding_idx) : "") + ")";
    }
    s += " features:";
    for (int64_t t : inputs.feature_table) s += " " + std::to_string(t);
    if (inputs.per_sample_weights) s += " weighted";
    if (!inputs.feature_columns.empty()) s += " columns given";
    return s;
  }

  DType dtype{}, index_dtype{};
  int64_t B = 0, C = 0, row_stride = 0;
  std::vector<std::vector<unsigned char>> table_data;
  std::vector<int64_t> indices_data, offsets_data;
  std::vector<unsigned char> psw_data, output_data, grad_data;
  TensorView psw, output, grad_output;
  BatchedInputs inputs;
};

// embag::forward for feature f alone (on difftest's selected device): its bags' slice of indices
// and offsets, in the batched call's index dtype (so the same kernel key), written into a fresh (B,
// D) buffer.
std::vector<unsigned char> single_feature_forward(const Case& c, int64_t f) {
  const BatchedTable& table = c.inputs.tables[c.inputs.feature_table[f]];
  const int64_t D = table.weight.shape[1], B = c.B;
  const size_t isize = dtype_size(c.index_dtype), element = dtype_size(c.dtype);
  auto at = [&](int64_t i) {
    return c.index_dtype == DType::kInt32
               ? reinterpret_cast<const int32_t*>(c.offsets_data.data())[i]
               : c.offsets_data[static_cast<size_t>(i)];
  };
  const int64_t first = at(f * B), last = at(f * B + B);
  std::vector<int64_t> offsets(static_cast<size_t>(B + 1) + 1);
  for (int64_t b = 0; b <= B; ++b) {
    if (c.index_dtype == DType::kInt32) {
      reinterpret_cast<int32_t*>(offsets.data())[b] = static_cast<int32_t>(at(f * B + b) - first);
    } else {
      offsets[b] = at(f * B + b) - first;
    }
  }
  TensorView input = make_view_1d(
      const_cast<unsigned char*>(reinterpret_cast<const unsigned char*>(c.indices_data.data()) +
                                 first * isize),
      c.index_dtype, last - first);
  TensorView offs = make_view_1d(offsets.data(), c.index_dtype, B + 1);
  TensorView psw;
  if (c.inputs.per_sample_weights) {
    psw = make_view_1d(const_cast<unsigned char*>(c.psw_data.data()) + first * element, c.dtype,
                       last - first);
  }
  std::vector<unsigned char> out(static_cast<size_t>(B * D) * element + 1, kSentinel);
  ForwardInputs in{table.weight, input, &offs, c.inputs.per_sample_weights ? &psw : nullptr};
  Options options;
  options.mode = table.mode;
  options.include_last_offset = true;
  options.padding_idx = table.padding_idx;
  // (on the selected ISA's device: the GPU tests compare with the single-table GPU forward)
  const Status s =
      difftest::run_forward(in, ForwardOutputs{make_view_2d(out.data(), c.dtype, B, D)}, options);
  EXPECT_TRUE(s.ok()) << s.message();
  return out;
}

// The output's bytes: each feature's block equal to `expected(f)`, every other byte a sentinel.
void expect_output(const Case& c, const std::vector<unsigned char>& output,
                   const std::function<std::vector<unsigned char>(int64_t)>& expected) {
  const size_t element = dtype_size(c.dtype);
  std::vector<unsigned char> want(output.size(), kSentinel);
  const int64_t F = static_cast<int64_t>(c.inputs.feature_table.size());
  int64_t packed = 0;
  for (int64_t f = 0; f < F; ++f) {
    const int64_t D = c.inputs.tables[c.inputs.feature_table[f]].weight.shape[1];
    const int64_t column = c.inputs.feature_columns.empty() ? packed : c.inputs.feature_columns[f];
    packed += D;
    const std::vector<unsigned char> block = expected(f);
    for (int64_t b = 0; b < c.B; ++b) {
      std::memcpy(want.data() + static_cast<size_t>(b * c.row_stride + column) * element,
                  block.data() + static_cast<size_t>(b * D) * element,
                  static_cast<size_t>(D) * element);
    }
  }
  ASSERT_EQ(output.size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    if (output[i] != want[i]) {
      const int64_t e = static_cast<int64_t>(i / element);
      FAIL() << "first differing byte " << i << " (bag " << e / c.row_stride << ", column "
             << e % c.row_stride << ")";
    }
  }
}

// The reference's batched forward on the same case gives the same bytes as c.output_data.
void expect_reference_output(const Case& c) {
  std::vector<unsigned char> reference(c.output_data.size(), kSentinel);
  TensorView ref_out = make_view_2d(reference.data(), c.dtype, c.B, c.C, c.row_stride);
  ASSERT_TRUE(ref::batched_forward(c.inputs, ref_out).ok());
  ASSERT_EQ(std::memcmp(reference.data(), c.output_data.data(), reference.size()), 0);
}

constexpr int kForwardCases = 150;

TEST(BatchedForward, BitwiseEqualsOneSingleTableCallPerFeatureOnEveryIsa) {
  difftest::RestoreGlobals restore;
  for (std::optional<Isa> isa : difftest::isas_to_test()) {
    if (isa && isa_device(*isa) != DeviceType::kCPU) continue;  // batched calls are CPU only
    SCOPED_TRACE("isa=" + difftest::isa_label(isa));
    if (!difftest::select(isa)) return;
    for (int i = 0; i < kForwardCases; ++i) {
      Case c(0xBA7C'0000 + static_cast<uint64_t>(i), CaseShape{});
      SCOPED_TRACE("case " + std::to_string(i) + ": " + c.describe());
      const Status s = batched_forward(c.inputs, c.output);
      ASSERT_TRUE(s.ok()) << s.message();
      expect_output(c, c.output_data, [&](int64_t f) { return single_feature_forward(c, f); });
      expect_reference_output(c);  // the reference agrees too
      if (::testing::Test::HasFailure()) return;
    }
  }
}

TEST(BatchedForward, SameBitsOnOneAndTwoThreads) {
  difftest::RestoreGlobals restore;
  for (int i = 0; i < 40; ++i) {
    Case c(0xBA7C'1000 + static_cast<uint64_t>(i), CaseShape{});
    SCOPED_TRACE("case " + std::to_string(i) + ": " + c.describe());
    std::vector<std::vector<unsigned char>> results;
    for (int threads : {1, 2}) {
      ASSERT_TRUE(set_num_threads(threads).ok());
      std::fill(c.output_data.begin(), c.output_data.end(), kSentinel);
      ASSERT_TRUE(batched_forward(c.inputs, c.output).ok());
      results.push_back(c.output_data);
    }
    ASSERT_EQ(results[0], results[1]);
  }
}

// A feature-major batch with many features on one big table and one tiny one: still the same
// bits as per-feature calls (the balancer cuts the big feature into several tasks).
TEST(BatchedForward, UnevenFeaturesSplitIntoTasksGiveTheSameBits) {
  difftest::RestoreGlobals restore;
  ASSERT_TRUE(set_num_threads(2).ok());
  CaseShape shape;
  shape.max_bag = 60;
  shape.max_rows = 500;
  for (int i = 0; i < 10; ++i) {
    Case c(0xBA7C'2000 + static_cast<uint64_t>(i), shape);
    SCOPED_TRACE("case " + std::to_string(i) + ": " + c.describe());
    ASSERT_TRUE(batched_forward(c.inputs, c.output).ok());
    expect_output(c, c.output_data, [&](int64_t f) { return single_feature_forward(c, f); });
  }
}

// ---- Backward -------------------------------------------------------------------------------

CaseShape backward_shape() {
  CaseShape shape;
  shape.allow_max = false;
  shape.max_rows = 6;  // duplicate-heavy
  shape.max_bag = 8;
  shape.allow_big_table = false;
  return shape;
}

TEST(BatchedBackward, PerTableGradientsEqualTheReferenceOnGatheredBags) {
  for (int i = 0; i < 60; ++i) {
    Case c(0xBA7C'3000 + static_cast<uint64_t>(i), backward_shape());
    SCOPED_TRACE("case " + std::to_string(i) + ": " + c.describe());
    const int64_t T = static_cast<int64_t>(c.inputs.tables.size());
    std::vector<std::vector<float>> gradients;
    std::vector<std::vector<bool>> touched;
    ref::batched_gradients(c.inputs, c.grad_output, &gradients, &touched);
    const size_t element = dtype_size(c.dtype);
    // Dense.
    {
      std::vector<std::vector<unsigned char>> data(static_cast<size_t>(T));
      std::vector<TensorView> views(static_cast<size_t>(T));
      std::vector<BatchedTableGradient> grads(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) {
        const TensorView& w = c.inputs.tables[t].weight;
        data[t].assign(static_cast<size_t>(w.numel()) * element + 1, kSentinel);
        views[t] = make_view_2d(data[t].data(), c.dtype, w.shape[0], w.shape[1]);
        grads[t].grad_weight = &views[t];
      }
      const Status s = batched_backward(c.inputs, c.grad_output, grads, /*sparse=*/false);
      ASSERT_TRUE(s.ok()) << s.message();
      for (int64_t t = 0; t < T; ++t) {
        std::vector<unsigned char> want(data[t].size(), kSentinel);
        for (size_t e = 0; e < gradients[t].size(); ++e) {
          store_value(want.data(), c.dtype, static_cast<int64_t>(e), gradients[t][e]);
        }
        ASSERT_EQ(data[t], want) << "table " << t;
      }
    }
    // Sparse.
    {
      std::vector<int64_t> rows_per_table;
      ASSERT_TRUE(batched_sparse_gradient_rows(c.inputs, &rows_per_table).ok());
      std::vector<std::vector<int64_t>> rows(static_cast<size_t>(T));
      std::vector<std::vector<unsigned char>> values(static_cast<size_t>(T));
      std::vector<TensorView> row_views(static_cast<size_t>(T)),
          value_views(static_cast<size_t>(T));
      std::vector<BatchedTableGradient> grads(static_cast<size_t>(T));
      for (int64_t t = 0; t < T; ++t) {
        const int64_t U = rows_per_table[t], D = c.inputs.tables[t].weight.shape[1];
        rows[t].assign(static_cast<size_t>(U) + 1, -7);
        values[t].assign(static_cast<size_t>(U * D) * element + 1, kSentinel);
        row_views[t] = make_view_1d(rows[t].data(), DType::kInt64, U);
        value_views[t] = make_view_2d(values[t].data(), c.dtype, U, D);
        grads[t].grad_weight_rows = &row_views[t];
        grads[t].grad_weight_values = &value_views[t];
      }
      const Status s = batched_backward(c.inputs, c.grad_output, grads, /*sparse=*/true);
      ASSERT_TRUE(s.ok()) << s.message();
      for (int64_t t = 0; t < T; ++t) {
        const int64_t D = c.inputs.tables[t].weight.shape[1];
        std::vector<int64_t> want_rows;
        std::vector<unsigned char> want_values(values[t].size(), kSentinel);
        for (size_t r = 0; r < touched[t].size(); ++r) {
          if (!touched[t][r]) continue;
          const int64_t u = static_cast<int64_t>(want_rows.size());
          want_rows.push_back(static_cast<int64_t>(r));
          for (int64_t d = 0; d < D; ++d) {
            store_value(want_values.data(), c.dtype, u * D + d,
                        gradients[t][static_cast<size_t>(static_cast<int64_t>(r) * D + d)]);
          }
        }
        want_rows.push_back(-7);
        ASSERT_EQ(rows[t], want_rows) << "table " << t;
        ASSERT_EQ(values[t], want_values) << "table " << t;
      }
    }
  }
}

struct OptimizerRun {
  Optimizer optimizer;
  WeightDecayMode decay_mode = WeightDecayMode::kNone;
  float weight_decay = 0.0f;
};

constexpr OptimizerRun kOptimizerRuns[] = {
    {Optimizer::kSgd},
    {Optimizer::kAdagrad},
    {Optimizer::kRowwiseAdagrad},
    {Optimizer::kRowwiseAdagrad, WeightDecayMode::kL2, 0.01f},
    {Optimizer::kRowwiseAdagrad, WeightDecayMode::kDecoupled, 0.01f},
    {Optimizer::kAdam},
    {Optimizer::kAdam, WeightDecayMode::kNone, 0.01f},
};

// The tables and state of a case, copied, with views onto the copies.
struct TrainingState {
  TrainingState(const Case& c, const OptimizerConfig& config) {
    inputs = c.inputs;
    tables = c.table_data;
    const size_t T = c.inputs.tables.size();
    momentum1.resize(T);
    momentum2.resize(T);
    state.resize(T);
    for (size_t t = 0; t < T; ++t) {
      TensorView& w = inputs.tables[t].weight;
      w.data = tables[t].data();
      const OptimizerStateShape shape =
          optimizer_state_shape(config.optimizer, w.shape[0], w.shape[1]);
      if (shape.ndim1 > 0) {
        momentum1[t].assign(
            static_cast<size_t>(shape.shape1[0] * std::max<int64_t>(shape.shape1[1], 1)), 0.0f);
        state[t].momentum1 =
            shape.ndim1 == 2 ? make_view_2d(momentum1[t].data(), DType::kFloat32, shape.shape1[0],
                                            shape.shape1[1])
                             : make_view_1d(momentum1[t].data(), DType::kFloat32, shape.shape1[0]);
      }
      if (shape.ndim2 > 0) {
        momentum2[t].assign(static_cast<size_t>(shape.shape2[0] * shape.shape2[1]), 0.0f);
        state[t].momentum2 =
            make_view_2d(momentum2[t].data(), DType::kFloat32, shape.shape2[0], shape.shape2[1]);
      }
    }
  }
  TrainingState(const TrainingState&) = delete;
  TrainingState& operator=(const TrainingState&) = delete;

  BatchedInputs inputs;
  std::vector<std::vector<unsigned char>> tables;
  std::vector<std::vector<float>> momentum1, momentum2;
  std::vector<OptimizerState> state;
};

std::vector<unsigned char> float_bytes(const std::vector<float>& v) {
  std::vector<unsigned char> out(v.size() * sizeof(float));
  if (!v.empty()) std::memcpy(out.data(), v.data(), out.size());
  return out;
}

void expect_same_training_state(const TrainingState& a, const TrainingState& b) {
  for (size_t t = 0; t < a.tables.size(); ++t) {
    ASSERT_EQ(a.tables[t], b.tables[t]) << "table " << t;
    ASSERT_EQ(float_bytes(a.momentum1[t]), float_bytes(b.momentum1[t])) << "momentum1 " << t;
    ASSERT_EQ(float_bytes(a.momentum2[t]), float_bytes(b.momentum2[t])) << "momentum2 " << t;
  }
}

TEST(BatchedFusedBackward, FiveStepsOfEveryOptimizerEqualTheReferenceBitwise) {
  difftest::RestoreGlobals restore;
  for (const OptimizerRun& run : kOptimizerRuns) {
    for (int i = 0; i < 25; ++i) {
      Case c(0xBA7C'4000 + static_cast<uint64_t>(i), backward_shape());
      OptimizerConfig config;
      config.optimizer = run.optimizer;
      config.weight_decay = run.weight_decay;
      config.weight_decay_mode = run.decay_mode;
      config.learning_rate = 0.05f;
      SCOPED_TRACE(std::string(optimizer_name(run.optimizer)) + " decay " +
                   std::to_string(run.weight_decay) + " case " + std::to_string(i) + ": " +
                   c.describe());
      TrainingState mine(c, config), reference(c, config);
      for (int step = 1; step <= 5; ++step) {
        config.step = step;
        ASSERT_TRUE(set_num_threads(1 + step % 2).ok());
        const Status s = batched_fused_backward(mine.inputs, c.grad_output, config, mine.state);
        ASSERT_TRUE(s.ok()) << s.message();
        ASSERT_TRUE(
            ref::batched_fused_backward(reference.inputs, c.grad_output, config, reference.state)
                .ok());
        SCOPED_TRACE("step " + std::to_string(step));
        expect_same_training_state(mine, reference);
        if (::testing::Test::HasFailure()) return;
      }
    }
  }
}

// Rows no position touches keep their bits (weights and state), and touched rows change.
TEST(BatchedFusedBackward, OnlyTouchedRowsChange) {
  Case c(0xBA7C'5000, backward_shape());
  OptimizerConfig config;
  config.optimizer = Optimizer::kRowwiseAdagrad;
  TrainingState mine(c, config);
  ASSERT_TRUE(batched_fused_backward(mine.inputs, c.grad_output, config, mine.state).ok());
  std::vector<std::vector<float>> gradients;
  std::vector<std::vector<bool>> touched;
  ref::batched_gradients(c.inputs, c.grad_output, &gradients, &touched);
  for (size_t t = 0; t < c.table_data.size(); ++t) {
    const TensorView& w = c.inputs.tables[t].weight;
    const size_t row_bytes = static_cast<size_t>(w.shape[1]) * dtype_size(w.dtype);
    for (int64_t r = 0; r < w.shape[0]; ++r) {
      const size_t at = static_cast<size_t>(r * w.strides[0]) * dtype_size(w.dtype);
      const bool same =
          std::memcmp(mine.tables[t].data() + at, c.table_data[t].data() + at, row_bytes) == 0;
      if (!touched[t][r]) {
        EXPECT_TRUE(same) << "table " << t << " row " << r;
        EXPECT_EQ(mine.momentum1[t][r], 0.0f) << "table " << t << " row " << r;
      }
    }
    // The padding between rows (row stride > D) is never written either.
    if (w.strides[0] > w.shape[1] && w.shape[0] > 0) {
      const size_t gap = static_cast<size_t>(w.shape[1]) * dtype_size(w.dtype);
      EXPECT_EQ(mine.tables[t][gap], kSentinel);
    }
  }
}

// ---- Errors ---------------------------------------------------------------------------------

// A valid call: two float32 tables (4x2 sum with padding_idx 3, 3x3 mean), three features
// (tables 0, 1, 0), B = 2, and every buffer rows point views at.
struct ErrorCall {
  ErrorCall() {
    t0.assign(8, 1.0f);
    t1.assign(9, 2.0f);
    inputs.tables.resize(2);
    inputs.tables[0].weight = make_view_2d(t0.data(), DType::kFloat32, 4, 2);
    inputs.tables[0].mode = Mode::kSum;
    inputs.tables[0].padding_idx = 3;
    inputs.tables[1].weight = make_view_2d(t1.data(), DType::kFloat32, 3, 3);
    inputs.tables[1].mode = Mode::kMean;
    inputs.feature_table = {0, 1, 0};
    indices = {0, 1, 2, 0, 2, 3, 1};
    offsets = {0, 1, 3, 4, 5, 7, 7};
    inputs.indices = make_view_1d(indices.data(), DType::kInt64, 7);
    inputs.offsets = make_view_1d(offsets.data(), DType::kInt64, 7);
    psw_data.assign(8, 0.5f);
    output_data.assign(2 * 7 + 8, 9.0f);
    output = make_view_2d(output_data.data(), DType::kFloat32, 2, 7);
    grad_data.assign(2 * 7 + 8, 0.25f);
    grad_output = make_view_2d(grad_data.data(), DType::kFloat32, 2, 7);
    m0.assign(4, 0.0f);
    m1.assign(3, 0.0f);
    state = {{make_view_1d(m0.data(), DType::kFloat32, 4), {}},
             {make_view_1d(m1.data(), DType::kFloat32, 3), {}}};
    config.optimizer = Optimizer::kRowwiseAdagrad;
  }
  ErrorCall(const ErrorCall&) = delete;
  ErrorCall& operator=(const ErrorCall&) = delete;

  std::vector<float> t0, t1, psw_data, output_data, grad_data, m0, m1;
  std::vector<int64_t> indices, offsets;
  TensorView psw, output, grad_output;
  BatchedInputs inputs;
  std::vector<OptimizerState> state;
  OptimizerConfig config;
};

struct ErrorRow {
  const char* name;
  const char* why;
  std::function<void(ErrorCall&)> breaks;
  std::vector<std::string> fragments;
  bool forward = true;  // also refused by the forward (else: a fused-backward-only rule)
  bool unsupported = false;
  bool fused = true;  // also refused by the fused backward (else: a forward-only rule)
};

std::vector<ErrorRow> error_rows() {
  return {
      {"table index out of range",
       "a feature must name a table",
       [](ErrorCall& c) { c.inputs.feature_table[1] = 2; },
       {"feature 1", "table 2", "out of range", "2 tables"}},
      {"index out of range",
       "the row must exist in the feature's own table",
       [](ErrorCall& c) { c.indices[3] = 3; },  // feature 1 reads table 1 (3 rows)
       {"feature 1 (table 1)", "index 3 at position 3", "out of range", "3 rows"}},
      {"negative index",
       "indices are rows",
       [](ErrorCall& c) { c.indices[5] = -1; },
       {"feature 2 (table 0)", "index -1 at position 5"}},
      {"offsets length",
       "F*B + 1 entries",
       [](ErrorCall& c) { c.inputs.offsets.shape[0] = 6; },
       {"offsets has 6 entries", "F*B + 1"}},
      {"first offset",
       "the first bag starts at 0",
       [](ErrorCall& c) { c.offsets[0] = 1; },
       {"offsets[0]", "got 1"}},
      {"decreasing offsets",
       "bags are consecutive ranges",
       [](ErrorCall& c) { c.offsets[3] = 2; },
       {"feature 1 (table 1)", "offsets[3] = 2", "offsets[2] = 3"}},
      {"last offset past N",
       "bags lie inside indices",
       [](ErrorCall& c) { c.offsets[6] = 8; },
       {"offsets[6] = 8", "N = 7"}},
      {"offsets dtype",
       "offsets and indices share one dtype",
       [](ErrorCall& c) { c.inputs.offsets.dtype = DType::kInt32; },
       {"offsets has dtype int32", "indices has int64"}},
      {"table dtypes differ",
       "one dtype for every table, the output and the weights",
       [](ErrorCall& c) { c.inputs.tables[1].weight.dtype = DType::kFloat16; },
       {"table 1 has dtype float16", "share one dtype"}},
      {"float64 table",
       "float32, float16, bfloat16 tables",
       [](ErrorCall& c) {
         c.inputs.tables[0].weight.dtype = DType::kFloat64;
         c.inputs.tables[1].weight.dtype = DType::kFloat64;
       },
       {"table 0 has dtype float64"}},
      {"1-D table",
       "tables are (V, D)",
       [](ErrorCall& c) {
         c.inputs.tables[1].weight = make_view_1d(c.t1.data(), DType::kFloat32, 9);
       },
       {"table 1 must be 2-D"}},
      {"padding_idx out of range",
       "padding_idx in [-V, V-1]",
       [](ErrorCall& c) { c.inputs.tables[1].padding_idx = 3; },
       {"table 1", "padding_idx 3"}},
      {"weights with a mean table",
       "per_sample_weights need sum pooling",
       [](ErrorCall& c) {
         c.psw = make_view_1d(c.psw_data.data(), DType::kFloat32, 7);
         c.inputs.per_sample_weights = &c.psw;
       },
       {"feature 1 (table 1)", "per_sample_weights need mode sum", "mean"}},
      {"weights shape",
       "one weight per index",
       [](ErrorCall& c) {
         c.inputs.tables[1].mode = Mode::kSum;
         c.psw = make_view_1d(c.psw_data.data(), DType::kFloat32, 6);
         c.inputs.per_sample_weights = &c.psw;
       },
       {"per_sample_weights must have the indices' shape (7)"}},
      {"feature_columns length",
       "one first column per feature",
       [](ErrorCall& c) {
         c.inputs.feature_columns = {0, 2};
       },
       {"feature_columns has 2 entries", "3 features"}},
      {"negative column",
       "blocks lie inside the output",
       [](ErrorCall& c) {
         c.inputs.feature_columns = {0, -1, 5};
       },
       {"feature 1 (table 1)", "feature_columns[1] = -1"}},
      {"overlapping blocks",
       "each feature owns its columns",
       [](ErrorCall& c) {
         c.inputs.feature_columns = {0, 1, 5};
       },
       {"feature 1's column block [1, 4) overlaps feature 0's [0, 2)"}},
      {"output too narrow",
       "the blocks must fit",
       [](ErrorCall& c) {
         c.output.shape[1] = 6;
         c.grad_output.shape[1] = 6;
       },
       {"has 6 columns", "end at column 7"}},
      {"output rows",
       "one output row per bag",
       [](ErrorCall& c) {
         c.output.shape[0] = 3;
         c.grad_output.shape[0] = 3;
       },
       {"has 3 rows", "B = 2"}},
      {"output dtype",
       "the tables' dtype",
       [](ErrorCall& c) {
         c.output.dtype = DType::kFloat16;
         c.grad_output.dtype = DType::kFloat16;
       },
       {"has dtype float16", "the tables have float32"}},
      {"output overlaps a table",
       "a written array must not alias a read one",
       [](ErrorCall& c) {
         c.output = make_view_2d(c.t0.data(), DType::kFloat32, 1, 7);
         c.offsets = {0, 1, 1, 1};
         c.inputs.offsets.shape[0] = 4;
       },
       {"output", "table 0"},
       true,
       false,
       false},
      {"tensors on two devices",
       "a batched call runs on one device",
       [](ErrorCall& c) { c.inputs.tables[0].weight.device.type = DeviceType::kCUDA; },
       {"table 1 is on cpu", "table 0 is on cuda:0", "one device"}},
      {"output on another device",
       "a batched call runs on one device",
       [](ErrorCall& c) {
         c.output.device.type = DeviceType::kOpenCL;
         c.grad_output.device.type = DeviceType::kOpenCL;
       },
       {"is on opencl:0", "table 0 is on cpu", "one device"}},
      {"state on another device",
       "a batched call runs on one device",
       [](ErrorCall& c) { c.state[1].momentum1.device.type = DeviceType::kCUDA; },
       {"table 1's momentum1 is on cuda:0", "one device"},
       false},
      {"max table in backward",
       "FBGEMM's TBE has no max pooling",
       [](ErrorCall& c) { c.inputs.tables[1].mode = Mode::kMax; },
       {"feature 1 (table 1)", "no max pooling"},
       false},
      {"state count",
       "one state per table",
       [](ErrorCall& c) { c.state.pop_back(); },
       {"state has 1 entries", "2 tables"},
       false},
      {"state shape",
       "row-wise Adagrad keeps one value per row",
       [](ErrorCall& c) {
         c.state[1].momentum1 = make_view_2d(c.m1.data(), DType::kFloat32, 1, 3);
       },
       {"table 1's momentum1 must have shape [3]", "[1, 3]"},
       false},
      {"state dtype",
       "float32 state",
       [](ErrorCall& c) { c.state[0].momentum1.dtype = DType::kFloat16; },
       {"table 0's momentum1 has dtype float16"},
       false},
      {"state overlaps a table",
       "each row is updated once",
       [](ErrorCall& c) { c.state[0].momentum1 = make_view_1d(c.t0.data(), DType::kFloat32, 4); },
       {"table 0"},
       false},
      {"weight decay with SGD",
       "FBGEMM's SGD has none",
       [](ErrorCall& c) {
         c.config.optimizer = Optimizer::kSgd;
         c.config.weight_decay = 0.1f;
       },
       {"weight_decay", "sgd"},
       false},
      {"decay mode with Adam",
       "weight_decay_mode is row-wise Adagrad's",
       [](ErrorCall& c) {
         c.config.optimizer = Optimizer::kAdam;
         c.config.weight_decay_mode = WeightDecayMode::kL2;
       },
       {"weight_decay_mode is for rowwise_adagrad only"},
       false},
      {"Adam step 0",
       "bias correction divides by 1 - beta^t",
       [](ErrorCall& c) {
         c.config.optimizer = Optimizer::kAdam;
         c.config.step = 0;
       },
       {"step must be >= 1", "got 0"},
       false},
  };
}

TEST(BatchedErrors, EveryRuleRefusesAndWritesNothing) {
  {  // the unbroken call is fine
    ErrorCall c;
    ASSERT_TRUE(validate_batched_forward(c.inputs, c.output).ok());
    ASSERT_TRUE(validate_batched_fused_backward(c.inputs, c.grad_output, c.config, c.state).ok());
  }
  for (const ErrorRow& row : error_rows()) {
    SCOPED_TRACE(std::string(row.name) + ": " + row.why);
    ErrorCall c;
    row.breaks(c);
    const std::vector<float> t0 = c.t0, t1 = c.t1, out = c.output_data, m0 = c.m0, m1 = c.m1;
    if (row.forward) {
      errortest::expect_refused(validate_batched_forward(c.inputs, c.output), row.fragments,
                                row.unsupported);
      errortest::expect_refused(batched_forward(c.inputs, c.output), row.fragments,
                                row.unsupported);
      EXPECT_EQ(c.output_data, out);
    }
    if (row.fused) {
      errortest::expect_refused(
          validate_batched_fused_backward(c.inputs, c.grad_output, c.config, c.state),
          row.fragments, row.unsupported);
      errortest::expect_refused(batched_fused_backward(c.inputs, c.grad_output, c.config, c.state),
                                row.fragments, row.unsupported);
    }
    EXPECT_EQ(c.t0, t0);
    EXPECT_EQ(c.t1, t1);
    EXPECT_EQ(c.m0, m0);
    EXPECT_EQ(c.m1, m1);
  }
}

// Per-table gradients have no GPU path: GPU tensors are refused before anything is read.
TEST(BatchedErrors, PerTableGradientsRefuseGpuTensors) {
  ErrorCall c;
  for (BatchedTable& t : c.inputs.tables) t.weight.device.type = DeviceType::kCUDA;
  c.inputs.indices.device.type = c.inputs.offsets.device.type = DeviceType::kCUDA;
  c.grad_output.device.type = DeviceType::kCUDA;
  std::vector<int64_t> rows;
  for (const Status& s : {batched_sparse_gradient_rows(c.inputs, &rows),
                          validate_batched_backward(c.inputs, c.grad_output, {{}, {}}, true)}) {
    EXPECT_EQ(s.code(), StatusCode::kUnsupported) << s.message();
    EXPECT_NE(s.message().find("runs on the CPU only"), std::string::npos) << s.message();
  }
}

// ---- On a GPU -------------------------------------------------------------------------------
//
// With EMBAG_TEST_ISAS naming GPU ISAs (CTest: gpu_emulated_batched runs opencl on POCL,
// gpu_emulated_oclgrind the Small test under Oclgrind, cuda_emulated_batched_sm* CUDA on the
// fake driver), each test runs on each one's device through gpu_mirror.h; otherwise it skips.

// Runs `body` with each GPU ISA under test selected; false when there is none.
bool for_each_gpu_isa(const std::function<void()>& body) {
  bool any = false;
  for (std::optional<Isa> isa : difftest::isas_to_test()) {
    if (!isa || isa_device(*isa) == DeviceType::kCPU) continue;
    any = true;
    SCOPED_TRACE("isa=" + difftest::isa_label(isa));
    if (!difftest::select(isa)) return true;
    body();
    if (::testing::Test::HasFailure()) return true;
  }
  return any;
}

constexpr const char* kNoGpuIsa =
    "no GPU ISA under test (EMBAG_TEST_ISAS=opencl: ctest -L gpu-emulated runs these)";

void expect_gpu_forward(uint64_t seed, const CaseShape& shape) {
  Case c(seed, shape);
  SCOPED_TRACE("case " + c.describe());
  const Status s = gpu_mirror::batched_forward(difftest::selected_device(), c.inputs, c.output);
  ASSERT_TRUE(s.ok()) << s.message();
  expect_output(c, c.output_data, [&](int64_t f) { return single_feature_forward(c, f); });
  expect_reference_output(c);
}

void expect_gpu_training(uint64_t seed, const OptimizerRun& run, int steps) {
  Case c(seed, backward_shape());
  OptimizerConfig config;
  config.optimizer = run.optimizer;
  config.weight_decay = run.weight_decay;
  config.weight_decay_mode = run.decay_mode;
  config.learning_rate = 0.05f;
  SCOPED_TRACE(std::string(optimizer_name(run.optimizer)) + " decay " +
               std::to_string(run.weight_decay) + ": " + c.describe());
  TrainingState mine(c, config), reference(c, config);
  for (int step = 1; step <= steps; ++step) {
    config.step = step;
    const Status s = gpu_mirror::batched_fused_backward(difftest::selected_device(), mine.inputs,
                                                        c.grad_output, config, mine.state);
    ASSERT_TRUE(s.ok()) << s.message();
    ASSERT_TRUE(
        ref::batched_fused_backward(reference.inputs, c.grad_output, config, reference.state).ok());
    SCOPED_TRACE("step " + std::to_string(step));
    expect_same_training_state(mine, reference);
    if (::testing::Test::HasFailure()) return;
  }
}

TEST(BatchedGpu, ForwardBitwiseEqualsSingleTableGpuCallsAndTheReference) {
  difftest::RestoreGlobals restore;
  if (!for_each_gpu_isa([] {
        for (int i = 0; i < 24 && !::testing::Test::HasFailure(); ++i) {
          expect_gpu_forward(0xBA7C'6000 + static_cast<uint64_t>(i), CaseShape{});
        }
      })) {
    GTEST_SKIP() << kNoGpuIsa;
  }
}

TEST(BatchedGpu, ThreeStepsOfEveryOptimizerEqualTheReferenceBitwise) {
  difftest::RestoreGlobals restore;
  if (!for_each_gpu_isa([] {
        for (const OptimizerRun& run : kOptimizerRuns) {
          for (int i = 0; i < 4 && !::testing::Test::HasFailure(); ++i) {
            expect_gpu_training(0xBA7C'7000 + static_cast<uint64_t>(i), run, 3);
          }
        }
      })) {
    GTEST_SKIP() << kNoGpuIsa;
  }
}

// A refused call writes nothing on the device either, and says what the CPU says.
TEST(BatchedGpu, RefusedCallsWriteNothing) {
  difftest::RestoreGlobals restore;
  if (!for_each_gpu_isa([] {
        ErrorCall c;
        c.indices[3] = 3;  // feature 1 reads table 1 (3 rows)
        const std::vector<float> t0 = c.t0, out = c.output_data, m0 = c.m0;
        const std::vector<std::string> fragments = {"feature 1 (table 1)", "index 3 at position 3"};
        errortest::expect_refused(
            gpu_mirror::batched_forward(difftest::selected_device(), c.inputs, c.output), fragments,
            false);
        errortest::expect_refused(
            gpu_mirror::batched_fused_backward(difftest::selected_device(), c.inputs, c.grad_output,
                                               c.config, c.state),
            fragments, false);
        EXPECT_EQ(c.output_data, out);
        EXPECT_EQ(c.t0, t0);
        EXPECT_EQ(c.m0, m0);
      })) {
    GTEST_SKIP() << kNoGpuIsa;
  }
}

// One small case of each call, for Oclgrind (which simulates every work-item: seconds, not
// minutes): a forward with every pooling, and one step of every optimizer.
TEST(BatchedGpu, Small) {
  difftest::RestoreGlobals restore;
  if (!for_each_gpu_isa([] {
        CaseShape shape;
        shape.max_rows = 6;
        shape.max_bag = 4;
        shape.allow_big_table = false;
        expect_gpu_forward(0xBA7C'8000, shape);
        for (const OptimizerRun& run : kOptimizerRuns) {
          if (::testing::Test::HasFailure()) return;
          expect_gpu_training(0xBA7C'8001, run, 1);
        }
      })) {
    GTEST_SKIP() << kNoGpuIsa;
  }
}

}  // namespace
}  // namespace embag
