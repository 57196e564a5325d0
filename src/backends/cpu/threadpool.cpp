// strand/backends/cpu/threadpool.cpp — persistent workers, spin-then-block wake-up.
//
// A run is published by bumping a generation counter; workers watch it. An idle worker spins
// (with a pause instruction) for about kSpinMicros, then sleeps on a condition variable. The
// caller only takes the mutex to notify when some worker is actually asleep, so a run that
// follows another one closely costs two atomic operations per thread and no system call.
#include "backends/cpu/threadpool.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

namespace strand::cpu {

namespace {

constexpr int kMaxThreads = 256;
constexpr int64_t kSpinMicros = 100;  // how long an idle worker watches before it blocks

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

// True on a thread that is executing a share of some pool's run (nested runs go serial).
thread_local bool tls_in_run = false;

struct InRun {
  bool prev;
  InRun() : prev(tls_in_run) { tls_in_run = true; }
  ~InRun() { tls_in_run = prev; }
};

}  // namespace

struct ThreadPool::Impl {
  int n = 1;
  std::vector<std::thread> workers;
  std::mutex run_mu;  // held by the thread whose run is in progress

  const std::function<void(int)>* job = nullptr;
  std::atomic<uint64_t> gen{0};
  std::atomic<uint64_t> parallel_runs{0};
  std::atomic<int> pending{0};
  std::atomic<int> sleepers{0};
  std::atomic<bool> stop{false};
  std::mutex mu;
  std::condition_variable cv;

  std::mutex err_mu;
  std::exception_ptr err;

  void record(std::exception_ptr e) {
    std::lock_guard<std::mutex> lk(err_mu);
    if (!err) err = e;
  }

  void worker(int t, uint64_t seen) {
    using clock = std::chrono::steady_clock;
    for (;;) {
      uint64_t g = gen.load(std::memory_order_acquire);
      if (g == seen) {
        const auto deadline = clock::now() + std::chrono::microseconds(kSpinMicros);
        for (int i = 1;; ++i) {
          cpu_relax();
          g = gen.load(std::memory_order_acquire);
          if (g != seen) break;
          if ((i & 63) == 0 && clock::now() > deadline) {
            sleepers.fetch_add(1, std::memory_order_seq_cst);
            {
              std::unique_lock<std::mutex> lk(mu);
              cv.wait(lk, [&] { return gen.load(std::memory_order_seq_cst) != seen; });
            }
            sleepers.fetch_sub(1, std::memory_order_relaxed);
            g = gen.load(std::memory_order_acquire);
            break;
          }
        }
      }
      seen = g;
      if (stop.load(std::memory_order_acquire)) return;
      {
        InRun in_run;
        try {
          (*job)(t);
        } catch (...) {
          record(std::current_exception());
        }
      }
      pending.fetch_sub(1, std::memory_order_acq_rel);
    }
  }

  void start(int n_threads) {
    n = n_threads;
    stop.store(false);
    const uint64_t g = gen.load();
    workers.reserve(size_t(n - 1));
    for (int t = 1; t < n; ++t) workers.emplace_back([this, t, g] { worker(t, g); });
  }

  void publish() {
    gen.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers.load(std::memory_order_seq_cst) > 0) {
      std::lock_guard<std::mutex> lk(mu);
      cv.notify_all();
    }
  }

  void shutdown() {
    if (workers.empty()) return;
    stop.store(true, std::memory_order_release);
    publish();
    for (auto& w : workers) w.join();
    workers.clear();
  }
};

int ThreadPool::default_threads() {
  if (const char* s = std::getenv("STRAND_THREADS"); s && *s) {
    char* end = nullptr;
    const long v = std::strtol(s, &end, 10);
    if (end && *end == '\0' && v > 0) return int(std::min<long>(v, kMaxThreads));
    static bool warned = false;
    if (!warned) {
      warned = true;
      std::fprintf(stderr, "strand: STRAND_THREADS='%s' is not a positive integer; using the hardware's count\n", s);
    }
  }
  const unsigned hw = std::thread::hardware_concurrency();
  return hw ? int(std::min<unsigned>(hw, kMaxThreads)) : 1;
}

ThreadPool::ThreadPool(int n_threads) : impl_(new Impl) {
  impl_->start(n_threads > 0 ? std::min(n_threads, kMaxThreads) : default_threads());
}

ThreadPool::~ThreadPool() {
  impl_->shutdown();
  delete impl_;
}

int ThreadPool::size() const { return impl_->n; }

uint64_t ThreadPool::parallel_runs() const { return impl_->parallel_runs.load(std::memory_order_relaxed); }

void ThreadPool::resize(int n_threads) {
  if (tls_in_run) throw std::logic_error("ThreadPool::resize called from inside a run");
  const int n = n_threads > 0 ? std::min(n_threads, kMaxThreads) : default_threads();
  std::lock_guard<std::mutex> lk(impl_->run_mu);
  if (n == impl_->n) return;
  impl_->shutdown();
  impl_->start(n);
}

void ThreadPool::run(const std::function<void(int thread)>& fn) {
  Impl& p = *impl_;
  std::unique_lock<std::mutex> lk(p.run_mu, std::defer_lock);
  if (p.n == 1 || tls_in_run || !lk.try_lock()) {
    // One thread, a nested run, or the pool is busy with another caller's run: do every
    // share here, in order. The result is the same; only the speed differs.
    for (int t = 0; t < p.n; ++t) fn(t);
    return;
  }
  p.parallel_runs.fetch_add(1, std::memory_order_relaxed);
  p.job = &fn;
  p.err = nullptr;
  p.pending.store(p.n - 1, std::memory_order_relaxed);
  p.publish();
  {
    InRun in_run;
    try {
      fn(0);
    } catch (...) {
      p.record(std::current_exception());
    }
  }
  for (int i = 1; p.pending.load(std::memory_order_acquire) != 0; ++i) {
    cpu_relax();
    if ((i & 1023) == 0) std::this_thread::yield();
  }
  p.job = nullptr;
  if (p.err) {
    std::exception_ptr e = p.err;
    p.err = nullptr;
    std::rethrow_exception(e);
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t begin, int64_t end)>& fn) {
  if (n <= 0) return;
  const int64_t chunks = std::min<int64_t>(n, size());
  if (chunks == 1) {
    fn(0, n);
    return;
  }
  run([&](int t) {
    if (t >= chunks) return;
    const int64_t b = n * t / chunks, e = n * (t + 1) / chunks;
    if (b < e) fn(b, e);
  });
}

ThreadPool& ThreadPool::global() {
  static ThreadPool pool(0);
  return pool;
}

void ThreadPool::set_global_threads(int n) { global().resize(n); }

}  // namespace strand::cpu
