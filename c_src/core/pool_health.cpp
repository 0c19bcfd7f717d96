// Pool, health and recycling: heartbeats, the probe after a refused call,
// killing, recycling and retiring workers, and calls that overran. The
// decisions are the health module's; this file carries them out.
#include <signal.h>

#include <fmt/format.h>

#include "pool.hpp"
#include "worker_process.hpp"

namespace snakepit::core {

void Pool::send_heartbeat(WorkerKey key) {
  std::shared_ptr<WorkerConnection> connection;
  {
    Lock lock(mutex_);
    auto* worker = find_worker(key, Locked(lock));
    if (worker == nullptr || worker->ending() || stopping_) return;
    worker->heartbeat_timer = after(config_.ping_interval, [this, key] { send_heartbeat(key); });
    connection = worker->connection;
  }
  if (!connection) return;
  std::weak_ptr<Pool> weak = weak_from_this();
  connection->ping(config_.ping_timeout, false, [weak, key](bool ok) {
    if (auto pool = weak.lock()) pool->post([pool = pool.get(), key, ok] { pool->on_heartbeat(key, ok); });
  });
}

void Pool::on_heartbeat(WorkerKey key, bool ok) {
  Lock lock(mutex_);
  const Locked locked(lock);
  auto* worker = find_worker(key, locked);
  if (worker == nullptr || worker->ending() || stopping_) return;  // pings in flight when it was signalled
  const auto verdict = heartbeat_answered(worker->health, ok, health_rules());
  if (!verdict.timed_out) return;
  ++counters_.heartbeat_failures;
  const std::string id = worker->id;
  const pid_t pid = worker->pid;
  if (verdict.action == HealthAction::kill) kill_worker(*worker, "missed heartbeats", locked);
  lock.unlock();
  emit(id, pid, event::HeartbeatTimeout{verdict.missed});
}

void Pool::probe_unavailable(WorkerKey key) {
  std::shared_ptr<WorkerConnection> connection;
  {
    Lock lock(mutex_);
    auto* worker = find_worker(key, Locked(lock));
    if (worker == nullptr || worker->ending() || stopping_ || !worker->connection) return;
    connection = worker->connection;
  }
  std::weak_ptr<Pool> weak = weak_from_this();
  connection->ping(config_.ping_timeout, true, [weak, key](bool ok) {
    if (auto pool = weak.lock()) pool->post([pool = pool.get(), key, ok] { pool->on_probe(key, ok); });
  });
}

void Pool::on_probe(WorkerKey key, bool ok) {
  std::vector<Dispatch> dispatches;
  std::vector<std::pair<std::shared_ptr<Request>, Outcome>> released;
  std::string message;
  {
    Lock lock(mutex_);
    const Locked locked(lock);
    auto* worker = find_worker(key, locked);
    if (worker == nullptr || worker->ending() || stopping_) return;
    if (probe_answered(worker->health, ok) == HealthAction::kill) {
      // Dead or wedged: its exit fails what it runs and brings a replacement.
      kill_worker(*worker, "it refused a call and did not answer a ping", locked);
      message = fmt::format("worker {} refused a call and does not answer a ping; killing it", worker->id);
    } else {
      // A passing fault: the held calls end as they were refused.
      for (auto& [id, entry] : worker->held) {
        requests_.erase(id);
        released.push_back(std::move(entry));
      }
      worker->held.clear();
      if (worker->phase == WorkerPhase::ready) {
        scheduler_.set_routable(key, true);  // back in service
        dispatches = take_queued_dispatches(locked);
      }
    }
  }
  for (auto& [request, outcome] : released) finish(request, std::move(outcome));
  if (!message.empty()) emit({}, 0, event::InternalError{std::move(message)});
  start_dispatches(dispatches);
}

void Pool::kill_worker(Worker& worker, const char* why, const Locked& locked) {
  locked.held();
  worker.phase = WorkerPhase::stopping;
  worker.killed_for = why;
  scheduler_.set_routable(worker.key, false);
  signal_group(worker.pid, SIGKILL);
}

void Pool::recycle(WorkerKey key, RecycleReason reason) {
  Lock lock(mutex_);
  auto* worker = find_worker(key, Locked(lock));
  if (worker == nullptr || worker->phase != WorkerPhase::ready || worker->recycled || stopping_) return;
  // Start its successor; it keeps serving until that one is ready (retire),
  // so a slow model load never leaves the slot without a worker.
  worker->recycled = true;
  Worker::cancel_timer(loop_, worker->ttl_timer);
  ++counters_.recycles;
  const std::size_t slot = worker->slot;
  const std::string id = worker->id;
  const pid_t pid = worker->pid;
  lock.unlock();
  emit(id, pid, event::WorkerRecycled{reason});
  spawn_worker(slot);
}

// The recycled worker of `slot` that waits for its successor, if any: still
// ready (an earlier retiree of the slot may still be draining or exiting).
Pool::Worker* Pool::retiring_in(std::size_t slot, const Locked& locked) {
  locked.held();
  for (auto& [key, worker] : workers_)
    if (worker->slot == slot && worker->recycled && worker->phase == WorkerPhase::ready) return worker.get();
  return nullptr;
}

void Pool::retire(Worker& worker, const Worker& successor, const Locked& locked) {
  locked.held();
  // Out of routing; its sessions and the calls waiting for it move to the
  // successor; its running calls finish, then it is terminated.
  if (worker.phase == WorkerPhase::ready) worker.phase = WorkerPhase::draining;
  scheduler_.set_routable(worker.key, false);
  sessions_.move(worker.key, successor.key, successor.id);
  scheduler_.retarget_required(worker.key, successor.key);
  if (worker.inflight.empty()) post([this, key = worker.key] { terminate_drained(key); });
}

void Pool::terminate_drained(WorkerKey key) {
  Lock lock(mutex_);
  auto* worker = find_worker(key, Locked(lock));
  if (worker == nullptr || worker->phase != WorkerPhase::draining) return;
  // Shutting down, it stops answering pings: not a heartbeat failure.
  worker->phase = WorkerPhase::stopping;
  Worker::cancel_timer(loop_, worker->heartbeat_timer);
  signal_group(worker->pid, SIGTERM);
  worker->kill_timer = after(config_.graceful_shutdown, [this, key] {
    Lock lock(mutex_);
    if (auto* w = find_worker(key, Locked(lock))) signal_group(w->pid, SIGKILL);
  });
}

// ------------------------------------------------------- abandoned calls

void Pool::hold_abandoned(Worker& worker, const Request& request, const Locked& locked) {
  locked.held();
  worker.abandoned[request.id] = abandon(now(), request.deadline(), request.call.tool, health_rules());
  // Called on a gRPC thread: the poll's timer is armed on the loop thread.
  if (!worker.abandoned_timer) post([this, key = worker.key] { arm_abandoned_poll(key); });
}

void Pool::arm_abandoned_poll(WorkerKey key) {
  Lock lock(mutex_);
  auto* worker = find_worker(key, Locked(lock));
  if (worker == nullptr || worker->abandoned_timer || worker->abandoned.empty()) return;
  worker->abandoned_timer = after(config_.overrun_poll, [this, key] { poll_abandoned(key); });
}

void Pool::poll_abandoned(WorkerKey key) {
  std::shared_ptr<WorkerConnection> connection;
  {
    Lock lock(mutex_);
    auto* worker = find_worker(key, Locked(lock));
    if (worker == nullptr) return;
    worker->abandoned_timer.reset();
    if (worker->ending() || stopping_ || !worker->connection) return;
    connection = worker->connection;
  }
  std::weak_ptr<Pool> weak = weak_from_this();
  connection->running(std::max(config_.overrun_poll, Millis(1000)),
                      [weak, key](std::optional<std::vector<RequestId>> running) {
                        if (auto pool = weak.lock())
                          pool->post([pool = pool.get(), key, running = std::move(running)]() mutable {
                            pool->on_running(key, std::move(running));
                          });
                      });
}

void Pool::on_running(WorkerKey key, std::optional<std::vector<RequestId>> running) {
  std::vector<Dispatch> dispatches;
  std::optional<PoolEvent> hung;
  {
    Lock lock(mutex_);
    const Locked locked(lock);
    auto* worker = find_worker(key, locked);
    if (worker == nullptr || worker->ending() || stopping_) return;
    auto verdict = check_abandoned(worker->abandoned, running, now());
    for (auto id : verdict.finished) {
      scheduler_.release(key);
      worker->abandoned.erase(id);
    }
    if (verdict.action == HealthAction::kill) {
      hung = PoolEvent{worker->id, worker->pid, event::WorkerHung{verdict.hung_tool, verdict.overrun}};
      kill_worker(*worker, "a call overran its deadline", locked);  // its exit frees the slots and brings a replacement
    } else {
      if (verdict.action == HealthAction::ping && !worker->abandoned_timer)
        worker->abandoned_timer = after(config_.overrun_poll, [this, key] { poll_abandoned(key); });
      dispatches = take_queued_dispatches(locked);
    }
  }
  if (hung) emit(std::move(*hung));
  start_dispatches(dispatches);
}

}  // namespace snakepit::core
