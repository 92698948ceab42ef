// A persistent pool of worker threads for the gather baseline.
//
// Calls take 100 us to 10 ms, so spawning threads per call (tens of us each, more on a loaded
// VM) would show up in the numbers; the pool keeps its workers alive, has them poll briefly
// after each job so back-to-back calls start without a wake-up, and then sleep so an idle pool
// does not steal the cores the next benchmark (embag's own pool) needs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace embag::bench {

class ThreadPool {
 public:
  ThreadPool() = default;
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  // Runs task(0) .. task(n - 1) concurrently, task(0) on the calling thread, and returns when
  // all have finished. Workers are created on first need; n is capped at 65535. One job at a
  // time: concurrent callers are serialised.
  void run(int n, const std::function<void(int)>& task);

 private:
  void worker_loop(int id);

  std::mutex run_mu_;  // one job at a time
  std::mutex mu_;      // guards sleeping workers' wake-up
  std::condition_variable cv_;
  std::vector<std::thread> workers_;  // worker i runs task(i + 1)
  // The current job as one word, (generation << 16) | participants (the caller included), so
  // a worker reads which job it sees and whether it takes part in one load; reading the two
  // separately could pair an old generation with the next job's size and run a task twice.
  std::atomic<uint64_t> job_{0};
  std::atomic<int> pending_{0};
  // Written before the job word is published; only participants read it, and the caller
  // waits for all of them before it writes the next one.
  const std::function<void(int)>* task_ = nullptr;
  bool stop_ = false;
};

}  // namespace embag::bench
