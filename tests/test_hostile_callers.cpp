// Callers that fight embag: a thread rewriting the indices, offsets or argmax while calls on
// them run; fork() after the pool has started; thread counts beyond the bound.
//
// A call racing a rewriter must never read or write out of bounds (the runtime validates
// private copies and the kernels read those: runtime/forward_plan.h, IndexSnapshot), and each
// call must either succeed with the result of one consistent view of its arguments or be
// refused with the rule's message. Here the rewriter flips between a good array and a bad one,
// so every successful call must give exactly the good array's result. (The races are on
// purpose: this file is not in make test-tsan's list.)
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include "embag/embag.h"

namespace embag {
namespace {

constexpr int64_t kRows = 1000, kDim = 16, kBags = 400, kPerBag = 10, kN = kBags * kPerBag;
constexpr auto kRaceTime = std::chrono::milliseconds(700);

struct Batch {
  std::vector<float> table = std::vector<float>(kRows * kDim);
  std::vector<int64_t> indices = std::vector<int64_t>(kN);
  std::vector<int64_t> offsets = std::vector<int64_t>(kBags);
  Batch() {
    for (int64_t i = 0; i < kRows * kDim; ++i) table[i] = static_cast<float>((i * 37) % 101) / 8;
    for (int64_t p = 0; p < kN; ++p) indices[p] = (p * 7919) % kRows;
    for (int64_t b = 0; b < kBags; ++b) offsets[b] = b * kPerBag;
  }
};

// Flips `target` between `good` and `bad` (element by element, relaxed atomic stores) until
// `stop`.
void rewrite(std::vector<int64_t>& target, const std::vector<int64_t>& good,
             const std::vector<int64_t>& bad, const std::atomic<bool>& stop) {
  while (!stop.load()) {
    for (const auto* source : {&bad, &good}) {
      for (size_t i = 0; i < target.size(); ++i) {
        __atomic_store_n(&target[i], (*source)[i], __ATOMIC_RELAXED);
      }
    }
  }
}

// Runs `call` repeatedly for kRaceTime while `target` flips between its current contents and
// `bad`; each result must be Ok and `good_result` says whether its output is the good one, or
// the Status must be a refusal whose message holds `refusal`.
template <typename Call, typename GoodResult>
void race(std::vector<int64_t>& target, std::vector<int64_t> bad, const std::string& refusal,
          Call call, GoodResult good_result) {
  const std::vector<int64_t> good = target;
  std::atomic<bool> stop{false};
  std::thread rewriter(rewrite, std::ref(target), std::cref(good), std::cref(bad), std::cref(stop));
  int ok = 0, refused = 0;
  const auto end = std::chrono::steady_clock::now() + kRaceTime;
  while (std::chrono::steady_clock::now() < end) {
    const Status s = call();
    if (s.ok()) {
      ++ok;
      if (!good_result()) {
        ADD_FAILURE() << "a call that succeeded gave a result no consistent input gives";
        break;
      }
    } else {
      ++refused;
      if (s.code() != StatusCode::kInvalidArgument ||
          s.message().find(refusal) == std::string::npos) {
        ADD_FAILURE() << "unexpected refusal: " << s.message();
        break;
      }
    }
  }
  stop = true;
  rewriter.join();
  target = good;
  // (both outcomes are timing; the point is that neither crashed nor was wrong)
  std::printf("  %d calls succeeded, %d were refused\n", ok, refused);
}

struct ForwardCall {
  Batch batch;
  std::vector<float> out = std::vector<float>(kBags * kDim), expected;
  TensorView offsets;
  ForwardInputs in;
  ForwardOutputs outs;
  Options options;
  ForwardCall() {
    in.weight = make_view_2d(batch.table.data(), DType::kFloat32, kRows, kDim);
    in.input = make_view_1d(batch.indices.data(), DType::kInt64, kN);
    offsets = make_view_1d(batch.offsets.data(), DType::kInt64, kBags);
    in.offsets = &offsets;
    outs.output = make_view_2d(out.data(), DType::kFloat32, kBags, kDim);
    options.mode = Mode::kSum;
    EXPECT_TRUE(forward(in, outs, options).ok());
    expected = out;
  }
  Status run() {
    std::fill(out.begin(), out.end(), -1.0f);
    return forward(in, outs, options);
  }
  bool good() const { return out == expected; }
};

TEST(HostileCallers, IndicesRewrittenDuringForward) {
  set_num_threads(2);
  ForwardCall c;
  race(
      c.batch.indices, std::vector<int64_t>(kN, int64_t{1} << 40), "of input takes value",
      [&] { return c.run(); }, [&] { return c.good(); });
}

TEST(HostileCallers, OffsetsRewrittenDuringForward) {
  set_num_threads(2);
  ForwardCall c;
  // Bad offsets in every way at once: past the input, decreasing, negative.
  std::vector<int64_t> bad(kBags);
  for (int64_t b = 0; b < kBags; ++b) bad[b] = b % 2 ? -(int64_t{1} << 40) : int64_t{1} << 40;
  bad[0] = 0;
  race(
      c.batch.offsets, bad, "offsets", [&] { return c.run(); }, [&] { return c.good(); });
}

// Backward, dense and sparse, with the indices and then the offsets rewritten.
TEST(HostileCallers, IndicesAndOffsetsRewrittenDuringBackward) {
  set_num_threads(2);
  for (bool sparse : {false, true}) {
    SCOPED_TRACE(sparse ? "sparse" : "dense");
    Batch batch;
    std::vector<float> grad(kBags * kDim, 0.5f);
    TensorView offsets = make_view_1d(batch.offsets.data(), DType::kInt64, kBags);
    BackwardInputs in;
    in.weight = make_view_2d(batch.table.data(), DType::kFloat32, kRows, kDim);
    in.input = make_view_1d(batch.indices.data(), DType::kInt64, kN);
    in.offsets = &offsets;
    in.grad_output = make_view_2d(grad.data(), DType::kFloat32, kBags, kDim);
    Options options;
    options.mode = Mode::kMean;
    options.sparse = sparse;
    int64_t U = 0;
    ASSERT_TRUE(sparse_gradient_rows(in, options, &U).ok());
    std::vector<float> values(static_cast<size_t>((sparse ? U : kRows) * kDim));
    std::vector<int64_t> rows(static_cast<size_t>(U));
    TensorView values_view = make_view_2d(values.data(), DType::kFloat32, sparse ? U : kRows, kDim);
    TensorView rows_view = make_view_1d(rows.data(), DType::kInt64, U);
    BackwardOutputs outs;
    if (sparse) {
      outs.grad_weight_rows = &rows_view;
      outs.grad_weight_values = &values_view;
    } else {
      outs.grad_weight = &values_view;
    }
    ASSERT_TRUE(backward(in, outs, options).ok());
    const std::vector<float> expected = values;
    auto run = [&] {
      std::fill(values.begin(), values.end(), -1.0f);
      return backward(in, outs, options);
    };
    auto good = [&] { return values == expected; };
    race(batch.indices, std::vector<int64_t>(kN, -(int64_t{1} << 40)), "of input takes value", run,
         good);
    std::vector<int64_t> bad_offsets(kBags, int64_t{1} << 40);
    bad_offsets[0] = 0;
    race(batch.offsets, bad_offsets, "offsets", run, good);
  }
}

// Max backward scatters each gradient to the row its argmax names: a rewritten argmax must not
// send a write out of the table.
TEST(HostileCallers, ArgmaxRewrittenDuringMaxBackward) {
  set_num_threads(2);
  ForwardCall c;
  c.options.mode = Mode::kMax;
  std::vector<int64_t> argmax(kBags * kDim);
  TensorView argmax_view = make_view_2d(argmax.data(), DType::kInt64, kBags, kDim);
  c.outs.argmax = &argmax_view;
  ASSERT_TRUE(forward(c.in, c.outs, c.options).ok());
  std::vector<float> grad(kBags * kDim, 1.0f), grad_weight(kRows * kDim);
  BackwardInputs in;
  in.weight = c.in.weight;
  in.input = c.in.input;
  in.offsets = c.in.offsets;
  in.grad_output = make_view_2d(grad.data(), DType::kFloat32, kBags, kDim);
  in.argmax = &argmax_view;
  TensorView gw = make_view_2d(grad_weight.data(), DType::kFloat32, kRows, kDim);
  BackwardOutputs outs;
  outs.grad_weight = &gw;
  ASSERT_TRUE(backward(in, outs, c.options).ok());
  const std::vector<float> expected = grad_weight;
  race(
      argmax, std::vector<int64_t>(kBags * kDim, int64_t{1} << 40), "argmax",
      [&] { return backward(in, outs, c.options); }, [&] { return grad_weight == expected; });
}

TEST(HostileCallers, ThreadCountBeyondTheBoundIsRefusedAndChangesNothing) {
  ASSERT_TRUE(set_num_threads(2).ok());
  const int limit = max_num_threads();
  EXPECT_GE(limit, 1024);
  for (int n : {0, -3, limit + 1, std::numeric_limits<int>::max()}) {
    SCOPED_TRACE(n);
    const Status s = set_num_threads(n);
    EXPECT_EQ(s.code(), StatusCode::kInvalidArgument);
    EXPECT_NE(s.message().find("but got " + std::to_string(n)), std::string::npos) << s.message();
    EXPECT_NE(s.message().find(std::to_string(limit)), std::string::npos) << s.message();
    EXPECT_EQ(num_threads(), 2);
  }
}

// A child forked after the pool ran a 2-thread loop has none of its workers; its first call
// must start its own rather than wait for the parent's forever. The parent keeps its pool.
TEST(HostileCallers, ForkedChildRunsCallsAndParentKeepsItsPool) {
#if defined(EMBAG_TESTS_UNDER_EMULATOR)
  GTEST_SKIP() << "fork() of a multi-threaded program aborts QEMU's user-mode emulator itself "
                  "(qemu_plugin_vcpu_init_hook assertion); this test runs on native builds";
#endif
  ASSERT_TRUE(set_num_threads(2).ok());
  ForwardCall c;
  ASSERT_TRUE(c.run().ok());
  const pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    alarm(20);  // a hang kills the child (SIGALRM), which the parent reports
    int status = 0;
    for (int i = 0; i < 20 && status == 0; ++i) {
      if (!c.run().ok() || !c.good() || num_threads() != 2) status = 1;
    }
    // and a forked grandchild of the child, whose pool started in the child
    const pid_t grandchild = fork();
    if (grandchild == 0) {
      alarm(20);
      _exit(c.run().ok() && c.good() ? 0 : 1);
    }
    int grandchild_status = 0;
    waitpid(grandchild, &grandchild_status, 0);
    if (!WIFEXITED(grandchild_status) || WEXITSTATUS(grandchild_status) != 0) status = 2;
    _exit(status);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status)) << "the child was killed by signal " << WTERMSIG(status)
                                 << " (SIGALRM=" << SIGALRM << " means it hung)";
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_TRUE(c.run().ok());
  EXPECT_TRUE(c.good());
}

}  // namespace
}  // namespace embag
