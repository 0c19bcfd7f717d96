// Capacity tracking and the request queue of one pool. Pure bookkeeping:
// no threads, no I/O, the caller holds the pool lock and supplies the time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <optional>
#include <utility>
#include <vector>

#include "types.hpp"

namespace snakepit::core {

using WorkerKey = std::uint64_t;
using RequestId = std::uint64_t;

struct WorkerLoad {
  WorkerKey key;
  int inflight;
  int capacity;
  bool routable;
};

class Scheduler {
 public:
  explicit Scheduler(std::size_t max_queue) : max_queue_(max_queue) {}

  // A worker starts unroutable; it takes requests once marked routable.
  void add_worker(WorkerKey key, int capacity);
  void set_routable(WorkerKey key, bool routable);
  // Forget a worker; its in-flight count no longer matters.
  void remove_worker(WorkerKey key);

  // The least-loaded routable worker below capacity, its slot taken.
  // Ties rotate so equal workers share the work.
  std::optional<WorkerKey> acquire();
  // Take a slot on one specific worker, if it has room.
  bool acquire_on(WorkerKey key);
  // Give back a slot. Returns false if the worker is gone (late completion).
  bool release(WorkerKey key);

  enum class EnqueueResult { queued, full };
  // `required`: only that worker may serve it (strict session affinity).
  // `group` (non-zero): requests that must all land on one worker, not yet
  // chosen (a strict session whose first calls all wait); the first of the
  // group to be dispatched picks the worker for the rest.
  EnqueueResult enqueue(RequestId id, TimePoint deadline, WorkerKey required = 0, std::uint64_t group = 0);
  bool remove_queued(RequestId id);
  // Some request of `group` waits and none has been dispatched yet.
  bool group_waiting(std::uint64_t group) const;
  // Pairs queued requests (FIFO) with free slots, taking the slots. A
  // request waiting for a busy worker does not hold up the ones behind it.
  std::vector<std::pair<RequestId, WorkerKey>> dispatch_queued();
  // Queued requests that only `worker` could serve, removed (it is gone).
  std::vector<RequestId> remove_required(WorkerKey worker);
  // Queued requests for `from` wait for `to` instead (a planned replacement).
  void retarget_required(WorkerKey from, WorkerKey to);
  // Queued requests whose deadline has passed, removed from the queue.
  std::vector<RequestId> expire(TimePoint now);
  std::optional<TimePoint> next_deadline() const;
  // Everything still queued, removed (pool shutdown).
  std::vector<RequestId> drain_queue();

  std::size_t queue_length() const { return queue_.size(); }
  std::size_t worker_count() const { return workers_.size(); }
  std::optional<WorkerLoad> load(WorkerKey key) const;
  const std::vector<WorkerLoad>& loads() const { return workers_; }
  bool has_free_slot() const;

 private:
  struct Queued {
    RequestId id;
    TimePoint deadline;
    WorkerKey required;
    std::uint64_t group;
  };
  void bind_group(std::uint64_t group, WorkerKey key);
  WorkerLoad* find(WorkerKey key);
  const WorkerLoad* find(WorkerKey key) const;

  std::size_t max_queue_;
  std::vector<WorkerLoad> workers_;
  std::deque<Queued> queue_;
  std::size_t rotation_ = 0;
};

}  // namespace snakepit::core
