// strand/backends/cpu/threadpool.h — a fixed pool of worker threads for the cpu tier.
//
// Workers are created once and live as long as the pool. A run wakes them, the calling
// thread does its own share (it is thread 0), and the call returns when every thread is done.
// Waking is cheap when runs come back to back: an idle worker spins for a short while
// (about 100 µs) watching for the next run before it blocks on a condition variable.
//
// A run started while the pool is busy (from another thread, or from inside a run) does not
// wait and does not deadlock: the caller then executes every share itself, one after the other.
// An exception thrown by fn on any thread is rethrown by run() in the caller (the first one).
#pragma once

#include <cstdint>
#include <functional>

namespace strand::cpu {

class ThreadPool {
 public:
  // n_threads <= 0: one per hardware thread (or STRAND_THREADS when set).
  explicit ThreadPool(int n_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const;  // threads taking part in a run, the caller included
  // Runs so far that woke the workers (not counting runs done on the calling thread alone):
  // for tests and profiles of when work is worth splitting.
  uint64_t parallel_runs() const;
  // Calls fn(thread_index) once on each of size() threads (the caller is thread 0) and
  // returns when all are done. Not re-entrant (a nested call runs serially on the caller).
  void run(const std::function<void(int thread)>& fn);
  // Splits [0, n) into contiguous chunks, one call fn(begin, end) per non-empty chunk.
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);

  // Stops the workers and starts n_threads - 1 new ones (n_threads <= 0: the default size).
  // Must not be called while a run of this pool is in progress.
  void resize(int n_threads);

  static ThreadPool& global();  // sized by STRAND_THREADS or the hardware
  // Resizes the global pool (the CLI's --threads). n <= 0: back to the default size.
  static void set_global_threads(int n);
  // The default size: STRAND_THREADS when it is a positive integer, else the hardware's count.
  static int default_threads();

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace strand::cpu
