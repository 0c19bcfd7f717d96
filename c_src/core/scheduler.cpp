// Scheduler: slot accounting, least-loaded choice and the FIFO queue with
// required workers and session groups.
#include "scheduler.hpp"

#include <algorithm>

namespace snakepit::core {

void Scheduler::add_worker(WorkerKey key, int capacity) {
  workers_.push_back(WorkerLoad{key, 0, capacity, false});
}

void Scheduler::set_routable(WorkerKey key, bool routable) {
  if (auto* worker = find(key)) worker->routable = routable;
}

void Scheduler::remove_worker(WorkerKey key) {
  workers_.erase(std::remove_if(workers_.begin(), workers_.end(),
                                [key](const WorkerLoad& w) { return w.key == key; }),
                 workers_.end());
}

std::optional<WorkerKey> Scheduler::acquire() {
  const std::size_t n = workers_.size();
  WorkerLoad* best = nullptr;
  for (std::size_t i = 0; i < n; ++i) {
    auto& worker = workers_[(rotation_ + i) % n];
    if (!worker.routable || worker.inflight >= worker.capacity) continue;
    if (best == nullptr || worker.inflight < best->inflight) best = &worker;
    if (best->inflight == 0) break;
  }
  if (best == nullptr) return std::nullopt;
  ++rotation_;
  ++best->inflight;
  return best->key;
}

bool Scheduler::acquire_on(WorkerKey key) {
  auto* worker = find(key);
  if (worker == nullptr || !worker->routable || worker->inflight >= worker->capacity) return false;
  ++worker->inflight;
  return true;
}

bool Scheduler::release(WorkerKey key) {
  auto* worker = find(key);
  if (worker == nullptr) return false;
  if (worker->inflight > 0) --worker->inflight;
  return true;
}

Scheduler::EnqueueResult Scheduler::enqueue(RequestId id, TimePoint deadline, WorkerKey required,
                                            std::uint64_t group) {
  if (queue_.size() >= max_queue_) return EnqueueResult::full;
  queue_.push_back(Queued{id, deadline, required, required == 0 ? group : 0});
  return EnqueueResult::queued;
}

bool Scheduler::remove_queued(RequestId id) {
  auto it = std::find_if(queue_.begin(), queue_.end(), [id](const Queued& q) { return q.id == id; });
  if (it == queue_.end()) return false;
  queue_.erase(it);
  return true;
}

bool Scheduler::group_waiting(std::uint64_t group) const {
  return group != 0 && std::any_of(queue_.begin(), queue_.end(), [group](const Queued& q) { return q.group == group; });
}

std::vector<std::pair<RequestId, WorkerKey>> Scheduler::dispatch_queued() {
  std::vector<std::pair<RequestId, WorkerKey>> assigned;
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (it->required != 0) {
      if (acquire_on(it->required)) {
        assigned.emplace_back(it->id, it->required);
        it = queue_.erase(it);
      } else {
        ++it;
      }
      continue;
    }
    auto worker = acquire();
    if (!worker) break;  // no free slot anywhere: nothing behind can run either
    assigned.emplace_back(it->id, *worker);
    const auto group = it->group;
    it = queue_.erase(it);
    if (group != 0) bind_group(group, *worker);  // only touches entries still queued
  }
  return assigned;
}

void Scheduler::bind_group(std::uint64_t group, WorkerKey key) {
  for (auto& queued : queue_) {
    if (queued.group != group) continue;
    queued.required = key;
    queued.group = 0;
  }
}

void Scheduler::retarget_required(WorkerKey from, WorkerKey to) {
  for (auto& queued : queue_)
    if (queued.required == from) queued.required = to;
}

std::vector<RequestId> Scheduler::remove_required(WorkerKey worker) {
  std::vector<RequestId> removed;
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (it->required == worker) {
      removed.push_back(it->id);
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  return removed;
}

std::vector<RequestId> Scheduler::expire(TimePoint now) {
  // Deadlines are not monotonic in general (per-call timeouts), so scan.
  std::vector<RequestId> expired;
  for (auto it = queue_.begin(); it != queue_.end();) {
    if (it->deadline <= now) {
      expired.push_back(it->id);
      it = queue_.erase(it);
    } else {
      ++it;
    }
  }
  return expired;
}

std::optional<TimePoint> Scheduler::next_deadline() const {
  if (queue_.empty()) return std::nullopt;
  auto it = std::min_element(queue_.begin(), queue_.end(),
                             [](const Queued& a, const Queued& b) { return a.deadline < b.deadline; });
  return it->deadline;
}

std::vector<RequestId> Scheduler::drain_queue() {
  std::vector<RequestId> ids;
  ids.reserve(queue_.size());
  for (const auto& q : queue_) ids.push_back(q.id);
  queue_.clear();
  return ids;
}

std::optional<WorkerLoad> Scheduler::load(WorkerKey key) const {
  if (const auto* worker = find(key)) return *worker;
  return std::nullopt;
}

bool Scheduler::has_free_slot() const {
  return std::any_of(workers_.begin(), workers_.end(),
                     [](const WorkerLoad& w) { return w.routable && w.inflight < w.capacity; });
}

WorkerLoad* Scheduler::find(WorkerKey key) {
  for (auto& worker : workers_)
    if (worker.key == key) return &worker;
  return nullptr;
}

const WorkerLoad* Scheduler::find(WorkerKey key) const {
  for (const auto& worker : workers_)
    if (worker.key == key) return &worker;
  return nullptr;
}

}  // namespace snakepit::core
