// Pool, worker lifecycle: spawning, the ready line, start failures,
// output, and a worker's exit (which answers the calls it took).
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <system_error>

#include <fmt/format.h>
#include <simdjson.h>

#include "pool.hpp"
#include "pool_errors.hpp"
#include "worker_process.hpp"

namespace snakepit::core {
namespace {

// Reads what a non-blocking pipe has; true in `closed` at its end.
std::string drain_pipe(int fd, bool& closed) {
  std::string received;
  char chunk[8192];
  ssize_t n;
  while ((n = ::read(fd, chunk, sizeof chunk)) > 0) received.append(chunk, static_cast<std::size_t>(n));
  closed = n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
  return received;
}

}  // namespace

struct Pool::Exit {
  std::unique_ptr<Worker> worker;
  std::string how;
  ExitCause cause;
  std::unordered_map<RequestId, std::shared_ptr<Request>> taken;  // it was running them
  std::vector<std::shared_ptr<Request>> stranded;                 // waited for it only
  bool stopping = false;
};

void Pool::spawn_batch(std::size_t first_slot) {
  const std::size_t batch = static_cast<std::size_t>(std::max(config_.startup_batch_size, 1));
  const std::size_t end = std::min(slots_.size(), first_slot + batch);
  for (std::size_t slot = first_slot; slot < end; ++slot) spawn_worker(slot);
  if (end < slots_.size()) after(config_.startup_batch_delay, [this, end] { spawn_batch(end); });
}

void Pool::spawn_worker(std::size_t slot) {
  Lock lock(mutex_);
  if (stopping_) return;
  const WorkerKey key = next_worker_++;
  const std::string id = fmt::format("{}_worker_{}_{}", config_.name, slot + 1, key);
  auto worker = std::make_unique<Worker>(key, slot, id, fmt::format("{}/{}.sock", config_.runtime_dir, id));
  lock.unlock();

  ::unlink(worker->socket_path.c_str());
  try {
    worker->adopt(spawn_guarded(worker_spawn_spec(config_, *worker), config_.guard));
  } catch (const std::system_error& e) {
    auto error = errors::spawn_failed(id, config_.executable, e.what());
    lock.lock();
    counters_.last_start_error = error;  // before the event, as in fail_start
    lock.unlock();
    emit(id, 0, event::WorkerStartFailed{std::move(error)});
    schedule_respawn(slot);
    return;
  }
  const int pid = worker->pid;
  const Worker& tracked = *worker;
  lock.lock();
  scheduler_.add_worker(key, config_.capacity_per_worker);
  workers_.emplace(key, std::move(worker));
  lock.unlock();
  // Only this thread erases workers: `tracked` lives until its exit is handled here.
  if (!watch_worker(tracked)) return;
  const auto timer = after(config_.startup_timeout, [this, key] { on_startup_timeout(key); });
  lock.lock();
  if (auto* w = find_worker(key, Locked(lock))) w->startup_timer = timer;
  lock.unlock();
  emit(id, pid, event::WorkerSpawned{});
}

// False when the loop cannot watch it: then it is ended, forgotten and its
// slot started again, as for a failed spawn.
bool Pool::watch_worker(const Worker& worker) {
  const WorkerKey key = worker.key;
  const int pidfd = worker.pidfd.get(), ready_fd = worker.ready_fd.get();
  const int out_fd = worker.out_fd.get(), err_fd = worker.err_fd.get();
  auto self = shared_from_this();
  try {
    // The pidfd last: a worker that already wrote its ready line (or error)
    // and exited has both ready now, and epoll reports them in this order.
    loop_.watch(ready_fd, [self, key](std::uint32_t) { self->on_ready_pipe(key); });
    loop_.watch(out_fd, [self, key](std::uint32_t) { self->on_output(key, false); });
    loop_.watch(err_fd, [self, key](std::uint32_t) { self->on_output(key, true); });
    if (pidfd >= 0) loop_.watch(pidfd, [self, key](std::uint32_t) { self->on_exit(key); });
  } catch (const std::system_error& e) {
    const std::string id = worker.id;
    const int pid = worker.pid;
    const std::size_t slot = worker.slot;
    signal_group(pid, SIGKILL);
    for (int fd : {ready_fd, out_fd, err_fd, pidfd}) loop_.unwatch(fd);
    std::unique_ptr<Worker> owned;
    {
      Lock lock(mutex_);
      scheduler_.remove_worker(key);
      owned = std::move(workers_.at(key));
      workers_.erase(key);
    }
    emit(id, pid, event::InternalError{fmt::format("cannot watch worker: {}", e.what())});
    schedule_respawn(slot);
    return false;
  }
  if (pidfd < 0) post([this, key] { on_exit(key); });  // exited before we could watch it
  return true;
}

void Pool::schedule_respawn(std::size_t slot) {
  Lock lock(mutex_);
  if (stopping_) return;
  const int failures = slots_[slot].failures++;
  Millis delay{0};
  if (failures > 0) {
    const auto shift = std::min(failures - 1, 16);
    delay = std::min<Millis>(config_.max_restart_backoff, Millis(config_.restart_backoff.count() << shift));
  }
  ++counters_.worker_restarts;
  lock.unlock();
  after(delay, [this, slot] { spawn_worker(slot); });
}

void Pool::on_startup_timeout(WorkerKey key) {
  Lock lock(mutex_);
  const Locked locked(lock);
  auto* worker = find_worker(key, locked);
  if (worker == nullptr || worker->phase != WorkerPhase::starting) return;
  worker->startup_timer.reset();
  fail_start(*worker, errors::startup_timeout(worker->id, config_.startup_timeout, worker->stderr_tail()), locked);
  signal_group(worker->pid, SIGKILL);
}

void Pool::on_ready_pipe(WorkerKey key) {
  Lock lock(mutex_);
  auto* worker = find_worker(key, Locked(lock));
  if (worker == nullptr || !worker->ready_fd.valid()) return;
  bool closed = false;
  const std::string received = drain_pipe(worker->ready_fd.get(), closed);
  auto line = worker->ready_line(received, closed);
  if (!line) return;
  const int fd = worker->ready_fd.get();
  lock.unlock();
  loop_.unwatch(fd);
  if (!line->complete) on_output(key, true);  // no line: its stderr says why
  lock.lock();
  const Locked locked(lock);
  worker = find_worker(key, locked);
  if (worker == nullptr) return;
  worker->ready_fd.reset();
  if (worker->phase != WorkerPhase::starting) return;  // already failed (startup timeout): being killed

  simdjson::dom::parser parser;
  simdjson::dom::element root;
  std::string_view status;
  const bool parsed = !line->text.empty() && !parser.parse(line->text.data(), line->text.size(), true).get(root) &&
                      !root["status"].get(status);
  if (parsed && status == "ready") {
    lock.unlock();
    on_ready(key);
    return;
  }
  on_start_error(*worker, parsed ? std::string_view(line->text) : std::string_view(), locked);
}

void Pool::on_start_error(Worker& worker, std::string_view line, const Locked& locked) {
  locked.held();
  fail_start(worker, errors::startup_reported(worker.id, line, worker.stderr_tail()), locked);
  // It will never serve: if it does not exit by itself, end it so its slot respawns.
  kill_later(worker.key);
}

void Pool::kill_later(WorkerKey key) {
  after(config_.graceful_shutdown, [this, key] {
    Lock lock(mutex_);
    if (auto* w = find_worker(key, Locked(lock))) signal_group(w->pid, SIGKILL);
  });
}

void Pool::on_ready(WorkerKey key) {
  std::string socket_path;
  {
    Lock lock(mutex_);
    auto* worker = find_worker(key, Locked(lock));
    if (worker == nullptr) return;
    socket_path = worker->socket_path;
  }
  // Channel creation stays outside the pool lock that every call takes.
  auto connection = transport_->connect(socket_path);
  Lock lock(mutex_);
  const Locked locked(lock);
  auto* worker = find_worker(key, locked);
  if (worker == nullptr) return;
  mark_ready(*worker, std::move(connection), locked);
  auto dispatches = take_queued_dispatches(locked);
  const std::string id = worker->id;
  const int pid = worker->pid;
  lock.unlock();
  emit(id, pid, event::WorkerReady{});
  start_dispatches(dispatches);
}

void Pool::mark_ready(Worker& worker, std::shared_ptr<WorkerConnection> connection, const Locked& locked) {
  locked.held();
  worker.phase = WorkerPhase::ready;
  Worker::cancel_timer(loop_, worker.startup_timer);
  worker.connection = std::move(connection);
  slots_[worker.slot].failures = 0;
  scheduler_.set_routable(worker.key, true);
  if (auto* retiring = retiring_in(worker.slot, locked); retiring != nullptr && retiring != &worker)
    retire(*retiring, worker, locked);
  const WorkerKey key = worker.key;
  if (config_.heartbeat_enabled)
    worker.heartbeat_timer = after(first_ping_delay(health_rules()), [this, key] { send_heartbeat(key); });
  if (config_.worker_ttl.count() > 0) {
    std::uniform_real_distribution<double> spread(0.0, config_.ttl_jitter);
    const auto jitter = Millis(static_cast<long long>(config_.worker_ttl.count() * spread(jitter_random_)));
    worker.ttl_timer = after(config_.worker_ttl + jitter, [this, key] { recycle(key, RecycleReason::ttl_expired); });
  }
}

void Pool::fail_start(Worker& worker, Error error, const Locked& locked) {
  locked.held();
  worker.phase = WorkerPhase::stopping;  // it will never serve
  counters_.last_start_error = error;
  Worker::cancel_timer(loop_, worker.startup_timer);
  emit(worker.id, worker.pid, event::WorkerStartFailed{std::move(error)});
}

void Pool::on_output(WorkerKey key, bool is_stderr) {
  int fd = -1;
  {
    Lock lock(mutex_);
    auto* worker = find_worker(key, Locked(lock));
    if (worker == nullptr) return;
    const auto& pipe = is_stderr ? worker->err_fd : worker->out_fd;
    if (!pipe.valid()) return;
    fd = pipe.get();
  }
  // Read without the pool lock (calls take it); only this thread closes the fd.
  bool closed = false;
  const std::string received = drain_pipe(fd, closed);
  std::vector<std::string> lines;
  std::string id;
  {
    Lock lock(mutex_);
    auto* worker = find_worker(key, Locked(lock));
    if (worker == nullptr) return;
    lines = worker->output_lines(is_stderr, received, closed);
    id = worker->id;
    if (closed) {
      loop_.unwatch(fd);
      (is_stderr ? worker->err_fd : worker->out_fd).reset();
    }
  }
  const auto stream = is_stderr ? OutputStream::err : OutputStream::out;
  for (auto& line : lines) emit(id, 0, event::WorkerOutput{stream, std::move(line)});
}

void Pool::on_exit(WorkerKey key) {
  Lock lock(mutex_);
  auto* worker = find_worker(key, Locked(lock));
  if (worker == nullptr) return;
  // The guard's exit: it wrote the worker's wait status before it ended.
  if (worker->pidfd.valid() && !try_reap(worker->pidfd.get())) return;
  const int status = worker->status_fd.valid() ? read_guard_status(worker->status_fd.get()) : kStatusUnknown;
  // Whatever it started (its process group) goes with it, now, not when the
  // lifeline closes. The group id cannot have been reused this soon.
  signal_group(worker->pid, SIGKILL);
  lock.unlock();
  // Whatever the worker printed last is often why it died.
  on_output(key, true);
  on_output(key, false);
  lock.lock();
  auto exit = take_exited(key, status, lock);
  lock.unlock();
  if (exit) answer_exit(*exit);
}

// Forgets the worker and takes every call it ran or that waited for it
// only: from here on, only its exit answers them.
std::optional<Pool::Exit> Pool::take_exited(WorkerKey key, int status, Lock& lock) {
  const Locked locked(lock);
  auto* worker = find_worker(key, locked);
  if (worker == nullptr) return std::nullopt;
  for (int fd : worker->watched_fds()) loop_.unwatch(fd);
  worker->cancel_timers(loop_);
  Exit exit;
  exit.cause = exit_cause(status);
  // Killed by the pool: its SIGKILL is ours, not a crash of the worker's
  // own (one that died of something else first still says what).
  const bool ours = worker->killed_for != nullptr && (status == kStatusUnknown || exit.cause.signal == SIGKILL);
  exit.how = ours ? fmt::format("was killed by the pool ({})", worker->killed_for) : describe_exit(status);
  if (ours) exit.cause = {};
  if (worker->phase == WorkerPhase::starting)
    fail_start(*worker, errors::startup_exited(worker->id, exit.how, exit.cause, worker->stderr_tail()), locked);
  exit.worker = std::move(workers_.at(key));
  workers_.erase(key);
  scheduler_.remove_worker(key);
  exit.taken = std::move(exit.worker->inflight);
  for (auto& [id, held] : exit.worker->held) exit.taken.emplace(id, std::move(held.first));
  for (auto& [id, request] : exit.taken) {
    requests_.erase(id);
    request->taken_by_exit = true;
  }
  for (auto id : scheduler_.remove_required(key)) {
    exit.stranded.push_back(requests_.at(id));
    requests_.erase(id);
  }
  exit.stopping = stopping_;
  if (workers_.empty()) all_exited_.notify_all();
  return exit;
}

void Pool::answer_exit(Exit& exit) {
  const Worker& worker = *exit.worker;
  ::unlink(worker.socket_path.c_str());
  for (auto& request : exit.stranded)
    finish(request, errors::failure(errors::session_worker_exited(request->call.session_id, worker.id, exit.how)));
  for (auto& [id, request] : exit.taken)
    finish(request, errors::failure(errors::worker_exited(worker.id, exit.how, exit.cause)));
  emit(worker.id, worker.pid, event::WorkerExited{exit.how});
  if (!exit.stopping && !worker.recycled) schedule_respawn(worker.slot);
}

}  // namespace snakepit::core
