// Pool, shutdown and status: stop, stats, load, the worker list and the
// workers' thread-safety reports.
#include <signal.h>

#include "pool.hpp"
#include "pool_errors.hpp"
#include "worker_process.hpp"

namespace snakepit::core {

void Pool::begin_shutdown() {
  std::vector<std::shared_ptr<Request>> queued;
  std::vector<pid_t> groups;
  {
    Lock lock(mutex_);
    stopping_ = true;
    for (auto id : scheduler_.drain_queue()) {
      auto it = requests_.find(id);
      if (it == requests_.end()) continue;
      queued.push_back(std::move(it->second));
      requests_.erase(it);
    }
    for (auto& [key, worker] : workers_) {
      scheduler_.set_routable(key, false);
      worker->phase = WorkerPhase::stopping;
      groups.push_back(worker->pid);
    }
    if (workers_.empty()) all_exited_.notify_all();  // no exit will come to wake stop()
  }
  for (auto& request : queued) finish(request, errors::failure(errors::stopped_before_run(config_.name)));
  for (auto pgid : groups) signal_group(pgid, SIGTERM);
  after(config_.graceful_shutdown, [this] {
    Lock lock(mutex_);
    for (auto& [key, worker] : workers_) signal_group(worker->pid, SIGKILL);
  });
}

void Pool::stop() {
  {
    Lock lock(mutex_);
    if (!started_ || stopping_) return;
  }
  post([this] { begin_shutdown(); });
  {
    // Real time, whatever the pool's clock: this thread waits for real exits.
    Lock lock(mutex_);
    all_exited_.wait_for(lock, config_.graceful_shutdown + Millis(3000), [this] { return stopping_ && workers_.empty(); });
    // Still here after SIGKILL and the margin: leave nothing running.
    for (auto& [key, worker] : workers_) signal_group(worker->pid, SIGKILL);
  }
  loop_.stop();
  loop_.clear();
  std::vector<std::shared_ptr<Request>> remaining;
  {
    Lock lock(mutex_);
    for (auto& [id, request] : requests_) remaining.push_back(request);
    requests_.clear();
  }
  for (auto& request : remaining) finish(request, errors::failure(errors::stopped(config_.name)));
}

PoolStats Pool::stats() const {
  Lock lock(mutex_);
  PoolStats stats = counters_;
  stats.errors = errors_.load(std::memory_order_relaxed);
  stats.queued = scheduler_.queue_length();
  stats.sessions = sessions_.size();
  stats.workers = workers_.size();
  for (const auto& load : scheduler_.loads()) {
    if (!load.routable) continue;
    ++stats.ready;
    if (load.inflight < load.capacity) ++stats.available;
    if (load.inflight > 0) ++stats.busy;
  }
  return stats;
}

PoolLoad Pool::load() const {
  Lock lock(mutex_);
  PoolLoad load;
  load.queued = scheduler_.queue_length();
  for (const auto& worker : scheduler_.loads()) {
    if (!worker.routable) continue;
    load.capacity += static_cast<std::size_t>(worker.capacity);
    if (worker.inflight < worker.capacity) load.free += static_cast<std::size_t>(worker.capacity - worker.inflight);
  }
  return load;
}

std::vector<WorkerInfo> Pool::workers() const {
  Lock lock(mutex_);
  std::vector<WorkerInfo> infos;
  for (const auto& [key, worker] : workers_) {
    WorkerInfo info;
    info.id = worker->id;
    info.os_pid = worker->pid;
    info.state = to_string(worker->phase);
    info.capacity = config_.capacity_per_worker;
    // Slots in use: running calls, and calls whose callers gave up that the worker still runs.
    info.inflight = static_cast<int>(worker->inflight.size() + worker->abandoned.size());
    info.requests = worker->served;
    infos.push_back(std::move(info));
  }
  return infos;
}

std::vector<WorkerReport> Pool::reports(Millis timeout) const {
  struct Pending {
    std::mutex mutex;
    std::condition_variable done;
    std::vector<WorkerReport> reports;
    std::size_t answered = 0;
  };
  auto pending = std::make_shared<Pending>();
  std::vector<std::shared_ptr<WorkerConnection>> connections;
  {
    Lock lock(mutex_);
    for (const auto& [key, worker] : workers_) {
      if (!worker->connection) continue;
      pending->reports.push_back(WorkerReport{worker->id, std::nullopt});
      connections.push_back(worker->connection);
    }
  }
  for (std::size_t i = 0; i < connections.size(); ++i) {
    connections[i]->report(timeout, [pending, i](std::optional<std::vector<ToolConcurrency>> tools) {
      std::lock_guard lock(pending->mutex);
      pending->reports[i].tools = std::move(tools);
      ++pending->answered;
      pending->done.notify_all();
    });
  }
  std::unique_lock lock(pending->mutex);
  pending->done.wait_for(lock, timeout + Millis(500), [&] { return pending->answered == connections.size(); });
  return pending->reports;
}

}  // namespace snakepit::core
