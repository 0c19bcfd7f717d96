// One worker process as the pool tracks it: identity, its pipes, its phase
// (starting, ready, draining, stopping), its health, the calls it runs and
// its timers. Touched only under the pool lock.
#pragma once

#include <sys/types.h>

#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "event_loop.hpp"
#include "health.hpp"
#include "pool_request.hpp"
#include "spawner.hpp"
#include "unique_fd.hpp"

namespace snakepit::core {

enum class WorkerPhase {
  starting,  // spawned, no ready line yet
  ready,     // serving
  draining,  // retired: out of routing, finishing its calls
  stopping,  // signalled by the pool (killed, terminated, failed start): its exit is coming
};
const char* to_string(WorkerPhase phase) noexcept;

class WorkerProcess {
 public:
  WorkerProcess(WorkerKey key, std::size_t slot, std::string id, std::string socket_path)
      : key(key), slot(slot), id(std::move(id)), socket_path(std::move(socket_path)) {}

  const WorkerKey key;
  const std::size_t slot;
  const std::string id;
  const std::string socket_path;

  pid_t pid = -1;  // the worker process, leader of its process group
  UniqueFd pidfd, ready_fd, out_fd, err_fd, status_fd;  // pidfd and status_fd: its guard's
  WorkerPhase phase = WorkerPhase::starting;
  Health health;
  bool recycled = false;             // its slot's successor is on its way
  const char* killed_for = nullptr;  // the pool killed it, for this reason
  std::shared_ptr<WorkerConnection> connection;
  std::uint64_t served = 0;
  std::unordered_map<RequestId, std::shared_ptr<PoolRequest>> inflight;
  // Calls answered to their callers (timed out, cancelled) that the worker
  // may still be running: each keeps its scheduler slot until it is done.
  std::map<RequestId, AbandonedCall> abandoned;
  // Calls refused with UNAVAILABLE, their outcome held for a while: if the
  // worker's exit comes first, they end as worker_exited with its cause.
  std::map<RequestId, std::pair<std::shared_ptr<PoolRequest>, Outcome>> held;
  std::optional<EventLoop::TimerId> startup_timer, heartbeat_timer, ttl_timer, kill_timer, abandoned_timer;

  void adopt(SpawnedProcess&& process);
  bool ending() const { return phase == WorkerPhase::stopping; }
  // Sessions bound to it still route to it (a retired worker's moved on).
  bool keeps_sessions() const { return phase != WorkerPhase::draining; }
  void cancel_timers(EventLoop& loop);
  static void cancel_timer(EventLoop& loop, std::optional<EventLoop::TimerId>& timer);

  // The ready pipe's bytes so far: its first line once there is one (or
  // whatever came, when the pipe closed first); nullopt while waiting.
  struct ReadyLine {
    std::string text;
    bool complete = false;  // ended by a newline
  };
  std::optional<ReadyLine> ready_line(std::string_view received, bool closed);
  // Output read from stdout or stderr, cut into whole lines (and the rest
  // when the pipe closed); stderr lines also go to the tail kept for errors.
  std::vector<std::string> output_lines(bool is_stderr, std::string_view received, bool closed);
  const std::deque<std::string>& stderr_tail() const { return stderr_tail_; }
  // Every fd it still has open, for the loop to unwatch.
  std::vector<int> watched_fds() const;

 private:
  std::string ready_buffer_, out_buffer_, err_buffer_;
  std::deque<std::string> stderr_tail_;
};

struct PoolConfig;
// What the pool passes to spawn_guarded for this worker.
SpawnSpec worker_spawn_spec(const PoolConfig& config, const WorkerProcess& worker);

}  // namespace snakepit::core
