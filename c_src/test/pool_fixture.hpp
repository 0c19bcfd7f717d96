// Pool tests' shared parts: a fake transport whose calls the test ends, a
// collecting responder and event sink, a clock the test moves on, and the
// fixture that starts a pool of real (shell) worker processes.
#pragma once

#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "../core/pool.hpp"

namespace pool_test {

using namespace snakepit::core;
using namespace std::chrono_literals;


inline constexpr auto kWait = 3s;

inline const char* kReadyScript = "printf '{\"status\":\"ready\"}\\n' >&3; exec sleep 30";

// A worker that is ready at once and, on SIGTERM, takes `seconds` (a shell
// `sleep` operand) to exit: a retiree still around when the test goes on.
inline std::vector<std::string> slow_exit_worker_argv(const std::string& seconds) {
  return {"-c", "trap 'sleep " + seconds + "; exit 0' TERM; printf '{\"status\":\"ready\"}\\n' >&3; "
                "while true; do sleep 0.02; done"};
}

template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout = kWait) {
  const auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

// ------------------------------------------------------------ fake transport

struct FakeCall {
  CallRequest request;
  TimePoint deadline;
  WorkerConnection::Done done;
  std::string socket_path;
  WorkerConnection::Chunk on_chunk;  // streams only
  int window = 0;
  std::atomic<int> granted{0};
  std::atomic<bool> cancelled{false};
  std::atomic<bool> completed{false};
  // The worker's side: the tool runs until the test ends it (when the
  // transport's tools outlive their callers) or its call completes.
  std::atomic<bool> tool_done{false};
  std::atomic<bool> outlives{false};  // its call ended (cancel, deadline) with the tool still running
};

class FakeTransport;

class FakeHandle : public CallHandle {
 public:
  FakeHandle(std::weak_ptr<FakeCall> call, FakeTransport* transport) : call_(std::move(call)), transport_(transport) {}
  void cancel() noexcept override;
  void grant(int credits) noexcept override {
    if (auto call = call_.lock()) call->granted += credits;
  }

 private:
  std::weak_ptr<FakeCall> call_;
  FakeTransport* transport_;
};

class FakeConnection : public WorkerConnection {
 public:
  FakeConnection(std::string socket_path, FakeTransport* transport)
      : socket_path_(std::move(socket_path)), transport_(transport) {}
  std::shared_ptr<CallHandle> execute(CallRequest&& request, TimePoint deadline, Done done) override;
  std::shared_ptr<CallHandle> execute_stream(CallRequest&& request, TimePoint deadline, int window, Chunk on_chunk,
                                             Done done) override;
  void ping(Millis, bool wait_for_ready, std::function<void(bool ok)> done) override;
  void running(Millis, Running done) override;
  void report(Millis, std::function<void(std::optional<std::vector<ToolConcurrency>>)> done) override;

 private:
  std::string socket_path_;
  FakeTransport* transport_;
};

// Calls either wait for the test to complete them (hold), complete inline
// inside execute(), or complete on the transport's helper thread.
class FakeTransport : public Transport {
 public:
  enum class Mode { hold, inline_ok, thread_ok };

  FakeTransport() : helper_([this] { run_helper(); }) {}
  ~FakeTransport() override { shutdown(); }

  std::shared_ptr<WorkerConnection> connect(const std::string& socket_path) override {
    std::lock_guard lock(mutex_);
    connected_.push_back(socket_path);
    return std::make_shared<FakeConnection>(socket_path, this);
  }

  void set_answers_reports(bool answers) { answers_reports_ = answers; }
  // Tools go on running after their call was cancelled or timed out, until
  // end_tool(): as a Python tool does, which nothing can interrupt.
  void set_tools_outlive_calls(bool outlive) { tools_outlive_calls_ = outlive; }
  void end_tool(const std::shared_ptr<FakeCall>& call) { call->tool_done = true; }
  int running_polls() const { return running_polls_; }
  std::vector<std::uint64_t> running_on(const std::string& socket_path) {
    ++running_polls_;
    std::lock_guard lock(mutex_);
    std::vector<std::uint64_t> ids;
    for (const auto& call : calls_) {
      const bool ended = call->tool_done || (call->completed && !call->outlives);
      if (call->socket_path == socket_path && !ended) ids.push_back(call->request.request_id);
    }
    return ids;
  }
  void set_ping_ok(bool ok) { ping_ok_ = ok; }
  // Pings to this one worker fail (the others answer).
  void set_failing_ping_socket(std::string socket_path) {
    std::lock_guard lock(mutex_);
    failing_ping_socket_ = std::move(socket_path);
  }
  std::string failing_ping_socket() {
    std::lock_guard lock(mutex_);
    return failing_ping_socket_;
  }
  bool ping_ok() const { return ping_ok_; }
  void note_ping(bool wait_for_ready) { (wait_for_ready ? waiting_pings_ : fail_fast_pings_)++; }
  int waiting_pings() const { return waiting_pings_; }
  int fail_fast_pings() const { return fail_fast_pings_; }
  bool answers_reports() const { return answers_reports_; }

  void set_mode(Mode mode) {
    std::lock_guard lock(mutex_);
    mode_ = mode;
  }

  std::shared_ptr<CallHandle> started(std::shared_ptr<FakeCall> call) {
    Mode mode;
    {
      std::lock_guard lock(mutex_);
      calls_.push_back(call);
      mode = mode_;
    }
    cv_.notify_all();
    auto handle = std::make_shared<FakeHandle>(call, this);
    if (mode == Mode::inline_ok) {
      complete(call, ok_result(call->request));
    } else if (mode == Mode::thread_ok) {
      post([this, call] { complete(call, ok_result(call->request)); });
    }
    return handle;
  }

  static TransportResult ok_result(const CallRequest& request) {
    return TransportResult::success("\"" + request.tool + "\"");
  }

  // Returns false if the call had completed already.
  bool complete(const std::shared_ptr<FakeCall>& call, TransportResult result) {
    using Kind = TransportResult::Kind;
    const bool ended_by_client = result.kind == Kind::cancelled || result.kind == Kind::deadline_exceeded;
    if (tools_outlive_calls_ && ended_by_client) call->outlives = true;
    if (call->completed.exchange(true)) return false;
    call->done(std::move(result));
    return true;
  }
  bool complete_ok(const std::shared_ptr<FakeCall>& call, std::string payload) {
    return complete(call, TransportResult::success(std::move(payload)));
  }

  // A cancelled call ends like gRPC ends it: CANCELLED, from another thread.
  void on_cancel(const std::shared_ptr<FakeCall>& call) {
    call->cancelled = true;
    post([this, call] {
      complete(call, TransportResult::ended(TransportResult::Kind::cancelled, 1, "Cancelled"));
    });
  }

  bool wait_calls(std::size_t n, std::chrono::milliseconds timeout = kWait) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return calls_.size() >= n; });
  }
  std::size_t call_count() {
    std::lock_guard lock(mutex_);
    return calls_.size();
  }
  std::shared_ptr<FakeCall> call(std::size_t i) {
    std::lock_guard lock(mutex_);
    REQUIRE(i < calls_.size());
    return calls_[i];
  }
  std::vector<std::string> connected() {
    std::lock_guard lock(mutex_);
    return connected_;
  }

  void post(std::function<void()> task) {
    {
      std::lock_guard lock(helper_mutex_);
      tasks_.push_back(std::move(task));
    }
    helper_cv_.notify_all();
  }

  void shutdown() {
    {
      std::lock_guard lock(helper_mutex_);
      if (stop_) return;
      stop_ = true;
    }
    helper_cv_.notify_all();
    if (helper_.joinable()) helper_.join();
  }

 private:
  void run_helper() {
    std::unique_lock lock(helper_mutex_);
    for (;;) {
      helper_cv_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
      if (tasks_.empty()) return;  // stopping and nothing left
      auto task = std::move(tasks_.front());
      tasks_.pop_front();
      lock.unlock();
      task();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  Mode mode_ = Mode::hold;
  std::atomic<bool> answers_reports_{true};
  std::atomic<bool> tools_outlive_calls_{false};
  std::atomic<int> running_polls_{0};
  std::atomic<bool> ping_ok_{true};
  std::atomic<int> waiting_pings_{0};
  std::string failing_ping_socket_;
  std::atomic<int> fail_fast_pings_{0};
  std::vector<std::shared_ptr<FakeCall>> calls_;
  std::vector<std::string> connected_;

  std::mutex helper_mutex_;
  std::condition_variable helper_cv_;
  std::deque<std::function<void()>> tasks_;
  bool stop_ = false;
  std::thread helper_;  // last: starts after everything above exists
};

// --------------------------------------------------------- responder, sink

struct Inbox {
  std::mutex mutex;
  std::condition_variable cv;
  std::vector<Outcome> outcomes;
  TimePoint first_at{};

  bool wait(std::chrono::milliseconds timeout = kWait) {
    std::unique_lock lock(mutex);
    return cv.wait_for(lock, timeout, [&] { return !outcomes.empty(); });
  }
  std::size_t count() {
    std::lock_guard lock(mutex);
    return outcomes.size();
  }
  Outcome first() {
    std::lock_guard lock(mutex);
    REQUIRE(!outcomes.empty());
    return outcomes.front();
  }
};

class TestResponder : public Responder {
 public:
  explicit TestResponder(std::shared_ptr<Inbox> inbox) : inbox_(std::move(inbox)) {}
  void deliver(Outcome&& outcome) noexcept override {
    {
      std::lock_guard lock(inbox_->mutex);
      if (inbox_->outcomes.empty()) inbox_->first_at = SteadyClock::now();
      inbox_->outcomes.push_back(std::move(outcome));
    }
    inbox_->cv.notify_all();
  }

 private:
  std::shared_ptr<Inbox> inbox_;
};

// Must not call back into the pool: the pool may emit under its own lock.
class CollectingSink : public EventSink {
 public:
  void emit(PoolEvent&& event) noexcept override {
    {
      std::lock_guard lock(mutex_);
      events_.push_back(std::move(event));
    }
    cv_.notify_all();
  }
  std::size_t count(PoolEvent::Type type) {
    std::lock_guard lock(mutex_);
    return count_locked(type);
  }
  bool wait_count(PoolEvent::Type type, std::size_t n, std::chrono::milliseconds timeout = kWait) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return count_locked(type) >= n; });
  }
  std::vector<PoolEvent> of(PoolEvent::Type type) {
    std::lock_guard lock(mutex_);
    std::vector<PoolEvent> out;
    for (const auto& e : events_)
      if (e.type() == type) out.push_back(e);
    return out;
  }
  std::vector<PoolEvent> all() {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  std::size_t count_locked(PoolEvent::Type type) const {
    return static_cast<std::size_t>(
        std::count_if(events_.begin(), events_.end(), [&](const PoolEvent& e) { return e.type() == type; }));
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<PoolEvent> events_;
};

// ---------------------------------------------------------------- fixture

// The steady clock plus what the test moved it on: real time still passes
// (processes start and exit), and a test skips ahead instead of sleeping.
class ManualClock {
 public:
  ClockFn fn() {
    return [this] { return SteadyClock::now() + std::chrono::nanoseconds(offset_.load()); };
  }
  void advance(Millis by) { offset_ += std::chrono::duration_cast<std::chrono::nanoseconds>(by).count(); }

 private:
  std::atomic<long long> offset_{0};
};


struct Submitted {
  RequestId id = 0;
  std::shared_ptr<Inbox> inbox;
  std::optional<Error> refused;
};

struct PoolFixture {
  std::string runtime_dir;
  std::shared_ptr<FakeTransport> transport = std::make_shared<FakeTransport>();
  std::shared_ptr<CollectingSink> sink = std::make_shared<CollectingSink>();
  std::shared_ptr<Pool> pool;
  ManualClock clock;
  PoolConfig config;
  std::set<pid_t> seen_pids;

  PoolFixture();
  ~PoolFixture();

  void start() {
    pool = std::make_shared<Pool>(config, transport, sink, clock.fn());
    pool->start();
  }
  // Moves the pool's clock on and lets it run what became due.
  void advance(Millis by) {
    clock.advance(by);
    pool->clock_moved();
  }

  bool wait_ready(std::size_t n) {
    const bool ok = sink->wait_count(PoolEvent::Type::worker_ready, n) &&
                    wait_until([&] { return pool->stats().ready == static_cast<std::size_t>(config.pool_size); });
    remember_pids();
    return ok;
  }

  void remember_pids() {
    for (const auto& w : pool->workers()) seen_pids.insert(w.os_pid);
  }

  Submitted submit(std::string tool, Millis timeout = 30s, std::string session_id = {},
                   Affinity affinity = Affinity::hint) {
    CallRequest call;
    call.tool = std::move(tool);
    call.timeout = timeout;
    call.session_id = std::move(session_id);
    call.affinity = affinity;
    call.params.push_back(Param{"x", "1", false});
    Submitted s;
    s.id = pool->new_request_id();
    s.inbox = std::make_shared<Inbox>();
    s.refused = pool->submit(s.id, std::move(call), std::make_unique<TestResponder>(s.inbox));
    return s;
  }

  std::optional<WorkerInfo> worker_by_socket(const std::string& socket_path) {
    for (const auto& w : pool->workers())
      if (runtime_dir + "/" + w.id + ".sock" == socket_path) return w;
    return std::nullopt;
  }
};


bool pid_gone(pid_t pid);
// Gone or a zombie: an orphan's reaping is up to whoever adopted it.
bool pid_dead(pid_t pid);
TransportResult unavailable_result();
TransportResult deadline_result();

}  // namespace pool_test
