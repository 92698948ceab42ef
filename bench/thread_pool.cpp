// The gather baseline's persistent thread pool (see thread_pool.h for why it exists).
#include "thread_pool.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define EMBAG_BENCH_PAUSE() _mm_pause()
#else
#define EMBAG_BENCH_PAUSE() ((void)0)
#endif

namespace embag::bench {
namespace {

// How long an idle worker keeps polling before it sleeps: longer than the gap between two timed
// calls (a few us), far shorter than the gap between two benchmarks.
constexpr auto kPoll = std::chrono::microseconds(200);
// Busy-wait only this many pauses (a few us), then poll with yield(). On an oversubscribed
// machine a waiter may share a core with the thread it waits for; pure spinning then holds that
// core for a whole time slice (measured: 230 us per 2-thread call on a tiny shape, against 1 us
// at 1 thread), while yield() hands it over and costs ~1 us when nobody else wants it.
constexpr int kPauses = 256;

constexpr int kSizeBits = 16;
constexpr uint64_t kSizeMask = (uint64_t{1} << kSizeBits) - 1;

uint64_t job_generation(uint64_t job) { return job >> kSizeBits; }
int job_size(uint64_t job) { return static_cast<int>(job & kSizeMask); }

}  // namespace

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::run(int n, const std::function<void(int)>& task) {
  if (n > static_cast<int>(kSizeMask)) n = static_cast<int>(kSizeMask);
  if (n <= 1) {
    task(0);
    return;
  }
  std::lock_guard<std::mutex> run_lock(run_mu_);
  while (static_cast<int>(workers_.size()) < n - 1) {
    const int id = static_cast<int>(workers_.size()) + 1;
    workers_.emplace_back([this, id] { worker_loop(id); });
  }
  task_ = &task;
  pending_.store(n - 1, std::memory_order_relaxed);
  {
    // Publishing under mu_ means a worker that found no new job and is about to sleep still
    // holds mu_, so it cannot miss the notify.
    std::lock_guard<std::mutex> lock(mu_);
    const uint64_t next = job_generation(job_.load(std::memory_order_relaxed)) + 1;
    job_.store((next << kSizeBits) | static_cast<uint64_t>(n), std::memory_order_release);
  }
  cv_.notify_all();
  task(0);
  // The chunks are equal, so the others finish at about the same time: no need to sleep.
  for (int spins = 0; pending_.load(std::memory_order_acquire) != 0; ++spins) {
    if (spins < kPauses) {
      EMBAG_BENCH_PAUSE();
    } else {
      std::this_thread::yield();
    }
  }
}

void ThreadPool::worker_loop(int id) {
  uint64_t seen = 0;  // generation of the last job this worker looked at
  for (;;) {
    uint64_t job = job_.load(std::memory_order_acquire);
    if (job_generation(job) == seen) {
      const auto poll_until = std::chrono::steady_clock::now() + kPoll;
      for (int spins = 0; job_generation(job = job_.load(std::memory_order_acquire)) == seen;
           ++spins) {
        if (spins < kPauses) {
          EMBAG_BENCH_PAUSE();
        } else if (std::chrono::steady_clock::now() < poll_until) {
          std::this_thread::yield();
        } else {
          break;
        }
      }
      if (job_generation(job) == seen) {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [&] {
          job = job_.load(std::memory_order_acquire);
          return stop_ || job_generation(job) != seen;
        });
        if (stop_) return;
      }
    }
    seen = job_generation(job);
    // Workers beyond this job's size sit it out; only participants touch task_ and pending_.
    if (id < job_size(job)) {
      (*task_)(id);
      pending_.fetch_sub(1, std::memory_order_acq_rel);
    }
  }
}

}  // namespace embag::bench
