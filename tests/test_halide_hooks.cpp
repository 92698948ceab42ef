// embag beside a host program's own Halide pipelines: embag installs its Halide hooks (error
// handler, parallel loop) once and routes by user_context, so callbacks that are not from an
// embag call reach whatever the host installed before; embag's own calls keep their per-call
// error text and their thread pool. (A host that installs its hooks after embag's first call
// replaces embag's; see docs/gpu.md and call_context.h.)
#include <HalideRuntime.h>
#include <gtest/gtest.h>

#include <atomic>
#include <string>
#include <vector>

#include "embag/embag.h"

namespace {

std::string g_host_error;
std::atomic<int> g_host_parallel_loops{0};

void host_error_handler(void* /*user_context*/, const char* message) { g_host_error = message; }

int host_do_par_for(void* user_context, halide_task_t task, int min, int size, uint8_t* closure) {
  ++g_host_parallel_loops;
  for (int i = min; i < min + size; ++i) {
    if (int r = task(user_context, i, closure)) return r;
  }
  return 0;
}

int count_task(void* /*user_context*/, int /*index*/, uint8_t* closure) {
  ++*reinterpret_cast<std::atomic<int>*>(closure);
  return 0;
}

// One embag call that runs a kernel (sum over 64 bags, so its parallel loop has tasks).
embag::Status embag_call(std::vector<float>& out) {
  static std::vector<float> table(16 * 8, 1.0f);
  static std::vector<int64_t> idx(256, 3), off(64);
  for (int i = 0; i < 64; ++i) off[i] = 4 * i;
  embag::ForwardInputs in;
  in.weight = embag::make_view_2d(table.data(), embag::DType::kFloat32, 16, 8);
  in.input = embag::make_view_1d(idx.data(), embag::DType::kInt64, 256);
  embag::TensorView offsets = embag::make_view_1d(off.data(), embag::DType::kInt64, 64);
  in.offsets = &offsets;
  embag::ForwardOutputs outs;
  out.assign(64 * 8, 0.0f);
  outs.output = embag::make_view_2d(out.data(), embag::DType::kFloat32, 64, 8);
  embag::Options opt;
  opt.mode = embag::Mode::kSum;
  return embag::forward(in, outs, opt);
}

TEST(HalideHooks, HostPipelinesKeepTheHooksTheyInstalledBeforeEmbag) {
  // The host program's hooks, installed before embag's first call (the test program's first).
  halide_set_error_handler(&host_error_handler);
  halide_set_custom_do_par_for(&host_do_par_for);

  embag::set_num_threads(2);
  std::vector<float> out;
  ASSERT_TRUE(embag_call(out).ok());
  EXPECT_EQ(out[0], 4.0f);
  EXPECT_EQ(g_host_parallel_loops.load(), 0) << "embag's kernel ran on the host's thread pool";

  // A host pipeline's callbacks (no embag user_context) still reach the host's hooks.
  halide_error(nullptr, "a host pipeline failed");
  EXPECT_EQ(g_host_error, "a host pipeline failed");
  std::atomic<int> ran{0};
  ASSERT_EQ(halide_do_par_for(nullptr, &count_task, 0, 5, reinterpret_cast<uint8_t*>(&ran)), 0);
  EXPECT_EQ(ran.load(), 5);
  EXPECT_EQ(g_host_parallel_loops.load(), 1);

  // And embag's own calls keep working on its pool, untouched by the host's.
  ASSERT_TRUE(embag_call(out).ok());
  EXPECT_EQ(g_host_parallel_loops.load(), 1);
}

}  // namespace
