// A small persistent thread pool for the kernels' parallel loops.
#include "kernel_thread_pool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

#include "call_context.h"

namespace embag::internal {
namespace {

class KernelThreadPool {
 public:
  void set_threads(int n) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    const int threads = n < 1 ? 1 : n;
    std::lock_guard<std::mutex> lock(mutex_);
    while (static_cast<int>(workers_.size()) < threads - 1) {
      const int id = static_cast<int>(workers_.size());
      workers_.emplace_back([this, id] { worker_loop(id); });
    }
    threads_.store(threads, std::memory_order_relaxed);
  }

  int threads() const { return threads_.load(std::memory_order_relaxed); }

  int run(void* user_context, halide_task_t task, int min, int size, uint8_t* closure) {
    // One parallel loop at a time uses the workers. A second caller (another application
    // thread, or a nested loop) runs its loop on its own thread: same results, no waiting.
    std::unique_lock<std::mutex> job_lock(job_mutex_, std::try_to_lock);
    // (threads_ only changes under job_mutex_, so it is stable while this caller owns the
    // workers.)
    const int threads = threads_.load(std::memory_order_relaxed);
    if (!job_lock.owns_lock() || threads == 1 || size <= 1) {
      return run_serially(user_context, task, min, size, closure);
    }
    const int helpers = std::min(threads - 1, size - 1);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = Job{user_context, task, min, size, closure};
      next_.store(0, std::memory_order_relaxed);
      status_.store(0, std::memory_order_relaxed);
      helpers_wanted_ = helpers;
      helpers_running_.store(helpers, std::memory_order_relaxed);
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_workers_.notify_all();
    take_tasks();
    // The helpers finish within a task of the caller; spin briefly before sleeping.
    if (!spin_until([this] { return helpers_running_.load(std::memory_order_acquire) == 0; })) {
      std::unique_lock<std::mutex> lock(mutex_);
      helpers_done_.wait(lock, [this] { return helpers_running_.load() == 0; });
    }
    return status_.load(std::memory_order_relaxed);
  }

 private:
  struct Job {
    void* user_context = nullptr;
    halide_task_t task = nullptr;
    int min = 0, size = 0;
    uint8_t* closure = nullptr;
  };

  static int run_serially(void* user_context, halide_task_t task, int min, int size,
                          uint8_t* closure) {
    for (int i = 0; i < size; ++i) {
      if (int result = task(user_context, min + i, closure); result != 0) return result;
    }
    return 0;
  }

  // Takes tasks from the shared counter until none are left; records the first failure. The
  // job's call is this thread's active call meanwhile, so Halide callbacks from its tasks (an
  // error, say) reach that call.
  void take_tasks() {
    ActiveCallScope active(static_cast<CallContext*>(job_.user_context));
    for (;;) {
      const int i = next_.fetch_add(1, std::memory_order_relaxed);
      if (i >= job_.size) return;
      if (int result = job_.task(job_.user_context, job_.min + i, job_.closure); result != 0) {
        int expected = 0;
        status_.compare_exchange_strong(expected, result, std::memory_order_relaxed);
      }
    }
  }

  // Spins (with a pause) for up to kSpinTime waiting for `done`; false if it never came.
  // Kernel calls often follow each other closely (a training step runs many), and waking a
  // sleeping thread costs tens of microseconds; spinning longer than that would only burn a
  // core that another program may want.
  template <typename Done>
  static bool spin_until(Done done) {
    constexpr auto kSpinTime = std::chrono::microseconds(50);
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0;; ++i) {
      if (done()) return true;
      if ((i & 63) == 63 && std::chrono::steady_clock::now() - start > kSpinTime) return false;
#if defined(__x86_64__) || defined(__i386__)
      __builtin_ia32_pause();
#elif defined(__aarch64__) || defined(__arm__)
      __asm__ volatile("yield");
#endif
    }
  }

  void worker_loop(int id) {
    uint64_t seen = 0;
    for (;;) {
      auto new_job = [&] { return generation_.load(std::memory_order_acquire) != seen; };
      if (!spin_until(new_job)) {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_workers_.wait(lock, new_job);
      }
      int wanted = 0;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        seen = generation_.load(std::memory_order_relaxed);
        wanted = helpers_wanted_;
      }
      if (id >= wanted) continue;  // this loop needs fewer threads
      take_tasks();
      if (helpers_running_.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        std::lock_guard<std::mutex> lock(mutex_);
        helpers_done_.notify_one();
      }
    }
  }

  std::mutex job_mutex_;  // held by the caller whose loop owns the workers
  std::mutex mutex_;      // guards the fields below and the condition variables
  std::condition_variable wake_workers_, helpers_done_;
  std::vector<std::thread> workers_;
  std::atomic<int> threads_{1};  // written under job_mutex_, read anywhere
  Job job_;
  std::atomic<uint64_t> generation_{0};
  int helpers_wanted_ = 0;
  std::atomic<int> helpers_running_{0};
  std::atomic<int> next_{0};
  std::atomic<int> status_{0};
};

KernelThreadPool& pool() {
  // Never destroyed: workers may still be parked when static destructors run at exit.
  static KernelThreadPool* instance = new KernelThreadPool;
  return *instance;
}

}  // namespace

void set_kernel_threads(int n) { pool().set_threads(n); }

namespace {
struct ParallelForClosure {
  void (*body)(void*, int);
  void* context;
};
int run_parallel_for_task(void* /*user_context*/, int task, uint8_t* closure) {
  const auto* c = reinterpret_cast<const ParallelForClosure*>(closure);
  c->body(c->context, task);
  return 0;
}
}  // namespace

void parallel_for(int tasks, void (*body)(void* context, int task), void* context) {
  ParallelForClosure closure{body, context};
  pool().run(nullptr, &run_parallel_for_task, 0, tasks, reinterpret_cast<uint8_t*>(&closure));
}

int32_t bags_per_task(int64_t num_bags, int tasks_per_thread) {
  // (tools/tune/runner.cpp computes the same when it times tasks-per-thread values)
  const int64_t per_thread = tasks_per_thread > 0 ? tasks_per_thread : 4;
  const int64_t tasks = per_thread * static_cast<int64_t>(pool().threads());
  const int64_t per_task = (num_bags + tasks - 1) / tasks;
  return static_cast<int32_t>(std::clamp<int64_t>(per_task, 16, 1 << 20));
}
int kernel_threads() { return pool().threads(); }

int kernel_do_par_for(void* user_context, halide_task_t task, int min, int size, uint8_t* closure) {
  return pool().run(user_context, task, min, size, closure);
}

}  // namespace embag::internal
