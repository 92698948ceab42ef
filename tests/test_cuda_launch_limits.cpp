// CUDA's launch limits at sizes past every limit the GPU schedules once had: every kernel of a
// CUDA call must launch with gridDim.x <= 2^31 - 1, gridDim.y and z <= 65,535 and at most 1,024
// threads a block, for any B, N, V and U the API accepts. Run on the fake CUDA driver in
// record-only mode (tests/fakecuda/): kernels are checked, not run, and device memory is
// MAP_NORESERVE mappings that are never touched, so the sizes cost nothing.
//
// Forward goes through the public API (B = 700,000 bags: before the fix its kernel launched
// gridDim.y = 87,500). The kernels whose sizes depend on device data (U, the distinct rows, is
// counted on the device) are called directly through the runtime's kernel registry, each with
// the sizes named in its test: in record-only mode no kernel computes the data those sizes come
// from. Each test checks the largest grid, as a function of the sizes, not just the absence of
// an error: a kernel that covered only part of its rows would pass the limits and fail here.
#include <gtest/gtest.h>

#include <algorithm>

#include "fake_cuda_test_support.h"
#include "gpu/gpu_plan.h"
#include "gpu/gpu_session.h"
#include "kernel_call.h"
#include "renorm.h"

namespace embag {
namespace {

using internal::CallContext;
using internal::KernelArgs;
using internal::KernelEntry;
using internal::KernelKey;
using internal::Pipeline;
using internal::Pooling;
using internal::gpu::DeviceArray;
using internal::gpu::Session;

constexpr int64_t kD = 40;  // two blocks of 32 columns: the column blocks' dimension is not 1
const halide_type_t kF32(halide_type_float, 32), kI64(halide_type_int, 64),
    kI32(halide_type_int, 32), kU8(halide_type_uint, 8);

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

class CudaLaunchLimits : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override {
    bool compiled = false;
    for (Isa isa : compiled_isas()) compiled = compiled || isa == GetParam();
    if (!compiled) GTEST_SKIP() << isa_name(GetParam()) << " is not compiled into this build";
    fakecuda::set_record_only(true);
    fakecuda::clear();
  }
  void TearDown() override { fakecuda::set_record_only(false); }

  // The largest grid among the launches of the last call: the one with the most blocks.
  static fakecuda::LaunchRecord largest_launch() {
    const std::vector<fakecuda::LaunchRecord> launches = fakecuda::last_call().launches;
    EXPECT_FALSE(launches.empty());
    fakecuda::LaunchRecord best{};
    uint64_t most = 0;
    for (const auto& l : launches) {
      const uint64_t blocks = uint64_t{l.grid[0]} * l.grid[1] * l.grid[2];
      if (blocks > most) {
        most = blocks;
        best = l;
      }
    }
    return best;
  }

  // Dense backward's table: the zero fill of V rows and the scatter of the U listed rows.
  void run_scatter(fakecuda_test::OwnContext& own, int64_t U, int64_t V) {
    run({Pipeline::kScatterRows, std::nullopt, DType::kFloat32, std::nullopt}, own,
        [&](CallContext& call, const KernelEntry& kernel) {
          DeviceArray rows(call), values(call), table(call);
          for (Status s : {rows.allocate(kI64, U), values.allocate(kF32, U, kD),
                           table.allocate(kF32, V, kD)}) {
            if (!s.ok()) return s;
          }
          KernelArgs args;
          args.buffer("rows", rows.get())
              .buffer("values", values.get())
              .buffer("table", table.get());
          return internal::run_kernel(call, kernel, args);
        });
  }

  static std::string describe(const fakecuda::LaunchRecord& l) {
    return l.entry + " grid (" + std::to_string(l.grid[0]) + ", " + std::to_string(l.grid[1]) +
           ", " + std::to_string(l.grid[2]) + ")";
  }

  // Runs `kernel` with `args` in a call of the test's own stream, inside the fake's call checks.
  void run(const KernelKey& key, fakecuda_test::OwnContext& own,
           const std::function<Status(CallContext&, const KernelEntry&)>& body) {
    const KernelEntry* kernel = nullptr;
    ASSERT_TRUE(internal::gpu::need_kernel(key, GetParam(), &kernel).ok());
    Status status;
    const std::string broken = fakecuda_test::checked(
        own.stream(),
        [&] {
          CallContext call;
          Session session(call);
          Execution execution;
          execution.stream = own.stream();
          if (Status s = session.open(Device{DeviceType::kCUDA, 0}, execution); !s.ok()) return s;
          return body(call, *kernel);
        },
        &status);
    EXPECT_TRUE(status.ok()) << kernel->name << ": " << status.message();
    EXPECT_EQ(broken, "") << kernel->name;
  }
};

// Forward, the public API: B = 700,000 bags of one index each (the bags' blocks used to be
// blockIdx.y: 87,500 > 65,535).
TEST_P(CudaLaunchLimits, Forward700000Bags) {
  // The public API picks the ISA from the device's compute capability.
  fakecuda::set_compute_capability(GetParam() == Isa::kCudaSm86 ? 86 : 80);
  constexpr int64_t B = 700000, V = 16;
  fakecuda_test::OwnContext own;
  fakecuda_test::DeviceBuffer weight(own, V * kD * 4), input(own, B * 8), offsets(own, B * 8),
      output(own, B * kD * 4), argmax(own, B * kD * 8);
  const Device gpu{DeviceType::kCUDA, 0};
  for (Mode mode : {Mode::kSum, Mode::kMax}) {
    ForwardInputs in;
    in.weight = make_view_2d(weight.data(), DType::kFloat32, V, kD, -1, gpu);
    in.input = make_view_1d(input.data(), DType::kInt64, B, gpu);
    TensorView offs = make_view_1d(offsets.data(), DType::kInt64, B, gpu);
    in.offsets = &offs;
    ForwardOutputs out;
    out.output = make_view_2d(output.data(), DType::kFloat32, B, kD, -1, gpu);
    TensorView arg = make_view_2d(argmax.data(), DType::kInt64, B, kD, -1, gpu);
    if (mode == Mode::kMax) out.argmax = &arg;
    Options opt;
    opt.mode = mode;
    Execution exec;
    exec.stream = own.stream();
    // No check kernel: its verdict would be read back, and in record-only mode nothing runs.
    exec.index_check = IndexCheck::kNone;
    Status status;
    const std::string broken = fakecuda_test::checked(
        own.stream(), [&] { return forward(in, out, opt, exec); }, &status);
    EXPECT_TRUE(status.ok()) << status.message();
    EXPECT_EQ(broken, "");
    const fakecuda::LaunchRecord l = largest_launch();
    EXPECT_EQ(l.grid[0], ceil_div(B, 8)) << describe(l);
    EXPECT_EQ(l.grid[1], ceil_div(kD, 32)) << describe(l);
    EXPECT_NE(last_variant().find(isa_name(GetParam())), std::string::npos) << last_variant();
  }
  fakecuda::set_compute_capability(86);
}

// The forward kernel itself on each CUDA ISA (mean: the kernel the public test above does not
// run), past the old 524,280-bag limit.
TEST_P(CudaLaunchLimits, ForwardKernel600000Bags) {
  constexpr int64_t B = 600000, V = 16, N = B;
  fakecuda_test::OwnContext own;
  run({Pipeline::kForward, Pooling::kMean, DType::kFloat32, DType::kInt64}, own,
      [&](CallContext& call, const KernelEntry& kernel) {
        DeviceArray weight(call), indices(call), layout(call), output(call);
        for (Status s : {weight.allocate(kF32, V, kD), indices.allocate(kI64, N),
                         layout.allocate(kI64, B + 1), output.allocate(kF32, B, kD)}) {
          if (!s.ok()) return s;
        }
        const int32_t padding = -1, bags_per_task = 1;
        KernelArgs args;
        args.buffer("weight", weight.get())
            .buffer("indices", indices.get())
            .buffer("offsets", layout.get())
            .scalar("padding_idx", &padding)
            .scalar("bags_per_task", &bags_per_task)
            .buffer("output", output.get());
        return internal::run_kernel(call, kernel, args);
      });
  const fakecuda::LaunchRecord l = largest_launch();
  EXPECT_EQ(l.grid[0], ceil_div(B, 8)) << describe(l);
  EXPECT_EQ(l.grid[1], ceil_div(kD, 32)) << describe(l);
}

// Dense backward's table: the zero fill of V rows and the scatter of the U listed rows, one
// kernel each.
// The row scatter with U = 100,000 distinct rows (a block row per listed row used to be
// blockIdx.y: more than 65,535 failed).
TEST_P(CudaLaunchLimits, DenseScatter100000DistinctRows) {
  constexpr int64_t U = 100000, V = U;
  fakecuda_test::OwnContext own;
  run_scatter(own, U, V);
  const fakecuda::LaunchRecord l = largest_launch();
  EXPECT_EQ(l.grid[0], U) << describe(l);  // one listed row a block
  EXPECT_EQ(l.grid[1], ceil_div(kD, 32)) << describe(l);
}

// The zero fill of a V = 600,000-row table (its 8-row blocks were blockIdx.y: more than 524,280
// rows failed), with few rows to scatter.
TEST_P(CudaLaunchLimits, DenseZeroFill600000Rows) {
  constexpr int64_t U = 1000, V = 600000;
  fakecuda_test::OwnContext own;
  run_scatter(own, U, V);
  const fakecuda::LaunchRecord l = largest_launch();
  EXPECT_EQ(l.grid[0], ceil_div(V, 8)) << describe(l);
  EXPECT_EQ(l.grid[1], ceil_div(kD, 32)) << describe(l);
}

// Backward's per-row folds over U = 600,000 distinct rows (past the old 524,280).
TEST_P(CudaLaunchLimits, BackwardRows600000) {
  constexpr int64_t U = 600000, B = 1000, N = U;
  fakecuda_test::OwnContext own;
  run({Pipeline::kBackwardRows, Pooling::kSum, DType::kFloat32, std::nullopt}, own,
      [&](CallContext& call, const KernelEntry& kernel) {
        DeviceArray grad(call), segments(call), sorted(call), position_bag(call), values(call);
        for (Status s :
             {grad.allocate(kF32, B, kD), segments.allocate(kI32, U + 1), sorted.allocate(kI32, N),
              position_bag.allocate(kI32, N), values.allocate(kF32, U, kD)}) {
          if (!s.ok()) return s;
        }
        const bool scale = false;
        KernelArgs args;
        args.buffer("grad_output", grad.get())
            .buffer("segments", segments.get())
            .buffer("sorted_positions", sorted.get())
            .buffer("position_bag", position_bag.get())
            .scalar("scale_grad_by_freq", &scale)
            .buffer("values", values.get());
        return internal::run_kernel(call, kernel, args);
      });
  const fakecuda::LaunchRecord l = largest_launch();
  EXPECT_EQ(l.grid[0], ceil_div(U, 8)) << describe(l);
  EXPECT_EQ(l.grid[1], ceil_div(kD, 32)) << describe(l);
}

// max_norm: renormalising V = 600,000 rows, then writing them back (masked scatter, one row a
// block).
TEST_P(CudaLaunchLimits, Renorm600000Rows) {
  constexpr int64_t V = 600000, K = V;
  fakecuda_test::OwnContext own;
  run({Pipeline::kRenorm, std::nullopt, DType::kFloat32, std::nullopt}, own,
      [&](CallContext& call, const KernelEntry& kernel) {
        DeviceArray weight(call), rows(call), renormed(call), changed(call);
        for (Status s : {weight.allocate(kF32, V, kD), rows.allocate(kI64, K),
                         renormed.allocate(kF32, K, kD), changed.allocate(kU8, K)}) {
          if (!s.ok()) return s;
        }
        const double max_norm = 1.0, norm_type = 2.0, kEpsilon = kernels::kMaxNormEpsilon;
        const int32_t norm_kind = static_cast<int32_t>(internal::norm_kind_for(norm_type));
        KernelArgs args;
        args.buffer("weight", weight.get())
            .buffer("rows", rows.get())
            .scalar("max_norm", &max_norm)
            .scalar("norm_type", &norm_type)
            .scalar("norm_kind", &norm_kind)
            .scalar("norm_epsilon", &kEpsilon)
            .buffer("renormed", renormed.get())
            .buffer("changed", changed.get());
        return internal::run_kernel(call, kernel, args);
      });
  fakecuda::LaunchRecord l = largest_launch();
  EXPECT_EQ(l.grid[0], ceil_div(K, 8)) << describe(l);
  EXPECT_EQ(l.grid[1], ceil_div(kD, 32)) << describe(l);

  run({Pipeline::kWriteBackRows, std::nullopt, DType::kFloat32, std::nullopt}, own,
      [&](CallContext& call, const KernelEntry& kernel) {
        DeviceArray rows(call), values(call), mask(call), table(call);
        for (Status s : {rows.allocate(kI64, K), values.allocate(kF32, K, kD),
                         mask.allocate(kU8, K), table.allocate(kF32, V, kD)}) {
          if (!s.ok()) return s;
        }
        KernelArgs args;
        args.buffer("rows", rows.get())
            .buffer("values", values.get())
            .buffer("mask", mask.get())
            .buffer("table", table.get());
        return internal::run_kernel(call, kernel, args);
      });
  l = largest_launch();
  EXPECT_EQ(l.grid[0], K) << describe(l);
  EXPECT_EQ(l.grid[1], ceil_div(kD, 32)) << describe(l);
}

// The table-batched fused update (row-wise Adagrad: every kind of stage it has) over 600,000
// touched rows of one table: the fold, the per-row sums and state, and the in-place writes of the
// rows (one row a block, the largest grid).
TEST_P(CudaLaunchLimits, FusedUpdate600000Rows) {
  constexpr int64_t U = 600000, V = U, B = 1000, M = U;
  fakecuda_test::OwnContext own;
  run({Pipeline::kFusedRowwiseAdagrad, std::nullopt, DType::kFloat32, std::nullopt}, own,
      [&](CallContext& call, const KernelEntry& kernel) {
        DeviceArray segments(call), positions(call), bags(call), rows(call), columns(call),
            divisor(call), grad(call), psw(call), weight_in(call), weight(call), m_in(call),
            m(call), gradient(call), row_sum(call), new_m(call);
        for (Status s :
             {segments.allocate(kI32, U + 1), positions.allocate(kI32, M), bags.allocate(kI32, M),
              rows.allocate(kI32, U), columns.allocate(kI32, 1), divisor.allocate(kI32, 1),
              grad.allocate(kF32, B, kD), psw.allocate(kF32, 1), weight_in.allocate(kF32, V, kD),
              weight.allocate(kF32, V, kD), m_in.allocate(kF32, V), m.allocate(kF32, V),
              gradient.allocate(kF32, U, kD), row_sum.allocate(kF32, U), new_m.allocate(kF32, U)}) {
          if (!s.ok()) return s;
        }
        const int32_t first_row = 0, num_rows = U, num_bags = B, pooling = 0;
        const float lr = 0.01f, eps = 1e-8f, beta = 0.9f, decay = 0.0f, correction = 1.0f;
        const bool no = false;
        KernelArgs args;
        args.buffer("segments", segments.get())
            .buffer("sorted_positions", positions.get())
            .buffer("sorted_bags", bags.get())
            .buffer("rows", rows.get())
            .buffer("feature_columns", columns.get())
            .buffer("bag_divisor", divisor.get())
            .scalar("first_row", &first_row)
            .scalar("num_rows", &num_rows)
            .scalar("num_bags", &num_bags)
            .scalar("pooling", &pooling)
            .scalar("learning_rate", &lr)
            .scalar("eps", &eps)
            .scalar("beta1", &beta)
            .scalar("beta2", &beta)
            .scalar("weight_decay", &decay)
            .scalar("l2_decay", &no)
            .scalar("decoupled_decay", &no)
            .scalar("decoupled_correction", &correction)
            .scalar("bias_correction1", &correction)
            .scalar("bias_correction2", &correction)
            .buffer("grad_output", grad.get())
            .buffer("per_sample_weights", psw.get())
            .buffer("weight_in", weight_in.get())
            .buffer("weight", weight.get())
            .buffer("gradient", gradient.get())
            .buffer("momentum1_in", m_in.get())
            .buffer("momentum1", m.get())
            .buffer("new_momentum1", new_m.get())
            .buffer("row_sum", row_sum.get());
        return internal::run_kernel(call, kernel, args);
      });
  const fakecuda::LaunchRecord l = largest_launch();
  EXPECT_EQ(l.grid[0], U) << describe(l);
  EXPECT_EQ(l.grid[1], ceil_div(kD, 32)) << describe(l);
}

// The one-dimensional kernels (here the bag of each position; the check, layout, sort keys, bag
// counts and per_sample_weights gradient share its 128- to 256-thread blocks on blockIdx.x) at
// the largest N a CUDA call accepts (gpu_plan.h: past it Halide's 32-bit block count wraps, as
// this test saw at 2^31 - 1: 4,286,578,688 blocks).
TEST_P(CudaLaunchLimits, PositionKernelsAtTheCudaLimit) {
  constexpr int64_t N = internal::gpu::kMaxCudaExtent;
  fakecuda_test::OwnContext own;
  run({Pipeline::kPositionBag, std::nullopt, std::nullopt, DType::kInt64}, own,
      [&](CallContext& call, const KernelEntry& kernel) {
        DeviceArray layout(call), position_bag(call);
        for (Status s : {layout.allocate(kI64, 2), position_bag.allocate(kI32, N)}) {
          if (!s.ok()) return s;
        }
        KernelArgs args;
        args.buffer("layout", layout.get()).buffer("position_bag", position_bag.get());
        return internal::run_kernel(call, kernel, args);
      });
  const fakecuda::LaunchRecord l = largest_launch();
  EXPECT_EQ(l.grid[0], ceil_div(N, 256)) << describe(l);
}

INSTANTIATE_TEST_SUITE_P(CudaIsas, CudaLaunchLimits,
                         ::testing::Values(Isa::kCudaSm86, Isa::kCudaSm80),
                         [](const ::testing::TestParamInfo<Isa>& p) {
                           return std::string(isa_name(p.param));
                         });

}  // namespace
}  // namespace embag
