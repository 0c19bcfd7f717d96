// Pool, routing: construction, submit (sessions, free slots, the queue),
// cancel and grant, and what every part of the pool shares.
#include "pool.hpp"

#include <signal.h>

#include <algorithm>
#include <cstdlib>
#include <functional>
#include <future>

#include <fmt/format.h>

#include "pool_errors.hpp"
#include "worker_process.hpp"

namespace snakepit::core {

Pool::Pool(PoolConfig config, std::shared_ptr<Transport> transport, std::shared_ptr<EventSink> sink, ClockFn clock)
    : config_(std::move(config)),
      transport_(std::move(transport)),
      sink_(std::move(sink)),
      clock_(clock ? std::move(clock) : ClockFn([] { return SteadyClock::now(); })),
      loop_(clock_),
      scheduler_(config_.max_queue),
      slots_(static_cast<std::size_t>(std::max(config_.pool_size, 0))) {}

Pool::~Pool() {
  // Normally stop() ran already; this only covers an abandoned pool.
  Lock lock(mutex_);
  for (auto& [key, worker] : workers_) signal_group(worker->pid, SIGKILL);
}

void Pool::start() {
  {
    Lock lock(mutex_);
    if (started_) return;
    started_ = true;
  }
  // The loop runs only while this pool exists (it is a member).
  loop_.set_error_handler([this](const std::string& what) {
    emit({}, 0, event::InternalError{fmt::format("pool {}: {}", config_.name, what)});
  });
  loop_.start();
  post([this] {
    spawn_batch(0);
    sweep_sessions();
  });
}

void Pool::clock_moved() {
  // A timer due now runs after every timer due earlier (and any they add
  // for now): once it has run, so have they.
  auto ran = std::make_shared<std::promise<void>>();
  auto done = ran->get_future();
  loop_.post([this, ran] { loop_.add_timer(now(), [ran] { ran->set_value(); }); });
  done.wait_for(std::chrono::seconds(10));  // a stopped loop runs nothing
}

void Pool::emit(PoolEvent&& event) noexcept {
  if (sink_) sink_->emit(std::move(event));
}

void Pool::emit(const std::string& worker_id, int os_pid, PoolEvent::Data data) noexcept {
  emit(PoolEvent{worker_id, os_pid, std::move(data)});
}

Pool::Worker* Pool::find_worker(WorkerKey key, const Locked& locked) {
  locked.held();
  auto it = workers_.find(key);
  return it == workers_.end() ? nullptr : it->second.get();
}

HealthRules Pool::health_rules() const {
  return HealthRules{config_.ping_interval, config_.heartbeat_initial_delay, config_.max_missed_heartbeats,
                     config_.heartbeat_dependent, config_.overrun_grace};
}

// ----------------------------------------------------------------- submit

std::optional<Error> Pool::submit(RequestId id, CallRequest call, std::unique_ptr<Responder> responder) {
  auto request = std::make_shared<Request>();
  request->call = std::move(call);
  request->responder = std::move(responder);
  request->submitted = now();
  request->id = id;
  const auto& session_id = request->call.session_id;
  const auto affinity = request->call.affinity;

  Lock lock(mutex_);
  const Locked locked(lock);
  if (stopping_) return errors::shutting_down(config_.name);
  ++counters_.requests;
  WorkerKey bound = 0;  // session affinity: the worker this session ran on before
  if (auto refused = route_session(*request, bound, locked)) return refused;

  // A strict session not bound yet whose earlier calls all wait in the
  // queue: this call waits with them, for whichever worker they get.
  const bool strict = !session_id.empty() && affinity != Affinity::hint;
  const std::uint64_t group = strict && bound == 0 ? (std::hash<std::string>{}(session_id) | 1) : 0;
  const bool group_waiting = group != 0 && scheduler_.group_waiting(group);

  std::optional<WorkerKey> key;
  if (bound != 0 && scheduler_.acquire_on(bound)) {
    key = bound;
  } else if (bound != 0 && affinity == Affinity::strict_fail_fast) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    return errors::session_worker_busy(session_id);
  } else if ((bound == 0 && !group_waiting) || affinity == Affinity::hint) {
    key = scheduler_.acquire();
  }
  if (!key) return enqueue(request, bound, group, lock);

  auto* worker = find_worker(*key, locked);
  assign(request, *worker, locked);
  requests_.emplace(id, request);
  auto connection = worker->connection;
  const bool filled = config_.capacity_per_worker > 1 && scheduler_.load(*key)->inflight == config_.capacity_per_worker;
  const std::string worker_id = worker->id;
  lock.unlock();
  if (filled) emit(worker_id, 0, event::CapacityReached{});
  start_call(request, connection);
  return std::nullopt;
}

std::optional<Error> Pool::route_session(const Request& request, WorkerKey& bound, const Locked& locked) {
  locked.held();
  const auto& session_id = request.call.session_id;
  if (session_id.empty()) return std::nullopt;
  auto binding = sessions_.lookup(session_id, request.submitted);
  if (!binding) return std::nullopt;
  const auto* worker = find_worker(binding->worker, locked);
  if (worker != nullptr && worker->keeps_sessions()) {
    bound = binding->worker;
    return std::nullopt;
  }
  std::optional<Error> error;
  if (request.call.affinity != Affinity::hint) {
    errors_.fetch_add(1, std::memory_order_relaxed);
    error = errors::session_worker_gone(session_id, binding->worker_id);
  }
  sessions_.drop(session_id);  // the next call starts the session afresh; `binding` dangles from here
  return error;
}

std::optional<Error> Pool::enqueue(const std::shared_ptr<Request>& request, WorkerKey bound, std::uint64_t group,
                                   Lock& lock) {
  const auto wait = std::min(config_.queue_timeout, request->call.timeout);
  const WorkerKey required = request->call.affinity == Affinity::strict_queue ? bound : 0;
  const auto deadline = request->submitted + wait;
  if (scheduler_.enqueue(request->id, deadline, required, group) == Scheduler::EnqueueResult::full) {
    ++counters_.saturated;
    errors_.fetch_add(1, std::memory_order_relaxed);
    return errors::pool_saturated(config_.name, config_.max_queue);
  }
  requests_.emplace(request->id, request);
  // Per-call timeouts make deadlines non-monotonic: re-arm if this one is due first.
  const bool due_first = scheduler_.next_deadline() == deadline;
  lock.unlock();
  if (due_first) post([this] { arm_queue_timer(); });
  return std::nullopt;
}

void Pool::assign(const std::shared_ptr<Request>& request, Worker& worker, const Locked& locked) {
  locked.held();
  request->worker = worker.key;
  request->worker_id = worker.id;
  worker.inflight.emplace(request->id, request);
  // A session's first call binds it to the worker that runs it.
  const auto& session_id = request->call.session_id;
  if (!session_id.empty()) sessions_.bind(session_id, worker.key, worker.id, request->submitted);
}

std::vector<Pool::Dispatch> Pool::take_queued_dispatches(const Locked& locked) {
  locked.held();
  std::vector<Dispatch> dispatches;
  for (auto [id, key] : scheduler_.dispatch_queued()) {
    auto request = requests_.at(id);
    auto* worker = find_worker(key, locked);
    assign(request, *worker, locked);
    dispatches.emplace_back(std::move(request), worker->connection);
  }
  return dispatches;
}

void Pool::sweep_sessions() {
  {
    Lock lock(mutex_);
    sessions_.sweep(now(), config_.session_ttl);
  }
  const auto period = std::clamp<Millis>(config_.session_ttl / 4, Millis(1000), Millis(60000));
  after(period, [this] { sweep_sessions(); });
}

void Pool::count_rejected() {
  Lock lock(mutex_);
  ++counters_.requests;
  errors_.fetch_add(1, std::memory_order_relaxed);
}

// ------------------------------------------------------- cancel and grant

void Pool::grant(RequestId id, int credits) {
  std::shared_ptr<Request> request;
  {
    Lock lock(mutex_);
    auto it = requests_.find(id);
    if (it == requests_.end()) return;
    request = it->second;
  }
  std::shared_ptr<CallHandle> handle;
  {
    std::lock_guard lock(request->handle_mutex);
    handle = request->handle;
  }
  if (handle) handle->grant(credits);
}

void Pool::cancel(RequestId id) {
  Lock lock(mutex_);
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  auto request = it->second;
  if (scheduler_.remove_queued(id)) {
    requests_.erase(it);
    lock.unlock();
    finish(request, errors::failure(errors::cancelled()));
    return;
  }
  lock.unlock();
  std::shared_ptr<CallHandle> handle;
  {
    std::lock_guard handle_lock(request->handle_mutex);
    request->cancel_requested = true;
    handle = request->handle;
  }
  if (handle) handle->cancel();
}

std::optional<std::string> Pool::session_worker(const std::string& session_id) const {
  Lock lock(mutex_);
  auto binding = sessions_.peek(session_id);
  if (!binding) return std::nullopt;
  return binding->worker_id;
}

void Pool::drop_session(const std::string& session_id) {
  Lock lock(mutex_);
  sessions_.drop(session_id);
}

}  // namespace snakepit::core
