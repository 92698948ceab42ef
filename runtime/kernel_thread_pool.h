// The thread pool that runs the kernels' parallel loops (installed as Halide's do_par_for).
//
// Why not Halide's own pool: it cannot be shrunk reliably once its workers exist (threads that
// are already awake keep taking tasks after halide_set_num_threads(1)), and embag promises that
// set_num_threads(n) means n threads. This pool runs a parallel loop on exactly the caller plus
// n - 1 workers. Which thread runs which task does not change any result: each task writes its
// own bags, computed in input order.
#pragma once

#include <HalideRuntime.h>

namespace embag::internal {

// Sets the number of threads kernels use (the calling thread included); n >= 1. All or nothing:
// returns 0, or the errno-style error that stopped a worker from starting (nothing changed).
// The pool survives fork(): a child starts its own workers on its first parallel loop.
int set_kernel_threads(int n);
int kernel_threads();

// Bags per parallel task for a call with `num_bags` bags: about four tasks per thread, so each
// thread walks long runs of consecutive bags (a row prefetch only restarts at a task boundary)
// while uneven bags still balance; at least 16 bags per task. A tuning file may choose another
// number of tasks per thread for a kernel (KernelEntry::tasks_per_thread; 0 keeps 4).
int32_t bags_per_task(int64_t num_bags, int tasks_per_thread = 0);

// Runs body(i) for i in [0, tasks) on the kernel threads (for the runtime's own bulk work:
// zeroing and scattering gradients). Tasks must be independent.
void parallel_for(int tasks, void (*body)(void* context, int task), void* context);

// Halide's do_par_for entry point: runs task(min) ... task(min + size - 1).
int kernel_do_par_for(void* user_context, halide_task_t task, int min, int size, uint8_t* closure);

}  // namespace embag::internal
