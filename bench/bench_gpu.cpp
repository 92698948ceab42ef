// bench_gpu: embag's CUDA kernels on cuda:0, in GB/s and as a fraction of the device's memory
// bandwidth (measured here with a device-to-device copy), forward (sum, mean, max) and backward
// (dense, sparse) on cold tables: 1M rows x D float32, 2048 bags x 40 uniform int64 indices,
// 16 rotating index batches so no batch's rows stay in the 50 MB L2. Prints a Markdown table.
// Without a usable GPU it says why and exits 0 (nothing to measure). scripts/gpu-check.sh runs it.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "embag/embag.h"

namespace {

constexpr int kBatches = 16;
constexpr int kRepeats = 30;

struct Shape {
  int64_t rows, dim, bags, pooling;
};

template <typename T>
T* device_alloc(size_t count) {
  void* p = nullptr;
  cudaMalloc(&p, count * sizeof(T));
  return static_cast<T*>(p);
}

template <typename T>
T* device_copy(const std::vector<T>& host) {
  T* p = device_alloc<T>(host.size());
  cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice);
  return p;
}

// Median milliseconds of `run` on `stream`, timed with events.
template <typename Run>
float median_ms(cudaStream_t stream, Run run) {
  std::vector<float> times;
  cudaEvent_t start, stop;
  cudaEventCreate(&start);
  cudaEventCreate(&stop);
  for (int i = 0; i < kRepeats; ++i) {
    cudaEventRecord(start, stream);
    run(i);
    cudaEventRecord(stop, stream);
    cudaEventSynchronize(stop);
    float ms = 0;
    cudaEventElapsedTime(&ms, start, stop);
    times.push_back(ms);
  }
  std::sort(times.begin(), times.end());
  return times[times.size() / 2];
}

}  // namespace

int main() {
  using namespace embag;
  const std::string status = cuda_status();
  if (status.rfind("unavailable", 0) == 0) {
    std::printf("bench_gpu: nothing to measure: CUDA %s\n", status.c_str());
    return 0;
  }
  std::printf("device: %s\n", status.c_str());
  cudaStream_t stream;
  cudaStreamCreate(&stream);

  // The machine's bandwidth: a 1 GiB device-to-device copy (reads + writes).
  const size_t copy_bytes = size_t{1} << 30;
  void *a = nullptr, *b = nullptr;
  cudaMalloc(&a, copy_bytes);
  cudaMalloc(&b, copy_bytes);
  const float copy_ms = median_ms(
      stream, [&](int) { cudaMemcpyAsync(b, a, copy_bytes, cudaMemcpyDeviceToDevice, stream); });
  const double peak = 2.0 * copy_bytes / (copy_ms * 1e6);
  cudaFree(a);
  cudaFree(b);
  std::printf("device-to-device copy: %.0f GB/s (the bandwidth below is compared with)\n\n", peak);
  std::printf(
      "| pass | mode | D | embag GB/s | of copy bandwidth | ms |\n|---|---|---|---|---|---|\n");

  for (const Shape s : {Shape{1000000, 64, 2048, 40}, Shape{1000000, 128, 2048, 40}}) {
    std::mt19937_64 rng(42);
    std::vector<float> table(static_cast<size_t>(s.rows * s.dim));
    for (float& x : table) x = std::uniform_real_distribution<float>(-1, 1)(rng);
    const int64_t n = s.bags * s.pooling;
    std::vector<int64_t> indices(static_cast<size_t>(n * kBatches)), offsets(s.bags);
    for (int64_t& i : indices) i = std::uniform_int_distribution<int64_t>(0, s.rows - 1)(rng);
    for (int64_t i = 0; i < s.bags; ++i) offsets[i] = i * s.pooling;
    float* d_table = device_copy(table);
    int64_t* d_indices = device_copy(indices);
    int64_t* d_offsets = device_copy(offsets);
    float* d_out = device_alloc<float>(s.bags * s.dim);
    float* d_grad = device_alloc<float>(s.bags * s.dim);
    int64_t* d_argmax = device_alloc<int64_t>(s.bags * s.dim);
    float* d_gw = device_alloc<float>(s.rows * s.dim);
    float* d_values = device_alloc<float>(n * s.dim);
    int64_t* d_rows = device_alloc<int64_t>(n);
    const Device gpu{DeviceType::kCUDA, 0};
    Execution exec;
    exec.stream = stream;
    auto inputs = [&](int batch, TensorView* off) {
      ForwardInputs in;
      in.weight = make_view_2d(d_table, DType::kFloat32, s.rows, s.dim, -1, gpu);
      in.input = make_view_1d(d_indices + batch % kBatches * n, DType::kInt64, n, gpu);
      *off = make_view_1d(d_offsets, DType::kInt64, s.bags, gpu);
      in.offsets = off;
      return in;
    };
    // Useful bytes: the rows read, the indices and offsets, the outputs written.
    const double forward_bytes = static_cast<double>(n) * s.dim * 4 + n * 8 + s.bags * 8 +
                                 static_cast<double>(s.bags) * s.dim * 4;
    for (Mode mode : {Mode::kSum, Mode::kMean, Mode::kMax}) {
      Options opt;
      opt.mode = mode;
      TensorView argmax = make_view_2d(d_argmax, DType::kInt64, s.bags, s.dim, -1, gpu);
      Status st;
      const float ms = median_ms(stream, [&](int i) {
        TensorView off;
        ForwardOutputs out;
        out.output = make_view_2d(d_out, DType::kFloat32, s.bags, s.dim, -1, gpu);
        if (mode == Mode::kMax) out.argmax = &argmax;
        st = forward(inputs(i, &off), out, opt, exec);
      });
      if (!st.ok()) std::printf("forward failed: %s\n", st.message().c_str());
      const double gbs = forward_bytes / (ms * 1e6);
      std::printf("| forward | %s | %lld | %.1f | %.2f | %.3f |\n", mode_name(mode),
                  static_cast<long long>(s.dim), gbs, gbs / peak, ms);
    }
    for (bool sparse : {false, true}) {
      Options opt;
      opt.mode = Mode::kSum;
      opt.sparse = sparse;
      Status st;
      const float ms = median_ms(stream, [&](int i) {
        TensorView off;
        const ForwardInputs f = inputs(i, &off);
        BackwardInputs in{f.weight,
                          f.input,
                          f.offsets,
                          nullptr,
                          make_view_2d(d_grad, DType::kFloat32, s.bags, s.dim, -1, gpu),
                          nullptr};
        int64_t u = 0;
        BackwardOutputs out;
        TensorView gw = make_view_2d(d_gw, DType::kFloat32, s.rows, s.dim, -1, gpu);
        TensorView rows, values;
        if (sparse) {
          st = sparse_gradient_rows(in, opt, &u, exec);
          rows = make_view_1d(d_rows, DType::kInt64, u, gpu);
          values = make_view_2d(d_values, DType::kFloat32, u, s.dim, -1, gpu);
          out.grad_weight_rows = &rows;
          out.grad_weight_values = &values;
        } else {
          out.grad_weight = &gw;
        }
        st = backward(in, out, opt, exec);
      });
      if (!st.ok()) std::printf("backward failed: %s\n", st.message().c_str());
      // Useful bytes: the gradient rows read once per position, indices, and what is written
      // (the whole dense table, or the U rows).
      const double bytes =
          static_cast<double>(n) * s.dim * 4 + n * 8 +
          (sparse ? static_cast<double>(n) * s.dim * 4 : static_cast<double>(s.rows) * s.dim * 4);
      const double gbs = bytes / (ms * 1e6);
      std::printf("| backward %s | sum | %lld | %.1f | %.2f | %.3f |\n",
                  sparse ? "sparse" : "dense", static_cast<long long>(s.dim), gbs, gbs / peak, ms);
    }
    for (void* p :
         {static_cast<void*>(d_table), static_cast<void*>(d_indices), static_cast<void*>(d_offsets),
          static_cast<void*>(d_out), static_cast<void*>(d_grad), static_cast<void*>(d_argmax),
          static_cast<void*>(d_gw), static_cast<void*>(d_values), static_cast<void*>(d_rows)}) {
      cudaFree(p);
    }
  }
  return 0;
}
