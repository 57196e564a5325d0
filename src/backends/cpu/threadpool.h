// strand/backends/cpu/threadpool.h — a fixed pool of worker threads for the cpu tier.
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
  // Calls fn(thread_index) once on each of size() threads (the caller is thread 0) and
  // returns when all are done. Not re-entrant.
  void run(const std::function<void(int thread)>& fn);
  // Splits [0, n) into contiguous chunks, one call fn(begin, end) per non-empty chunk.
  void parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn);

  static ThreadPool& global();  // sized by STRAND_THREADS or the hardware

 private:
  struct Impl;
  Impl* impl_;
};

}  // namespace strand::cpu
