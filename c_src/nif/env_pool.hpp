// Process-independent envs for call replies, kept for reuse. A reply's env
// is made on the caller's scheduler (it holds the call's ref) and done with
// on the queue thread, after enif_send. Freed there, its memory would go
// back to that scheduler's allocator instance from a foreign thread, which
// ERTS answers by queueing delayed-dealloc work for the scheduler and waking
// it: one wakeup more per call (bench/README "Reply envs kept for reuse").
// Cleared and kept here, an env is reused by the next call on any thread.
#pragma once

#include <erl_nif.h>

#include <cstddef>
#include <mutex>
#include <vector>

namespace snakepit::nif {

class EnvPool {
 public:
  EnvPool();
  ~EnvPool();
  EnvPool(const EnvPool&) = delete;
  EnvPool& operator=(const EnvPool&) = delete;

  // Any thread: an empty env.
  ErlNifEnv* take();
  // Any thread, after enif_send or instead of it: clears `env` and keeps it.
  void give(ErlNifEnv* env) noexcept;

 private:
  // Above this many idle envs, a given one is freed. Reserved up front, so
  // that give() never allocates.
  static constexpr std::size_t max_idle = 1024;
  std::mutex mutex_;
  std::vector<ErlNifEnv*> idle_;
};

}  // namespace snakepit::nif
