#include "pool.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <functional>
#include <system_error>

#include <fmt/format.h>
#include <simdjson.h>

#include "call_outcome.hpp"
#include "child_fds.hpp"
#include "health.hpp"
#include "pool_errors.hpp"
#include "python_error.hpp"
#include "spawner.hpp"

namespace snakepit::core {

struct Pool::Request {
  RequestId id = 0;
  CallRequest call;
  std::unique_ptr<Responder> responder;
  TimePoint submitted;
  WorkerKey worker = 0;
  std::string worker_id;
  std::atomic<bool> finished{false};
  // Its worker's exit took it (pool lock held): that exit answers it, with
  // the cause, even if its transport error arrives first.
  bool taken_by_exit = false;

  std::mutex handle_mutex;
  std::shared_ptr<CallHandle> handle;
  bool cancel_requested = false;

  // The one place an outcome leaves; later attempts are dropped. True when
  // this one was delivered. `before` runs first, so whoever sees the
  // outcome also sees what it did (the error count).
  template <class Before>
  bool finish(Outcome&& outcome, Before&& before) {
    if (finished.exchange(true)) return false;
    if (outcome.worker_id.empty()) outcome.worker_id = worker_id;
    before(outcome);
    responder->deliver(std::move(outcome));
    return true;
  }
};

struct Pool::Worker {
  enum class State { starting, ready, draining };
  WorkerKey key = 0;
  std::size_t slot = 0;
  std::string id;
  std::string socket_path;
  pid_t pid = -1;  // the worker process, leader of its process group
  UniqueFd pidfd, ready_fd, out_fd, err_fd, status_fd;  // pidfd and status_fd: its guard's
  State state = State::starting;
  std::shared_ptr<WorkerConnection> connection;
  std::string ready_buffer, out_buffer, err_buffer;
  std::deque<std::string> stderr_tail;
  std::unordered_map<RequestId, std::shared_ptr<Request>> inflight;
  std::uint64_t served = 0;
  bool start_reported = false;  // a ready line or a start error arrived
  bool replaced = false;        // recycled: its slot's successor is on its way
  bool ending = false;          // signalled by the pool (retired, killed, shutdown): its exit is coming
  const char* killed_for = nullptr;  // the pool killed it, for this reason
  Health health;
  // Calls answered to their callers (timed out, cancelled) that the worker
  // may still be running: each keeps its scheduler slot until it is done.
  std::map<RequestId, AbandonedCall> abandoned;
  // Calls refused with UNAVAILABLE, their outcome held for a while: if the
  // worker's exit comes first, they end as worker_exited with its cause.
  std::map<RequestId, std::pair<std::shared_ptr<Request>, Outcome>> held;
  std::optional<EventLoop::TimerId> startup_timer, heartbeat_timer, ttl_timer, kill_timer, abandoned_timer;

  void cancel_timers(EventLoop& loop) {
    for (auto* timer : {&startup_timer, &heartbeat_timer, &ttl_timer, &kill_timer, &abandoned_timer}) {
      if (*timer) loop.cancel_timer(**timer);
      timer->reset();
    }
  }
};

namespace {

constexpr std::size_t kStderrTail = 40;

Outcome error_outcome(ErrorCategory category, std::string reason, std::string message) {
  Outcome outcome;
  outcome.error.category = category;
  outcome.error.reason = std::move(reason);
  outcome.error.message = std::move(message);
  return outcome;
}

std::string join_tail(const std::deque<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text.append(line).push_back('\n');
  return text;
}

}  // namespace

Pool::Pool(PoolConfig config, std::shared_ptr<Transport> transport, std::shared_ptr<EventSink> sink)
    : config_(std::move(config)),
      transport_(std::move(transport)),
      sink_(std::move(sink)),
      scheduler_(config_.max_queue),
      slots_(static_cast<std::size_t>(std::max(config_.pool_size, 0))) {}

Pool::~Pool() {
  // Normally stop() ran already; this only covers an abandoned pool.
  std::unique_lock lock(mutex_);
  for (auto& [key, worker] : workers_) signal_group(worker->pid, SIGKILL);
}

void Pool::start() {
  {
    std::lock_guard lock(mutex_);
    if (started_) return;
    started_ = true;
  }
  // The loop runs only while this pool exists (it is a member).
  loop_.set_error_handler([this](const std::string& what) {
    emit(PoolEvent{PoolEvent::Type::internal_error, {}, 0, {}, "pool " + config_.name + ": " + what, {}});
  });
  loop_.start();
  loop_.post([self = shared_from_this()] {
    self->spawn_batch(0);
    self->sweep_sessions();
  });
}

void Pool::emit(PoolEvent&& event) noexcept {
  if (sink_) sink_->emit(std::move(event));
}

Pool::Worker* Pool::find_worker(WorkerKey key) {
  auto it = workers_.find(key);
  return it == workers_.end() ? nullptr : it->second.get();
}

HealthRules Pool::health_rules() const {
  return HealthRules{config_.ping_interval, config_.heartbeat_initial_delay, config_.max_missed_heartbeats,
                     config_.heartbeat_dependent, config_.overrun_grace};
}

// ---------------------------------------------------------------- spawning

void Pool::spawn_batch(std::size_t first_slot) {
  const std::size_t batch = static_cast<std::size_t>(std::max(config_.startup_batch_size, 1));
  const std::size_t end = std::min(slots_.size(), first_slot + batch);
  for (std::size_t slot = first_slot; slot < end; ++slot) spawn_worker(slot);
  if (end < slots_.size()) {
    loop_.add_timer(SteadyClock::now() + config_.startup_batch_delay,
                    [self = shared_from_this(), end] { self->spawn_batch(end); });
  }
}

void Pool::spawn_worker(std::size_t slot) {
  std::unique_lock lock(mutex_);
  if (stopping_) return;
  const WorkerKey key = next_worker_++;
  auto worker = std::make_unique<Worker>();
  worker->key = key;
  worker->slot = slot;
  worker->id = config_.name + "_worker_" + std::to_string(slot + 1) + "_" + std::to_string(key);
  worker->socket_path = config_.runtime_dir + "/" + worker->id + ".sock";
  lock.unlock();

  SpawnSpec spec;
  spec.executable = config_.executable;
  spec.argv.push_back(config_.executable);
  spec.argv.insert(spec.argv.end(), config_.worker_argv.begin(), config_.worker_argv.end());
  for (const char* arg : {"--socket", worker->socket_path.c_str(), "--worker-id", worker->id.c_str(),
                          "--snakepit-run-id", config_.run_id.c_str()})
    spec.argv.emplace_back(arg);
  // The guard holds the lifeline; the worker needs no watchdog of its own.
  spec.argv.insert(spec.argv.end(), {"--ready-fd", std::to_string(kReadyFd), "--lifeline-fd", "-1"});
  spec.env = config_.env;
  spec.lifeline_read_fd = config_.lifeline_fd;
  spec.working_dir = config_.working_dir;

  ::unlink(worker->socket_path.c_str());
  SpawnedProcess process;
  try {
    process = spawn_guarded(spec, config_.guard);
  } catch (const std::system_error& e) {
    Error error;
    error.category = ErrorCategory::worker;
    error.reason = "spawn_failed";
    error.message = "could not start " + config_.executable + ": " + e.what();
    error.worker_id = worker->id;
    lock.lock();
    counters_.last_start_error = error;  // before the event, as in fail_start
    lock.unlock();
    emit(PoolEvent{PoolEvent::Type::worker_start_failed, worker->id, 0, {}, error.message, error});
    schedule_respawn(slot);
    return;
  }

  worker->pid = process.pid;
  worker->pidfd = std::move(process.pidfd);
  worker->ready_fd = std::move(process.ready);
  worker->out_fd = std::move(process.out);
  worker->err_fd = std::move(process.err);
  worker->status_fd = std::move(process.status);
  const std::string id = worker->id;
  const int pid = worker->pid;
  const int pidfd = worker->pidfd.get(), ready_fd = worker->ready_fd.get();
  const int out_fd = worker->out_fd.get(), err_fd = worker->err_fd.get();

  lock.lock();
  scheduler_.add_worker(key, config_.capacity_per_worker);
  workers_.emplace(key, std::move(worker));
  lock.unlock();

  auto self = shared_from_this();
  try {
    // The pidfd last: a worker that already wrote its ready line (or error)
    // and exited has both ready now, and epoll reports them in this order.
    loop_.watch(ready_fd, [self, key](std::uint32_t) { self->on_ready_pipe(key); });
    loop_.watch(out_fd, [self, key](std::uint32_t) { self->on_output(key, false); });
    loop_.watch(err_fd, [self, key](std::uint32_t) { self->on_output(key, true); });
    if (pidfd >= 0) loop_.watch(pidfd, [self, key](std::uint32_t) { self->on_exit(key); });
  } catch (const std::system_error& e) {
    // A worker the loop cannot watch could never be tracked: end it, forget
    // it and start another, as for a failed spawn.
    signal_group(pid, SIGKILL);
    for (int fd : {ready_fd, out_fd, err_fd, pidfd}) loop_.unwatch(fd);
    lock.lock();
    scheduler_.remove_worker(key);
    auto owned = std::move(workers_.at(key));
    workers_.erase(key);
    lock.unlock();
    emit(PoolEvent{PoolEvent::Type::internal_error, id, pid, {}, std::string("cannot watch worker: ") + e.what(), {}});
    schedule_respawn(slot);
    return;
  }
  if (pidfd < 0) loop_.post([self, key] { self->on_exit(key); });  // exited before we could watch it
  const auto timer = loop_.add_timer(SteadyClock::now() + config_.startup_timeout,
                                     [self, key] { self->on_startup_timeout(key); });
  lock.lock();
  if (auto* w = find_worker(key)) w->startup_timer = timer;
  lock.unlock();
  emit(PoolEvent{PoolEvent::Type::worker_spawned, id, pid, {}, {}, {}});
}

void Pool::schedule_respawn(std::size_t slot) {
  std::unique_lock lock(mutex_);
  if (stopping_) return;
  auto& state = slots_[slot];
  const int failures = state.failures++;
  Millis delay{0};
  if (failures > 0) {
    const auto shift = std::min(failures - 1, 16);
    delay = std::min<Millis>(config_.max_restart_backoff, Millis(config_.restart_backoff.count() << shift));
  }
  ++counters_.worker_restarts;
  lock.unlock();
  loop_.add_timer(SteadyClock::now() + delay, [self = shared_from_this(), slot] { self->spawn_worker(slot); });
}

void Pool::on_startup_timeout(WorkerKey key) {
  std::unique_lock lock(mutex_);
  auto* worker = find_worker(key);
  if (worker == nullptr || worker->state != Worker::State::starting) return;
  worker->startup_timer.reset();
  Error error;
  error.category = ErrorCategory::worker;
  error.reason = "startup_timeout";
  error.message = "worker " + worker->id + " did not report ready within " +
                  std::to_string(config_.startup_timeout.count()) + " ms";
  error.traceback = join_tail(worker->stderr_tail);
  error.worker_id = worker->id;
  fail_start(*worker, std::move(error));
  signal_group(worker->pid, SIGKILL);
}

// ------------------------------------------------------------- worker pipes

void Pool::on_ready_pipe(WorkerKey key) {
  std::unique_lock lock(mutex_);
  auto* worker = find_worker(key);
  if (worker == nullptr || !worker->ready_fd.valid()) return;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(worker->ready_fd.get(), buffer, sizeof buffer)) > 0) worker->ready_buffer.append(buffer, n);
  const bool closed = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
  const auto newline = worker->ready_buffer.find('\n');
  if (newline == std::string::npos && !closed) return;

  const int fd = worker->ready_fd.get();
  std::string line = worker->ready_buffer.substr(0, newline);
  worker->ready_buffer.clear();
  lock.unlock();
  loop_.unwatch(fd);
  if (newline == std::string::npos) on_output(key, true);  // no line: its stderr says why
  lock.lock();
  worker = find_worker(key);
  if (worker == nullptr) return;
  worker->ready_fd.reset();
  if (worker->start_reported) return;  // already failed (startup timeout): being killed

  simdjson::dom::parser parser;
  simdjson::dom::element root;
  std::string_view status;
  const bool parsed = !line.empty() && !parser.parse(line.data(), line.size(), true).get(root) &&
                      !root["status"].get(status);
  if (parsed && status == "ready") {
    // Channel creation stays outside the pool lock that every call takes.
    const std::string socket_path = worker->socket_path;
    lock.unlock();
    auto connection = transport_->connect(socket_path);
    lock.lock();
    worker = find_worker(key);
    if (worker == nullptr) return;
    std::vector<Dispatch> dispatches;
    mark_ready(*worker, std::move(connection), dispatches);
    const std::string id = worker->id;
    const int pid = worker->pid;
    lock.unlock();
    emit(PoolEvent{PoolEvent::Type::worker_ready, id, pid, {}, {}, {}});
    for (auto& [request, connection] : dispatches) start_call(request, connection);
    return;
  }

  Error error;
  error.category = ErrorCategory::worker;
  error.reason = "startup_failed";
  error.worker_id = worker->id;
  if (parsed) parse_python_error(line, error);  // an object: it has "status"
  if (error.message.empty()) {
    error.message = "worker " + worker->id + " closed its ready pipe without reporting ready";
    error.traceback = join_tail(worker->stderr_tail);
  }
  fail_start(*worker, std::move(error));
  // It will never serve: if it does not exit by itself, end it so its slot respawns.
  loop_.add_timer(SteadyClock::now() + config_.graceful_shutdown, [self = shared_from_this(), key] {
    std::lock_guard lock(self->mutex_);
    if (auto* w = self->find_worker(key)) signal_group(w->pid, SIGKILL);
  });
}

void Pool::mark_ready(Worker& worker, std::shared_ptr<WorkerConnection> connection,
                      std::vector<Dispatch>& dispatches) {
  worker.state = Worker::State::ready;
  worker.start_reported = true;
  if (worker.startup_timer) {
    loop_.cancel_timer(*worker.startup_timer);
    worker.startup_timer.reset();
  }
  worker.connection = std::move(connection);
  auto& slot = slots_[worker.slot];
  slot.failures = 0;
  scheduler_.set_routable(worker.key, true);
  if (slot.retiring != 0) {
    retire(slot.retiring, worker);
    slot.retiring = 0;
  }
  dispatches = take_queued_dispatches();
  auto self = shared_from_this();
  const WorkerKey key = worker.key;
  if (config_.heartbeat_enabled)
    worker.heartbeat_timer = loop_.add_timer(first_ping_at(SteadyClock::now(), health_rules()),
                                             [self, key] { self->send_heartbeat(key); });
  if (config_.worker_ttl.count() > 0) {
    std::uniform_real_distribution<double> spread(0.0, config_.ttl_jitter);
    const auto jitter = Millis(static_cast<long long>(config_.worker_ttl.count() * spread(jitter_random_)));
    worker.ttl_timer = loop_.add_timer(SteadyClock::now() + config_.worker_ttl + jitter,
                                       [self, key] { self->recycle(key, "ttl_expired"); });
  }
}

// ------------------------------------------------------ heartbeat, recycling

void Pool::send_heartbeat(WorkerKey key) {
  std::shared_ptr<WorkerConnection> connection;
  {
    std::lock_guard lock(mutex_);
    auto* worker = find_worker(key);
    if (worker == nullptr || worker->ending || stopping_) return;
    worker->heartbeat_timer = loop_.add_timer(SteadyClock::now() + config_.ping_interval,
                                              [self = shared_from_this(), key] { self->send_heartbeat(key); });
    connection = worker->connection;
  }
  if (!connection) return;
  std::weak_ptr<Pool> weak = weak_from_this();
  connection->ping(config_.ping_timeout, false, [weak, key](bool ok) {
    if (auto pool = weak.lock()) pool->loop_.post([pool, key, ok] { pool->on_heartbeat(key, ok); });
  });
}

void Pool::on_heartbeat(WorkerKey key, bool ok) {
  std::unique_lock lock(mutex_);
  auto* worker = find_worker(key);
  if (worker == nullptr || worker->ending || stopping_) return;  // pings in flight when it was signalled
  const auto verdict = heartbeat_answered(worker->health, ok, health_rules());
  if (!verdict.timed_out) return;
  ++counters_.heartbeat_failures;
  const std::string id = worker->id;
  const std::string missed = std::to_string(verdict.missed);
  const pid_t pid = worker->pid;
  if (verdict.action == HealthAction::kill) kill_worker(*worker, "missed heartbeats");
  lock.unlock();
  emit(PoolEvent{PoolEvent::Type::heartbeat_timeout, id, pid, {}, missed, {}});
}

void Pool::recycle(WorkerKey key, const char* reason) {
  std::unique_lock lock(mutex_);
  auto* worker = find_worker(key);
  if (worker == nullptr || worker->state != Worker::State::ready || worker->replaced || worker->ending ||
      stopping_)
    return;
  // Start its successor; it keeps serving until that one is ready (retire),
  // so a slow model load never leaves the slot without a worker.
  worker->replaced = true;
  if (worker->ttl_timer) loop_.cancel_timer(*worker->ttl_timer);
  worker->ttl_timer.reset();
  slots_[worker->slot].retiring = key;
  ++counters_.recycles;
  const std::size_t slot = worker->slot;
  const std::string id = worker->id;
  const pid_t pid = worker->pid;
  lock.unlock();
  emit(PoolEvent{PoolEvent::Type::worker_recycled, id, pid, {}, reason, {}});
  spawn_worker(slot);
}

void Pool::retire(WorkerKey key, const Worker& successor) {
  auto* worker = find_worker(key);
  if (worker == nullptr) return;
  // Out of routing; its sessions and the calls waiting for it move to the
  // successor; its running calls finish, then it is terminated.
  worker->state = Worker::State::draining;
  scheduler_.set_routable(key, false);
  for (auto& [session_id, session] : sessions_) {
    if (session.worker != key) continue;
    session.worker = successor.key;
    session.worker_id = successor.id;
  }
  scheduler_.retarget_required(key, successor.key);
  if (worker->inflight.empty())
    loop_.post([self = shared_from_this(), key] { self->terminate_drained(key); });
}

void Pool::kill_worker(Worker& worker, const char* why) {
  worker.ending = true;
  worker.killed_for = why;
  scheduler_.set_routable(worker.key, false);
  signal_group(worker.pid, SIGKILL);
}

void Pool::probe_unavailable(WorkerKey key) {
  std::shared_ptr<WorkerConnection> connection;
  {
    std::lock_guard lock(mutex_);
    auto* worker = find_worker(key);
    if (worker == nullptr || worker->ending || stopping_ || !worker->connection) return;
    connection = worker->connection;
  }
  std::weak_ptr<Pool> weak = weak_from_this();
  connection->ping(config_.ping_timeout, true, [weak, key](bool ok) {
    if (auto pool = weak.lock()) pool->loop_.post([pool, key, ok] { pool->on_probe(key, ok); });
  });
}

void Pool::on_probe(WorkerKey key, bool ok) {
  std::vector<Dispatch> dispatches;
  std::vector<std::pair<std::shared_ptr<Request>, Outcome>> released;
  std::string message;
  {
    std::lock_guard lock(mutex_);
    auto* worker = find_worker(key);
    if (worker == nullptr || worker->ending || stopping_) return;
    if (probe_answered(worker->health, ok) == HealthAction::kill) {
      // Dead or wedged: its exit fails what it runs and brings a replacement.
      kill_worker(*worker, "it refused a call and did not answer a ping");
      message = "worker " + worker->id + " refused a call and does not answer a ping; killing it";
    } else {
      // A passing fault: the held calls end as they were refused.
      for (auto& [id, entry] : worker->held) {
        requests_.erase(id);
        released.push_back(std::move(entry));
      }
      worker->held.clear();
      if (worker->state == Worker::State::ready) {
        scheduler_.set_routable(key, true);  // back in service
        dispatches = take_queued_dispatches();
      }
    }
  }
  for (auto& [request, outcome] : released) finish(request, std::move(outcome));
  if (!message.empty()) emit(PoolEvent{PoolEvent::Type::internal_error, {}, 0, {}, std::move(message), {}});
  for (auto& [request, connection] : dispatches) start_call(request, connection);
}

void Pool::terminate_drained(WorkerKey key) {
  std::lock_guard lock(mutex_);
  auto* worker = find_worker(key);
  if (worker == nullptr || worker->kill_timer) return;
  // Shutting down, it stops answering pings: not a heartbeat failure.
  worker->ending = true;
  if (worker->heartbeat_timer) loop_.cancel_timer(*worker->heartbeat_timer);
  worker->heartbeat_timer.reset();
  signal_group(worker->pid, SIGTERM);
  worker->kill_timer = loop_.add_timer(SteadyClock::now() + config_.graceful_shutdown, [self = shared_from_this(), key] {
    std::lock_guard lock(self->mutex_);
    if (auto* w = self->find_worker(key)) signal_group(w->pid, SIGKILL);
  });
}

void Pool::fail_start(Worker& worker, Error error) {
  worker.start_reported = true;
  counters_.last_start_error = error;
  if (worker.startup_timer) {
    loop_.cancel_timer(*worker.startup_timer);
    worker.startup_timer.reset();
  }
  PoolEvent event{PoolEvent::Type::worker_start_failed, worker.id, worker.pid, {}, error.message, std::move(error)};
  emit(std::move(event));
}

void Pool::on_output(WorkerKey key, bool is_stderr) {
  std::vector<std::string> lines;
  std::string id;
  int fd = -1;
  {
    std::lock_guard lock(mutex_);
    auto* worker = find_worker(key);
    if (worker == nullptr) return;
    const auto& pipe = is_stderr ? worker->err_fd : worker->out_fd;
    if (!pipe.valid()) return;
    fd = pipe.get();
  }
  // Read without the pool lock (calls take it); only this thread closes the fd.
  std::string received;
  char chunk[8192];
  ssize_t n;
  while ((n = ::read(fd, chunk, sizeof chunk)) > 0) received.append(chunk, static_cast<std::size_t>(n));
  const bool closed = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
  {
    std::lock_guard lock(mutex_);
    auto* worker = find_worker(key);
    if (worker == nullptr) return;
    auto& pipe = is_stderr ? worker->err_fd : worker->out_fd;
    auto& buffer = is_stderr ? worker->err_buffer : worker->out_buffer;
    buffer += received;
    std::size_t start = 0, newline;
    while ((newline = buffer.find('\n', start)) != std::string::npos) {
      lines.emplace_back(buffer, start, newline - start);
      start = newline + 1;
    }
    buffer.erase(0, start);
    if (closed && !buffer.empty()) lines.push_back(std::exchange(buffer, {}));
    if (is_stderr) {
      for (const auto& line : lines) {
        worker->stderr_tail.push_back(line);
        if (worker->stderr_tail.size() > kStderrTail) worker->stderr_tail.pop_front();
      }
    }
    id = worker->id;
    if (closed) {
      loop_.unwatch(fd);
      pipe.reset();
    }
  }
  for (auto& line : lines)
    emit(PoolEvent{PoolEvent::Type::worker_output, id, 0, is_stderr ? "stderr" : "stdout", std::move(line), {}});
}

void Pool::on_exit(WorkerKey key) {
  std::unique_lock lock(mutex_);
  auto* worker = find_worker(key);
  if (worker == nullptr) return;
  // The guard's exit: it wrote the worker's wait status before it ended.
  if (worker->pidfd.valid() && !try_reap(worker->pidfd.get())) return;
  const int status = worker->status_fd.valid() ? read_guard_status(worker->status_fd.get()) : kStatusUnknown;
  // Whatever it started (its process group) goes with it, now, not when the
  // lifeline closes. The group id cannot have been reused this soon.
  signal_group(worker->pid, SIGKILL);
  auto& slot = slots_[worker->slot];
  if (slot.retiring == key) slot.retiring = 0;  // died before its successor was ready
  lock.unlock();
  // Whatever the worker printed last is often why it died.
  on_output(key, true);
  on_output(key, false);
  lock.lock();
  worker = find_worker(key);
  if (worker == nullptr) return;

  for (auto* fd : {&worker->pidfd, &worker->ready_fd, &worker->out_fd, &worker->err_fd}) {
    if (fd->valid()) loop_.unwatch(fd->get());
  }
  worker->cancel_timers(loop_);
  ExitCause cause = exit_cause(status);
  // Killed by the pool: its SIGKILL is ours, not a crash of the worker's
  // own (one that died of something else first still says what).
  const bool ours = worker->killed_for != nullptr && (status == kStatusUnknown || cause.signal == SIGKILL);
  const std::string how =
      ours ? fmt::format("was killed by the pool ({})", worker->killed_for) : describe_exit(status);
  if (ours) cause = {};
  if (!worker->start_reported) {
    Error error;
    error.category = ErrorCategory::worker;
    error.reason = "startup_failed";
    error.message = "worker " + worker->id + " " + how + " before reporting ready";
    error.traceback = join_tail(worker->stderr_tail);
    error.worker_id = worker->id;
    error.exit_status = cause.exit_status;
    error.exit_signal = cause.signal;
    fail_start(*worker, std::move(error));
  }
  auto owned = std::move(workers_.at(key));
  workers_.erase(key);
  scheduler_.remove_worker(key);
  auto inflight = std::move(owned->inflight);
  for (auto& [id, held] : owned->held) inflight.emplace(id, std::move(held.first));
  for (auto& [id, request] : inflight) {
    requests_.erase(id);
    request->taken_by_exit = true;
  }
  std::vector<std::shared_ptr<Request>> stranded;  // waited for this worker only
  for (auto id : scheduler_.remove_required(key)) {
    stranded.push_back(requests_.at(id));
    requests_.erase(id);
  }
  const bool stopping = stopping_;
  if (workers_.empty()) all_exited_.notify_all();
  lock.unlock();

  ::unlink(owned->socket_path.c_str());
  for (auto& request : stranded) {
    auto outcome = error_outcome(ErrorCategory::pool, "session_worker_unavailable",
                                 "the worker of session " + request->call.session_id + ", " + owned->id + ", " + how);
    finish(request, std::move(outcome));
  }
  for (auto& [id, request] : inflight) {
    auto outcome = error_outcome(ErrorCategory::worker, "worker_exited",
                                 "worker " + owned->id + " " + how + " while running the request");
    outcome.error.exit_status = cause.exit_status;
    outcome.error.exit_signal = cause.signal;
    finish(request, std::move(outcome));
  }
  emit(PoolEvent{PoolEvent::Type::worker_exited, owned->id, owned->pid, {}, how, {}});
  if (!stopping && !owned->replaced) schedule_respawn(owned->slot);
}

// ----------------------------------------------------------------- requests

namespace {
Error pool_error(std::string reason, std::string message) {
  Error error;
  error.category = ErrorCategory::pool;
  error.reason = std::move(reason);
  error.message = std::move(message);
  return error;
}
}  // namespace

std::optional<Error> Pool::submit(RequestId id, CallRequest call, std::unique_ptr<Responder> responder) {
  auto request = std::make_shared<Request>();
  request->call = std::move(call);
  request->responder = std::move(responder);
  request->submitted = SteadyClock::now();
  request->id = id;
  const auto& session_id = request->call.session_id;
  const auto affinity = request->call.affinity;

  std::unique_lock lock(mutex_);
  if (stopping_) return pool_error("pool_not_initialized", "pool " + config_.name + " is shutting down");
  ++counters_.requests;

  // Session affinity: the worker this session ran on before, if any.
  WorkerKey bound = 0;
  if (!session_id.empty()) {
    auto it = sessions_.find(session_id);
    if (it != sessions_.end()) {
      it->second.last_used = request->submitted;
      const auto* worker = find_worker(it->second.worker);
      if (worker != nullptr && worker->state != Worker::State::draining) {
        bound = it->second.worker;
      } else if (affinity != Affinity::hint) {
        errors_.fetch_add(1, std::memory_order_relaxed);
        const std::string lost = it->second.worker_id;
        sessions_.erase(it);  // the next call starts the session afresh
        return pool_error("session_worker_unavailable",
                          "session " + session_id + " was bound to worker " + lost + ", which is gone");
      } else {
        sessions_.erase(it);
      }
    }
  }

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
    return pool_error("worker_busy", "the worker of session " + session_id + " is busy");
  } else if ((bound == 0 && !group_waiting) || affinity == Affinity::hint) {
    key = scheduler_.acquire();
  }

  if (key) {
    auto* worker = find_worker(*key);
    assign(request, *worker);
    requests_.emplace(id, request);
    auto connection = worker->connection;
    const bool filled = config_.capacity_per_worker > 1 &&
                        scheduler_.load(*key)->inflight == config_.capacity_per_worker;
    const std::string worker_id = worker->id;
    lock.unlock();
    if (filled) emit(PoolEvent{PoolEvent::Type::capacity_reached, worker_id, 0, {}, {}, {}});
    start_call(request, connection);
    return std::nullopt;
  }

  const auto wait = std::min(config_.queue_timeout, request->call.timeout);
  const WorkerKey required = affinity == Affinity::strict_queue ? bound : 0;
  if (scheduler_.enqueue(id, request->submitted + wait, required, group) == Scheduler::EnqueueResult::full) {
    ++counters_.saturated;
    errors_.fetch_add(1, std::memory_order_relaxed);
    return pool_error("pool_saturated",
                      "pool " + config_.name + " queue is full (" + std::to_string(config_.max_queue) + " waiting)");
  }
  requests_.emplace(id, request);
  // Per-call timeouts make deadlines non-monotonic: re-arm if this one is due first.
  const bool due_first = scheduler_.next_deadline() == request->submitted + wait;
  lock.unlock();
  if (due_first) loop_.post([self = shared_from_this()] { self->arm_queue_timer(); });
  return std::nullopt;
}

void Pool::count_rejected() {
  std::lock_guard lock(mutex_);
  ++counters_.requests;
  errors_.fetch_add(1, std::memory_order_relaxed);
}

void Pool::assign(const std::shared_ptr<Request>& request, Worker& worker) {
  request->worker = worker.key;
  request->worker_id = worker.id;
  worker.inflight.emplace(request->id, request);
  // A session's first call binds it to the worker that runs it.
  const auto& session_id = request->call.session_id;
  if (!session_id.empty() && sessions_.find(session_id) == sessions_.end())
    sessions_.emplace(session_id, Session{worker.key, worker.id, request->submitted});
}

void Pool::grant(RequestId id, int credits) {
  std::shared_ptr<Request> request;
  {
    std::lock_guard lock(mutex_);
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

void Pool::sweep_sessions() {
  {
    std::lock_guard lock(mutex_);
    const auto oldest = SteadyClock::now() - config_.session_ttl;
    for (auto it = sessions_.begin(); it != sessions_.end();)
      it = it->second.last_used < oldest ? sessions_.erase(it) : std::next(it);
  }
  const auto period = std::clamp<Millis>(config_.session_ttl / 4, Millis(1000), Millis(60000));
  loop_.add_timer(SteadyClock::now() + period, [self = shared_from_this()] { self->sweep_sessions(); });
}

void Pool::cancel(RequestId id) {
  std::unique_lock lock(mutex_);
  auto it = requests_.find(id);
  if (it == requests_.end()) return;
  auto request = it->second;
  if (scheduler_.remove_queued(id)) {
    requests_.erase(it);
    lock.unlock();
    finish(request, error_outcome(ErrorCategory::timeout, "cancelled", "request cancelled by its caller"));
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

void Pool::start_call(const std::shared_ptr<Request>& request, const std::shared_ptr<WorkerConnection>& connection) {
  const auto deadline = request->submitted + request->call.timeout;
  std::weak_ptr<Pool> weak = weak_from_this();
  auto done = [weak, request](TransportResult&& result) {
    if (auto pool = weak.lock()) {
      pool->on_call_done(request, std::move(result));
    } else {
      // No pool to count it.
      request->finish(error_outcome(ErrorCategory::pool, "pool_not_initialized", "pool stopped"), [](const Outcome&) {});
    }
  };
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

void Pool::on_call_done(const std::shared_ptr<Request>& request, TransportResult&& result) {
  const auto result_kind = result.kind;
  Outcome outcome = outcome_from(std::move(result), CallFacts{request->call.tool, request->call.timeout, request->worker_id});
  std::vector<Dispatch> dispatches;
  bool held = false;
  bool taken_by_exit = false;
  {
    std::lock_guard lock(mutex_);
    taken_by_exit = request->taken_by_exit;
    auto* worker = find_worker(request->worker);
    held = worker != nullptr && result_kind == TransportResult::Kind::unavailable && !stopping_;
    // A held call stays in requests_ so stop() still answers it.
    if (!held) requests_.erase(request->id);
    if (worker != nullptr) {
      worker->inflight.erase(request->id);
      if (held) {
        worker->held.emplace(request->id, std::make_pair(request, std::move(outcome)));
        loop_.add_timer(SteadyClock::now() + config_.exit_wait,
                        [self = shared_from_this(), key = worker->key, id = request->id] { self->release_held(key, id); });
      }
      ++worker->served;
      if (may_still_run(result_kind) && !worker->ending && !stopping_) {
        hold_abandoned(*worker, *request);
      } else {
        scheduler_.release(worker->key);
      }
      if (worker->state == Worker::State::draining && worker->inflight.empty()) {
        loop_.post([self = shared_from_this(), key = worker->key] { self->terminate_drained(key); });
      } else if (config_.max_requests > 0 && worker->served >= config_.max_requests &&
                 worker->state == Worker::State::ready && !worker->replaced) {
        loop_.post([self = shared_from_this(), key = worker->key] { self->recycle(key, "max_requests"); });
      }
      // Its socket refused the call: dead, wedged or a passing fault. Out
      // of routing until a ping tells which (an exit comes first if dead).
      if (result_kind == TransportResult::Kind::unavailable && !worker->ending && !stopping_ &&
          call_refused(worker->health) == HealthAction::probe) {
        scheduler_.set_routable(worker->key, false);
        loop_.post([self = shared_from_this(), key = worker->key] { self->probe_unavailable(key); });
      }
      dispatches = take_queued_dispatches();
    }
  }
  // The freed worker gets its next call before this reply is decoded and sent.
  for (auto& [next, connection] : dispatches) start_call(next, connection);
  if (!held && !taken_by_exit) finish(request, std::move(outcome));
}

void Pool::release_held(WorkerKey key, RequestId id) {
  std::shared_ptr<Request> request;
  Outcome outcome;
  {
    std::lock_guard lock(mutex_);
    auto* worker = find_worker(key);
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

// ------------------------------------------------------- abandoned calls

void Pool::hold_abandoned(Worker& worker, const Request& request) {
  const auto now = SteadyClock::now();
  const auto deadline = request.submitted + request.call.timeout;
  worker.abandoned[request.id] = abandon(now, deadline, request.call.tool, health_rules());
  if (!worker.abandoned_timer)
    worker.abandoned_timer = loop_.add_timer(now + config_.overrun_poll,
                                             [self = shared_from_this(), key = worker.key] { self->poll_abandoned(key); });
}

void Pool::poll_abandoned(WorkerKey key) {
  std::shared_ptr<WorkerConnection> connection;
  {
    std::lock_guard lock(mutex_);
    auto* worker = find_worker(key);
    if (worker == nullptr) return;
    worker->abandoned_timer.reset();
    if (worker->ending || stopping_ || !worker->connection) return;
    connection = worker->connection;
  }
  std::weak_ptr<Pool> weak = weak_from_this();
  connection->running(std::max(config_.overrun_poll, Millis(1000)),
                      [weak, key](std::optional<std::vector<RequestId>> running) {
                        if (auto pool = weak.lock())
                          pool->loop_.post([pool, key, running = std::move(running)]() mutable {
                            pool->on_running(key, std::move(running));
                          });
                      });
}

void Pool::on_running(WorkerKey key, std::optional<std::vector<RequestId>> running) {
  std::vector<Dispatch> dispatches;
  std::optional<PoolEvent> hung;
  {
    std::lock_guard lock(mutex_);
    auto* worker = find_worker(key);
    if (worker == nullptr || worker->ending || stopping_) return;
    const auto now = SteadyClock::now();
    auto verdict = check_abandoned(worker->abandoned, running, now);
    for (auto id : verdict.finished) {
      scheduler_.release(key);
      worker->abandoned.erase(id);
    }
    if (verdict.action == HealthAction::kill) {
      hung = PoolEvent{PoolEvent::Type::worker_hung, worker->id, worker->pid, {}, verdict.hung_tool, {}, verdict.overrun.count()};
      kill_worker(*worker, "a call overran its deadline");  // its exit frees the slots and brings a replacement
    } else {
      if (verdict.action == HealthAction::ping && !worker->abandoned_timer)
        worker->abandoned_timer = loop_.add_timer(now + config_.overrun_poll,
                                                  [self = shared_from_this(), key] { self->poll_abandoned(key); });
      dispatches = take_queued_dispatches();
    }
  }
  if (hung) emit(std::move(*hung));
  for (auto& [request, connection] : dispatches) start_call(request, connection);
}

std::vector<Pool::Dispatch> Pool::take_queued_dispatches() {
  std::vector<Dispatch> dispatches;
  for (auto [id, key] : scheduler_.dispatch_queued()) {
    auto request = requests_.at(id);
    auto* worker = find_worker(key);
    assign(request, *worker);
    dispatches.emplace_back(std::move(request), worker->connection);
  }
  return dispatches;
}

void Pool::arm_queue_timer() {
  if (queue_timer_) loop_.cancel_timer(*queue_timer_);
  queue_timer_.reset();
  std::optional<TimePoint> next;
  {
    std::lock_guard lock(mutex_);
    next = scheduler_.next_deadline();
  }
  if (next) queue_timer_ = loop_.add_timer(*next, [self = shared_from_this()] { self->expire_queue(); });
}

void Pool::expire_queue() {
  queue_timer_.reset();
  std::vector<std::shared_ptr<Request>> expired;
  {
    std::lock_guard lock(mutex_);
    for (auto id : scheduler_.expire(SteadyClock::now())) {
      auto it = requests_.find(id);
      if (it == requests_.end()) continue;
      expired.push_back(std::move(it->second));
      requests_.erase(it);
    }
    counters_.queue_timeouts += expired.size();
  }
  for (auto& request : expired) {
    const auto waited = std::min(config_.queue_timeout, request->call.timeout);
    finish(request, error_outcome(ErrorCategory::timeout, "queue_timeout",
                                  "no worker of pool " + config_.name + " became free within " +
                                      std::to_string(waited.count()) + " ms"));
  }
  arm_queue_timer();
}

// ----------------------------------------------------------------- shutdown

void Pool::begin_shutdown() {
  std::vector<std::shared_ptr<Request>> queued;
  std::vector<pid_t> groups;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    for (auto id : scheduler_.drain_queue()) {
      auto it = requests_.find(id);
      if (it == requests_.end()) continue;
      queued.push_back(std::move(it->second));
      requests_.erase(it);
    }
    for (auto& [key, worker] : workers_) {
      scheduler_.set_routable(key, false);
      worker->ending = true;
      groups.push_back(worker->pid);
    }
    if (workers_.empty()) all_exited_.notify_all();  // no exit will come to wake stop()
  }
  for (auto& request : queued)
    finish(request, error_outcome(ErrorCategory::pool, "pool_not_initialized",
                                  "pool " + config_.name + " stopped before the request ran"));
  for (auto pgid : groups) signal_group(pgid, SIGTERM);
  loop_.add_timer(SteadyClock::now() + config_.graceful_shutdown, [self = shared_from_this()] {
    std::lock_guard lock(self->mutex_);
    for (auto& [key, worker] : self->workers_) signal_group(worker->pid, SIGKILL);
  });
}

void Pool::stop() {
  {
    std::lock_guard lock(mutex_);
    if (!started_ || stopping_) return;
  }
  loop_.post([self = shared_from_this()] { self->begin_shutdown(); });
  {
    std::unique_lock lock(mutex_);
    all_exited_.wait_for(lock, config_.graceful_shutdown + Millis(3000), [this] { return stopping_ && workers_.empty(); });
    // Still here after SIGKILL and the margin: leave nothing running.
    for (auto& [key, worker] : workers_) signal_group(worker->pid, SIGKILL);
  }
  loop_.stop();
  loop_.clear();
  std::vector<std::shared_ptr<Request>> remaining;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, request] : requests_) remaining.push_back(request);
    requests_.clear();
  }
  for (auto& request : remaining)
    finish(request, error_outcome(ErrorCategory::pool, "pool_not_initialized", "pool " + config_.name + " stopped"));
}

// -------------------------------------------------------------------- stats

PoolStats Pool::stats() const {
  std::lock_guard lock(mutex_);
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

std::optional<std::string> Pool::session_worker(const std::string& session_id) const {
  std::lock_guard lock(mutex_);
  auto it = sessions_.find(session_id);
  if (it == sessions_.end()) return std::nullopt;
  return it->second.worker_id;
}

void Pool::drop_session(const std::string& session_id) {
  std::lock_guard lock(mutex_);
  sessions_.erase(session_id);
}

PoolLoad Pool::load() const {
  std::lock_guard lock(mutex_);
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
  std::lock_guard lock(mutex_);
  std::vector<WorkerInfo> infos;
  for (const auto& [key, worker] : workers_) {
    WorkerInfo info;
    info.id = worker->id;
    info.os_pid = worker->pid;
    info.state = worker->state == Worker::State::ready      ? "ready"
                 : worker->state == Worker::State::draining ? "draining"
                                                            : "starting";
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
    std::lock_guard lock(mutex_);
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
