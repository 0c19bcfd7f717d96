// One pool of workers: spawns them, tracks them on its event loop, and
// routes requests through the Scheduler. Thread-safe: submit/cancel/stats
// come from BEAM threads, completions from transport threads.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
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
#include "scheduler.hpp"
#include "transport.hpp"
#include "types.hpp"
#include "unique_fd.hpp"

namespace snakepit::core {

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

struct PoolEvent {
  enum class Type {
    worker_spawned,
    worker_ready,
    worker_start_failed,
    worker_exited,
    worker_output,
    capacity_reached,
    heartbeat_timeout,  // text: missed count
    worker_recycled,    // text: "ttl_expired" | "max_requests"
    worker_hung,        // text: the tool that overran; millis: by how much past its deadline
    internal_error,     // text: what went wrong on the pool's own thread
  };
  Type type;
  std::string worker_id;
  int os_pid = 0;
  std::string stream;  // worker_output: "stdout" | "stderr"
  std::string text;    // output line, exit description
  Error error;         // worker_start_failed
  std::int64_t millis = 0;
};

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void emit(PoolEvent&& event) noexcept = 0;
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

class Pool : public std::enable_shared_from_this<Pool> {
 public:
  Pool(PoolConfig config, std::shared_ptr<Transport> transport, std::shared_ptr<EventSink> sink);
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
  const PoolConfig& config() const { return config_; }

 private:
  struct Request;
  struct Worker;
  struct Slot {
    int failures = 0;
    // A recycled worker that keeps serving until the slot's next worker is ready.
    WorkerKey retiring = 0;
  };
  struct Session {
    WorkerKey worker;
    std::string worker_id;
    TimePoint last_used;
  };
  using Dispatch = std::pair<std::shared_ptr<Request>, std::shared_ptr<WorkerConnection>>;

  // Loop thread.
  void spawn_batch(std::size_t first_slot);
  void spawn_worker(std::size_t slot);
  void schedule_respawn(std::size_t slot);
  void on_ready_pipe(WorkerKey key);
  void on_output(WorkerKey key, bool is_stderr);
  void on_exit(WorkerKey key);
  void on_startup_timeout(WorkerKey key);
  void arm_queue_timer();
  void expire_queue();
  void begin_shutdown();
  void mark_ready(Worker& worker, std::shared_ptr<WorkerConnection> connection,
                  std::vector<Dispatch>& dispatches);  // pool lock held
  void retire(WorkerKey key, const Worker& successor);  // pool lock held
  void probe_unavailable(WorkerKey key);
  void on_probe(WorkerKey key, bool ok);
  void kill_worker(Worker& worker, const char* why);  // pool lock held
  void schedule_heartbeat(WorkerKey key);
  void send_heartbeat(WorkerKey key);
  void on_heartbeat(WorkerKey key, bool ok);
  void recycle(WorkerKey key, const char* reason);
  void hold_abandoned(Worker& worker, const Request& request);  // pool lock held
  void poll_abandoned(WorkerKey key);
  void on_running(WorkerKey key, std::optional<std::vector<RequestId>> running);
  void terminate_drained(WorkerKey key);
  void fail_start(Worker& worker, Error error);
  void release_held(WorkerKey key, RequestId id);

  // Any thread.
  void start_call(const std::shared_ptr<Request>& request, const std::shared_ptr<WorkerConnection>& connection);
  void assign(const std::shared_ptr<Request>& request, Worker& worker);  // pool lock held
  void sweep_sessions();
  void on_call_done(const std::shared_ptr<Request>& request, TransportResult&& result);
  // Delivers the request's one outcome and counts it if it failed.
  void finish(const std::shared_ptr<Request>& request, Outcome&& outcome);
  std::vector<Dispatch> take_queued_dispatches();  // pool lock held
  void emit(PoolEvent&& event) noexcept;

  Worker* find_worker(WorkerKey key);  // pool lock held
  HealthRules health_rules() const;

  const PoolConfig config_;
  const std::shared_ptr<Transport> transport_;
  const std::shared_ptr<EventSink> sink_;
  EventLoop loop_;

  mutable std::mutex mutex_;
  std::condition_variable all_exited_;
  Scheduler scheduler_;
  std::map<WorkerKey, std::unique_ptr<Worker>> workers_;
  std::unordered_map<RequestId, std::shared_ptr<Request>> requests_;
  std::vector<Slot> slots_;
  std::unordered_map<std::string, Session> sessions_;
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

}  // namespace snakepit::core
