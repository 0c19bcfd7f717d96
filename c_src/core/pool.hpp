// One pool of workers, the coordinator: spawns them (WorkerProcess), tracks
// them on its event loop, routes requests through the Scheduler and the
// SessionTable, carries out the health module's decisions and turns
// transport results into outcomes (call_outcome). Thread-safe: submit,
// cancel and stats come from BEAM threads, completions from transport
// threads. Its code is split by job: pool.cpp (routing), pool_workers.cpp
// (process lifecycle), pool_health.cpp (heartbeats, probes, recycling,
// overruns), pool_calls.cpp (running calls, the queue), pool_status.cpp
// (stop, stats).
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <unordered_map>
#include <vector>

#include "event_loop.hpp"
#include "health.hpp"
#include "pool_event.hpp"
#include "pool_request.hpp"
#include "session_table.hpp"
#include "scheduler.hpp"
#include "transport.hpp"
#include "types.hpp"

namespace snakepit::core {

// The NIF sets every field a user can configure from the map that
// Snakepit.Config.native_config/3 builds, whose defaults are the product's;
// the values here serve the unit tests.
struct PoolConfig {
  std::string name = "default";
  int pool_size = 2;
  int capacity_per_worker = 1;
  std::string executable;                 // interpreter, absolute path
  std::string guard;                      // the worker guard binary (c_src/guard), absolute path
  std::vector<std::string> worker_argv;   // after the executable: script and its options
  std::vector<std::string> env;           // NAME=value, complete
  std::string working_dir;
  int startup_batch_size = 10;
  Millis startup_batch_delay{500};
  Millis startup_timeout{60000};
  std::size_t max_queue = 1000;
  Millis queue_timeout{10000};
  Millis restart_backoff{500};
  Millis max_restart_backoff{10000};
  Millis graceful_shutdown{6000};
  std::string run_id;
  std::string runtime_dir;
  int lifeline_fd = -1;

  // Heartbeat: a Ping every interval, each with its own deadline; after
  // max_missed consecutive failures the worker is killed (dependent) or
  // only reported.
  bool heartbeat_enabled = false;
  Millis ping_interval{2000};
  Millis heartbeat_initial_delay{0};  // added before a new worker's first ping
  Millis ping_timeout{10000};
  int max_missed_heartbeats = 3;
  bool heartbeat_dependent = true;

  // Recycling: 0 means never.
  Millis worker_ttl{0};
  double ttl_jitter = 0.1;  // up to this fraction of the TTL is added at random
  std::uint64_t max_requests = 0;

  // A call whose caller gave up (timeout, cancel, death) keeps its slot
  // while the worker still runs it; past its deadline plus this grace the
  // worker is killed and replaced, as gunicorn's worker timeout does.
  Millis overrun_grace{5000};
  Millis overrun_poll{100};  // how often such a worker is asked what it still runs

  // A call refused with UNAVAILABLE usually means its worker just died;
  // its outcome waits this long for the worker's exit, so the caller learns
  // how it died (worker_exited with the signal) rather than a bare
  // "connection dropped". Only a safety net: the UNAVAILABLE probe answers
  // a live worker's held calls at once, and a dead one's exit comes first;
  // on a loaded host a crashing worker can take seconds to be reaped.
  Millis exit_wait{10000};

  Millis session_ttl{3600000};  // idle sessions are forgotten after this
  int stream_window = 32;       // stream chunks read ahead of the consumer
};

struct PoolStats {
  std::uint64_t requests = 0;
  std::uint64_t errors = 0;
  std::uint64_t queue_timeouts = 0;
  std::uint64_t saturated = 0;
  std::uint64_t worker_restarts = 0;
  std::uint64_t recycles = 0;
  std::uint64_t heartbeat_failures = 0;
  std::size_t queued = 0;
  std::size_t sessions = 0;
  std::size_t workers = 0;    // processes alive, ready or not
  std::size_t ready = 0;
  std::size_t available = 0;  // ready with a free slot
  std::size_t busy = 0;       // ready with at least one request running
  std::optional<Error> last_start_error;
};

// What a cluster router needs of a pool, in one read: free slots and
// capacity over routable workers, and the queue length.
struct PoolLoad {
  std::size_t free = 0;
  std::size_t capacity = 0;
  std::size_t queued = 0;
};

struct WorkerInfo {
  std::string id;
  int os_pid = 0;
  std::string state;
  int inflight = 0;
  int capacity = 0;
  std::uint64_t requests = 0;
};

struct WorkerReport {
  std::string worker_id;
  std::optional<std::vector<ToolConcurrency>> tools;  // nullopt: no answer
};

class WorkerProcess;

class Pool : public std::enable_shared_from_this<Pool> {
 public:
  // `clock` (default: the steady clock) times every rule: timers, queue
  // deadlines, overruns, session expiry. Tests pass one they can move
  // forward, then call clock_moved().
  Pool(PoolConfig config, std::shared_ptr<Transport> transport, std::shared_ptr<EventSink> sink,
       ClockFn clock = {});
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  void start();
  RequestId new_request_id() { return next_request_.fetch_add(1); }
  // Nothing: the responder will get exactly one outcome. An error: the
  // request was refused at once and the responder is dropped unused.
  std::optional<Error> submit(RequestId id, CallRequest call, std::unique_ptr<Responder> responder);
  // The caller gave up or died. Queued: dropped; running: the call is cancelled.
  void cancel(RequestId id);
  // A request refused before it reached submit (its arguments could not be
  // encoded): counted as a request and an error.
  void count_rejected();
  // A stream's consumer took `credits` more chunks.
  void grant(RequestId id, int credits);
  PoolStats stats() const;
  PoolLoad load() const;
  // The worker a session is bound to (its first call's), if it is bound.
  std::optional<std::string> session_worker(const std::string& session_id) const;
  // Forgets a session's binding; its next call starts it afresh.
  void drop_session(const std::string& session_id);
  std::vector<WorkerInfo> workers() const;
  // Asks every ready worker for its per-tool concurrency record. Blocks up
  // to `timeout`: never call on a BEAM scheduler.
  std::vector<WorkerReport> reports(Millis timeout) const;
  // SIGTERM to every worker, SIGKILL after the grace period; every pending
  // request gets an error. Blocks until done: never call on a BEAM scheduler.
  void stop();
  // The injected clock jumped ahead: runs the timers that became due and
  // returns once they have run. Not on the pool's loop thread.
  void clock_moved();
  const PoolConfig& config() const { return config_; }

 private:
  using Request = PoolRequest;
  using Worker = WorkerProcess;
  using Dispatch = std::pair<std::shared_ptr<Request>, std::shared_ptr<WorkerConnection>>;
  using Lock = std::unique_lock<std::mutex>;
  // Proof that the caller holds the pool lock: made only from a held lock.
  // Functions that touch the pool's state without locking take one and
  // call held() first, so a token kept past an unlock stops the process
  // at its first use instead of racing (one branch per call).
  class Locked {
   public:
    explicit Locked(const Lock& lock) : lock_(lock) { held(); }
    Locked(const Locked&) = delete;
    Locked& operator=(const Locked&) = delete;
    void held() const {
      if (!lock_.owns_lock()) std::abort();  // a bug, not a condition to recover from
    }

   private:
    const Lock& lock_;
  };
  struct Slot {
    int failures = 0;  // start failures in a row: the restart backoff
  };
  struct Route;
  struct Exit;

  TimePoint now() const { return clock_(); }
  template <class F>
  EventLoop::TimerId at(TimePoint when, F&& task);  // loop thread
  template <class F>
  EventLoop::TimerId after(Millis delay, F&& task) {  // loop thread
    return at(now() + delay, std::forward<F>(task));
  }
  template <class F>
  void post(F&& task);
  void emit(PoolEvent&& event) noexcept;
  void emit(const std::string& worker_id, int os_pid, PoolEvent::Data data) noexcept;
  Worker* find_worker(WorkerKey key, const Locked&);
  HealthRules health_rules() const;

  // Worker lifecycle, loop thread (pool_workers.cpp).
  void spawn_batch(std::size_t first_slot);
  void spawn_worker(std::size_t slot);
  bool watch_worker(const Worker& worker);
  void schedule_respawn(std::size_t slot);
  void on_startup_timeout(WorkerKey key);
  void on_ready_pipe(WorkerKey key);
  void on_ready(WorkerKey key);
  void on_start_error(Worker& worker, std::string_view line, const Locked&);
  void mark_ready(Worker& worker, std::shared_ptr<WorkerConnection> connection, const Locked&);
  void fail_start(Worker& worker, Error error, const Locked&);
  void kill_later(WorkerKey key);
  void on_output(WorkerKey key, bool is_stderr);
  void on_exit(WorkerKey key);
  std::optional<Exit> take_exited(WorkerKey key, int status, Lock& lock);
  void answer_exit(Exit& exit);

  // Health and recycling, loop thread (pool_health.cpp).
  void send_heartbeat(WorkerKey key);
  void on_heartbeat(WorkerKey key, bool ok);
  void probe_unavailable(WorkerKey key);
  void on_probe(WorkerKey key, bool ok);
  void kill_worker(Worker& worker, const char* why, const Locked&);
  void recycle(WorkerKey key, RecycleReason reason);
  Worker* retiring_in(std::size_t slot, const Locked&);
  void retire(Worker& worker, const Worker& successor, const Locked&);
  void terminate_drained(WorkerKey key);
  void hold_abandoned(Worker& worker, const Request& request, const Locked&);
  void poll_abandoned(WorkerKey key);
  void arm_abandoned_poll(WorkerKey key);  // loop thread
  void on_running(WorkerKey key, std::optional<std::vector<RequestId>> running);

  // Routing, any thread (pool.cpp).
  std::optional<Error> route_session(const Request& request, WorkerKey& bound, const Locked&);
  std::optional<Error> enqueue(const std::shared_ptr<Request>& request, WorkerKey bound, std::uint64_t group, Lock& lock);
  void assign(const std::shared_ptr<Request>& request, Worker& worker, const Locked&);
  std::vector<Dispatch> take_queued_dispatches(const Locked&);
  void sweep_sessions();

  // Calls, any thread (pool_calls.cpp).
  void start_call(const std::shared_ptr<Request>& request, const std::shared_ptr<WorkerConnection>& connection);
  void start_dispatches(std::vector<Dispatch>& dispatches);
  void on_call_done(const std::shared_ptr<Request>& request, TransportResult&& result);
  bool settle_call(const std::shared_ptr<Request>& request, TransportResult::Kind kind, Outcome& outcome,
                   std::vector<Dispatch>& dispatches, const Locked&);
  void after_call(Worker& worker, TransportResult::Kind kind, const Locked&);
  void release_held(WorkerKey key, RequestId id);
  // Delivers the request's one outcome and counts it if it failed.
  void finish(const std::shared_ptr<Request>& request, Outcome&& outcome);
  void arm_queue_timer();
  void expire_queue();

  // Shutdown, loop thread (pool_status.cpp).
  void begin_shutdown();

  const PoolConfig config_;
  const std::shared_ptr<Transport> transport_;
  const std::shared_ptr<EventSink> sink_;
  const ClockFn clock_;
  EventLoop loop_;

  mutable std::mutex mutex_;
  std::condition_variable all_exited_;
  Scheduler scheduler_;
  std::map<WorkerKey, std::unique_ptr<Worker>> workers_;
  std::unordered_map<RequestId, std::shared_ptr<Request>> requests_;
  std::vector<Slot> slots_;
  SessionTable sessions_;
  std::atomic<RequestId> next_request_{1};
  WorkerKey next_worker_ = 1;
  bool stopping_ = false;
  bool started_ = false;
  std::optional<EventLoop::TimerId> queue_timer_;  // loop thread
  PoolStats counters_;
  // Counted where an outcome is delivered (Request::finish), so a call that
  // fails on two paths at once (worker exit and its gRPC error) counts once.
  std::atomic<std::uint64_t> errors_{0};
  std::minstd_rand jitter_random_{std::random_device{}()};  // loop thread
};

// The loop's tasks and timers keep the pool alive until they have run.
template <class F>
void Pool::post(F&& task) {
  loop_.post([self = shared_from_this(), task = std::forward<F>(task)]() mutable { task(); });
}

template <class F>
EventLoop::TimerId Pool::at(TimePoint when, F&& task) {
  return loop_.add_timer(when, [self = shared_from_this(), task = std::forward<F>(task)]() mutable { task(); });
}

}  // namespace snakepit::core
