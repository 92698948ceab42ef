// A small persistent thread pool for the kernels' parallel loops.
//
// fork(): a child process has only the thread that forked, so the parent's workers do not exist
// there, and any of the pool's mutexes may have been held by one of them at the moment of the
// fork. A pthread_atfork child handler therefore replaces the pool with a fresh one of the same
// size whose workers start on its first parallel loop (the parent's pool is left as it was, and
// the child's copy of it is abandoned, never touched again). Without this a forked child
// (multiprocessing's "fork" start method, DataLoader workers, pre-forking servers) published its
// first job to workers that do not exist and waited for them forever.
#include "kernel_thread_pool.h"

#include <pthread.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <climits>
#include <condition_variable>
#include <mutex>
#include <system_error>
#include <thread>
#include <vector>

#include "call_context.h"

namespace embag::internal {
namespace {

// Whether this thread is running a task of a parallel loop of the pool (see run()).
thread_local bool t_inside_task = false;
struct InsideTaskScope {
  InsideTaskScope() : previous(t_inside_task) { t_inside_task = true; }
  ~InsideTaskScope() { t_inside_task = previous; }
  InsideTaskScope(const InsideTaskScope&) = delete;
  InsideTaskScope& operator=(const InsideTaskScope&) = delete;
  bool previous;
};

class KernelThreadPool {
 public:
  KernelThreadPool() = default;
  // A pool of `threads` whose workers start on the first parallel loop (a forked child's).
  explicit KernelThreadPool(int threads) : threads_(threads) {}

  // Starts the missing workers and sets the thread count; all or nothing: when a worker cannot
  // be started, the ones this call started are stopped again, the count is unchanged, and the
  // error (errno-style, e.g. EAGAIN) is returned. 0 on success.
  int set_threads(int n) {
    std::lock_guard<std::mutex> job_lock(job_mutex_);
    const int threads = n < 1 ? 1 : n;
    if (int error = start_workers(threads - 1); error != 0) return error;
    threads_.store(threads, std::memory_order_relaxed);
    return 0;
  }

  int threads() const { return threads_.load(std::memory_order_relaxed); }

  int run(void* user_context, halide_task_t task, int min, int size, uint8_t* closure) {
    // One parallel loop at a time uses the workers. A second caller (another application
    // thread, or a nested loop) runs its loop on its own thread: same results, no waiting.
    // A loop started from inside a task of this pool's loop (a batched call runs one kernel per
    // task, and the kernel's own loop lands here) runs inline on its thread: the task is the
    // unit of parallel work, and its thread may already own job_mutex_ (try_lock on a mutex the
    // thread holds is undefined behaviour).
    if (t_inside_task) return run_serially(user_context, task, min, size, closure);
    std::unique_lock<std::mutex> job_lock(job_mutex_, std::try_to_lock);
    // (threads_ only changes under job_mutex_, so it is stable while this caller owns the
    // workers.)
    const int threads = threads_.load(std::memory_order_relaxed);
    if (!job_lock.owns_lock() || threads == 1 || size <= 1) {
      return run_serially(user_context, task, min, size, closure);
    }
    // A forked child's pool starts its workers here. Should that fail (a thread limit), the
    // loop runs on the workers that did start: same results, fewer threads.
    if (static_cast<int>(workers_.size()) < threads - 1) start_workers(threads - 1);
    const int helpers = std::min({threads - 1, size - 1, static_cast<int>(workers_.size())});
    if (helpers == 0) return run_serially(user_context, task, min, size, closure);
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

  // Starts workers until there are `count`; on failure stops those it started (under job_mutex_,
  // so no loop is running) and returns the error.
  int start_workers(int count) {
    const size_t before = workers_.size();
    int error = 0;
    while (static_cast<int>(workers_.size()) < count) {
      const int id = static_cast<int>(workers_.size());
      try {
        workers_.emplace_back([this, id] { worker_loop(id); });
      } catch (const std::system_error& e) {
        error = e.code().value() != 0 ? e.code().value() : EAGAIN;
        break;
      } catch (const std::bad_alloc&) {
        error = ENOMEM;
        break;
      }
    }
    if (error == 0 || workers_.size() == before) return error;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      retire_from_ = static_cast<int>(before);
      helpers_wanted_ = 0;
      generation_.fetch_add(1, std::memory_order_release);
    }
    wake_workers_.notify_all();
    for (size_t i = before; i < workers_.size(); ++i) workers_[i].join();
    workers_.resize(before);
    std::lock_guard<std::mutex> lock(mutex_);
    retire_from_ = INT_MAX;
    return error;
  }

  static int run_serially(void* user_context, halide_task_t task, int min, int size,
                          uint8_t* closure) {
    InsideTaskScope inside;
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
    InsideTaskScope inside;
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
        if (id >= retire_from_) return;  // set_threads could not start them all: undo
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
  int retire_from_ = INT_MAX;  // workers with this id or above exit (guarded by mutex_)
  std::atomic<int> helpers_running_{0};
  std::atomic<int> next_{0};
  std::atomic<int> status_{0};
};

// Never destroyed: workers may still be parked when static destructors run at exit.
std::atomic<KernelThreadPool*> g_pool{nullptr};

// In a forked child (only the forking thread runs there): a fresh pool of the same size. The
// old one is leaked on purpose: its std::thread objects name threads that do not exist here
// (destroying or joining them would terminate or hang), and its mutexes may be locked forever.
void replace_pool_in_child() {
  KernelThreadPool* old = g_pool.load(std::memory_order_relaxed);
  if (old != nullptr) g_pool.store(new KernelThreadPool(old->threads()), std::memory_order_release);
}

KernelThreadPool& pool() {
  static KernelThreadPool* instance = [] {
    auto* p = new KernelThreadPool;
    g_pool.store(p, std::memory_order_release);
    pthread_atfork(nullptr, nullptr, &replace_pool_in_child);
    return p;
  }();
  (void)instance;
  return *g_pool.load(std::memory_order_acquire);
}

}  // namespace

int set_kernel_threads(int n) { return pool().set_threads(n); }

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
