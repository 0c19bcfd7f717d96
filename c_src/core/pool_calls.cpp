// Pool, calls: starting a call on its worker, its completion (outcome,
// slot, what the worker's state makes of it), held UNAVAILABLE outcomes,
// and the queue's deadlines.
#include "call_outcome.hpp"
#include "pool.hpp"
#include "pool_errors.hpp"
#include "worker_process.hpp"

namespace snakepit::core {

void Pool::start_call(const std::shared_ptr<Request>& request, const std::shared_ptr<WorkerConnection>& connection) {
  // A cluster executor's caller re-routes a call lost with its node only if this never came.
  if (!request->finished.load()) request->responder->started();
  std::weak_ptr<Pool> weak = weak_from_this();
  auto done = [weak, request](TransportResult&& result) {
    if (auto pool = weak.lock()) {
      pool->on_call_done(request, std::move(result));
    } else {
      // No pool to count it.
      request->finish(errors::failure(errors::pool_gone()), [](const Outcome&) {});
    }
  };
  const auto deadline = request->deadline();
  CallRequest call = std::move(request->call);
  call.request_id = request->id;
  request->call.tool = call.tool;  // still named in timeout messages
  request->call.timeout = call.timeout;
  std::shared_ptr<CallHandle> handle;
  if (call.stream) {
    auto on_chunk = [request](std::string&& data, bool binary, bool is_final) {
      if (!request->finished.load()) request->responder->chunk(std::move(data), binary, is_final);
    };
    handle = connection->execute_stream(std::move(call), deadline, config_.stream_window, std::move(on_chunk),
                                        std::move(done));
  } else {
    handle = connection->execute(std::move(call), deadline, std::move(done));
  }
  std::lock_guard lock(request->handle_mutex);
  request->handle = handle;
  if (request->cancel_requested && handle) handle->cancel();
}

void Pool::start_dispatches(std::vector<Dispatch>& dispatches) {
  for (auto& [request, connection] : dispatches) start_call(request, connection);
}

void Pool::on_call_done(const std::shared_ptr<Request>& request, TransportResult&& result) {
  const auto kind = result.kind;
  Outcome outcome = outcome_from(std::move(result), CallFacts{request->call.tool, request->call.timeout, request->worker_id});
  std::vector<Dispatch> dispatches;
  bool answered_elsewhere = false;
  {
    Lock lock(mutex_);
    // Taken by its worker's exit: that exit answers it, with the cause.
    answered_elsewhere = request->taken_by_exit || settle_call(request, kind, outcome, dispatches, Locked(lock));
  }
  // The freed worker gets its next call before this reply is decoded and sent.
  start_dispatches(dispatches);
  if (!answered_elsewhere) finish(request, std::move(outcome));
}

// Frees the call's place on its worker. True when its outcome is held
// (refused with UNAVAILABLE: the worker's exit may still say why).
bool Pool::settle_call(const std::shared_ptr<Request>& request, TransportResult::Kind kind, Outcome& outcome,
                       std::vector<Dispatch>& dispatches, const Locked& locked) {
  locked.held();
  auto* worker = find_worker(request->worker, locked);
  const bool held = worker != nullptr && kind == TransportResult::Kind::unavailable && !stopping_;
  // A held call stays in requests_ so stop() still answers it.
  if (!held) requests_.erase(request->id);
  if (worker == nullptr) return false;
  worker->inflight.erase(request->id);
  if (held) {
    worker->held.emplace(request->id, std::make_pair(request, std::move(outcome)));
    // On a gRPC thread: timers are the loop thread's (post also wakes it).
    post([this, key = worker->key, id = request->id] {
      after(config_.exit_wait, [this, key, id] { release_held(key, id); });
    });
  }
  ++worker->served;
  if (may_still_run(kind) && !worker->ending() && !stopping_) {
    hold_abandoned(*worker, *request, locked);
  } else {
    scheduler_.release(worker->key);
  }
  after_call(*worker, kind, locked);
  dispatches = take_queued_dispatches(locked);
  return held;
}

// What the worker's state makes of a finished call: a drained worker ends,
// a worker past max_requests is recycled, a refused call brings a probe.
void Pool::after_call(Worker& worker, TransportResult::Kind kind, const Locked& locked) {
  locked.held();
  const WorkerKey key = worker.key;
  if (worker.phase == WorkerPhase::draining && worker.inflight.empty()) {
    post([this, key] { terminate_drained(key); });
  } else if (config_.max_requests > 0 && worker.served >= config_.max_requests && worker.phase == WorkerPhase::ready &&
             !worker.recycled) {
    post([this, key] { recycle(key, RecycleReason::max_requests); });
  }
  // Its socket refused the call: dead, wedged or a passing fault. Out of
  // routing until a ping tells which (an exit comes first if dead).
  if (kind == TransportResult::Kind::unavailable && !worker.ending() && !stopping_ &&
      call_refused(worker.health) == HealthAction::probe) {
    scheduler_.set_routable(key, false);
    post([this, key] { probe_unavailable(key); });
  }
}

void Pool::release_held(WorkerKey key, RequestId id) {
  std::shared_ptr<Request> request;
  Outcome outcome;
  {
    Lock lock(mutex_);
    auto* worker = find_worker(key, Locked(lock));
    if (worker == nullptr) return;  // its exit answered the call
    auto it = worker->held.find(id);
    if (it == worker->held.end()) return;
    request = std::move(it->second.first);
    outcome = std::move(it->second.second);
    worker->held.erase(it);
    requests_.erase(id);
  }
  finish(request, std::move(outcome));
}

void Pool::finish(const std::shared_ptr<Request>& request, Outcome&& outcome) {
  request->finish(std::move(outcome), [this](const Outcome& delivered) {
    if (!delivered.ok) errors_.fetch_add(1, std::memory_order_relaxed);
  });
}

// ------------------------------------------------------------------ queue

void Pool::arm_queue_timer() {
  if (queue_timer_) loop_.cancel_timer(*queue_timer_);
  queue_timer_.reset();
  std::optional<TimePoint> next;
  {
    Lock lock(mutex_);
    next = scheduler_.next_deadline();
  }
  if (next) queue_timer_ = at(*next, [this] { expire_queue(); });
}

void Pool::expire_queue() {
  queue_timer_.reset();
  std::vector<std::shared_ptr<Request>> expired;
  {
    Lock lock(mutex_);
    for (auto id : scheduler_.expire(now())) {
      auto it = requests_.find(id);
      if (it == requests_.end()) continue;
      expired.push_back(std::move(it->second));
      requests_.erase(it);
    }
    counters_.queue_timeouts += expired.size();
  }
  for (auto& request : expired) {
    const auto waited = std::min(config_.queue_timeout, request->call.timeout);
    finish(request, errors::failure(errors::queue_timeout(config_.name, waited)));
  }
  arm_queue_timer();
}

}  // namespace snakepit::core
