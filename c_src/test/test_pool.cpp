// Pool with real (shell) worker processes and a fake transport.
#include <doctest/doctest.h>

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <fstream>
#include <iterator>
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

using namespace snakepit::core;
using namespace std::chrono_literals;

namespace {

constexpr auto kWait = 3s;

const char* kReadyScript = "printf '{\"status\":\"ready\"}\\n' >&3; exec sleep 30";

template <class Pred>
bool wait_until(Pred pred, std::chrono::milliseconds timeout = kWait) {
  const auto deadline = SteadyClock::now() + timeout;
  while (SteadyClock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(2ms);
  }
  return pred();
}

bool pid_gone(pid_t pid) { return ::kill(pid, 0) == -1 && errno == ESRCH; }

// Gone or a zombie: an orphan's reaping is up to whoever adopted it.
bool pid_dead(pid_t pid) {
  if (pid_gone(pid)) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'Z';
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

void FakeHandle::cancel() noexcept {
  if (auto call = call_.lock()) transport_->on_cancel(call);
}

void FakeConnection::ping(Millis, bool wait_for_ready, std::function<void(bool ok)> done) {
  transport_->note_ping(wait_for_ready);
  const bool ok = transport_->ping_ok() && transport_->failing_ping_socket() != socket_path_;
  transport_->post([done = std::move(done), ok] { done(ok); });
}

void FakeConnection::running(Millis, Running done) {
  auto ids = transport_->running_on(socket_path_);
  transport_->post([done = std::move(done), ids = std::move(ids)]() mutable { done(std::move(ids)); });
}

void FakeConnection::report(Millis, std::function<void(std::optional<std::vector<ToolConcurrency>>)> done) {
  if (!transport_->answers_reports()) return;  // a worker that never answers
  std::vector<ToolConcurrency> tools;
  tools.push_back(ToolConcurrency{"tool_for:" + socket_path_, 1, 7, false});
  transport_->post([done = std::move(done), tools = std::move(tools)]() mutable { done(std::move(tools)); });
}

std::shared_ptr<CallHandle> FakeConnection::execute_stream(CallRequest&& request, TimePoint deadline, int window,
                                                           Chunk on_chunk, Done done) {
  auto call = std::make_shared<FakeCall>();
  call->request = std::move(request);
  call->deadline = deadline;
  call->done = std::move(done);
  call->socket_path = socket_path_;
  call->on_chunk = std::move(on_chunk);
  call->window = window;
  return transport_->started(std::move(call));
}

std::shared_ptr<CallHandle> FakeConnection::execute(CallRequest&& request, TimePoint deadline, Done done) {
  auto call = std::make_shared<FakeCall>();
  call->request = std::move(request);
  call->deadline = deadline;
  call->done = std::move(done);
  call->socket_path = socket_path_;
  return transport_->started(std::move(call));
}

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
      if (e.type == type) out.push_back(e);
    return out;
  }
  std::vector<PoolEvent> all() {
    std::lock_guard lock(mutex_);
    return events_;
  }

 private:
  std::size_t count_locked(PoolEvent::Type type) const {
    return static_cast<std::size_t>(
        std::count_if(events_.begin(), events_.end(), [&](const PoolEvent& e) { return e.type == type; }));
  }
  std::mutex mutex_;
  std::condition_variable cv_;
  std::vector<PoolEvent> events_;
};

// ---------------------------------------------------------------- fixture

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
  PoolConfig config;
  std::set<pid_t> seen_pids;

  PoolFixture() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "snakepit-pool-test-XXXXXX").string();
    REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
    runtime_dir = tmpl;
    config.name = "test";
    config.pool_size = 2;
    config.capacity_per_worker = 1;
    config.executable = "/bin/sh";
    config.worker_argv = {"-c", kReadyScript};
    config.env = {"PATH=/usr/bin:/bin"};
    config.startup_batch_delay = 10ms;
    config.startup_timeout = 5s;
    config.queue_timeout = 5s;
    config.restart_backoff = 50ms;
    config.max_restart_backoff = 1s;
    config.graceful_shutdown = 1s;
    config.run_id = "test";
    config.runtime_dir = runtime_dir;
    config.lifeline_fd = -1;
    const char* guard = std::getenv("SNAKEPIT_WORKER_GUARD");
    config.guard = std::filesystem::absolute(guard != nullptr ? guard : "priv/snakepit_worker_guard").string();
  }

  ~PoolFixture() {
    if (pool) pool->stop();
    transport->shutdown();
    pool.reset();
    for (pid_t pid : seen_pids) {
      if (!pid_gone(pid)) ::kill(pid, SIGKILL);
    }
    std::error_code ec;
    std::filesystem::remove_all(runtime_dir, ec);
  }

  void start() {
    pool = std::make_shared<Pool>(config, transport, sink);
    pool->start();
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

}  // namespace

// ------------------------------------------------------------------ tests

TEST_CASE("pool: becomes ready with pool_size workers") {
  PoolFixture f;
  f.config.pool_size = 3;
  f.start();
  REQUIRE(f.wait_ready(3));
  CHECK(f.sink->count(PoolEvent::Type::worker_spawned) == 3);
  CHECK(f.sink->count(PoolEvent::Type::worker_ready) == 3);
  CHECK(f.sink->count(PoolEvent::Type::worker_start_failed) == 0);

  const auto stats = f.pool->stats();
  CHECK(stats.workers == 3);
  CHECK(stats.ready == 3);
  CHECK(stats.available == 3);
  CHECK(stats.busy == 0);
  CHECK(stats.queued == 0);
  CHECK_FALSE(stats.last_start_error.has_value());

  const auto workers = f.pool->workers();
  REQUIRE(workers.size() == 3);
  std::set<std::string> ids;
  for (const auto& w : workers) {
    CHECK(w.state == "ready");
    CHECK(w.os_pid > 0);
    CHECK_FALSE(pid_gone(w.os_pid));
    CHECK(::getpgid(w.os_pid) == w.os_pid);
    CHECK(w.capacity == 1);
    CHECK(w.inflight == 0);
    CHECK(w.id.rfind("test_worker_", 0) == 0);
    ids.insert(w.id);
  }
  CHECK(ids.size() == 3);

  // Every ready event names a live worker, and the transport was asked to
  // connect to that worker's socket under runtime_dir.
  for (const auto& e : f.sink->of(PoolEvent::Type::worker_ready)) {
    CHECK(ids.count(e.worker_id) == 1);
    CHECK(e.os_pid > 0);
  }
  const auto connected = f.transport->connected();
  REQUIRE(connected.size() == 3);
  for (const auto& path : connected) CHECK(f.worker_by_socket(path).has_value());
}

TEST_CASE("pool: a submitted call reaches the connection and its outcome arrives exactly once") {
  PoolFixture f;
  f.start();
  REQUIRE(f.wait_ready(2));

  const auto before = SteadyClock::now();
  auto s = f.submit("echo", 2500ms);
  const auto after = SteadyClock::now();
  REQUIRE_FALSE(s.refused.has_value());
  REQUIRE(f.transport->wait_calls(1));
  auto call = f.transport->call(0);
  CHECK(call->request.tool == "echo");
  REQUIRE(call->request.params.size() == 1);
  CHECK(call->request.params[0].name == "x");
  CHECK(call->request.params[0].data == "1");
  CHECK(call->deadline >= before + 2500ms);
  CHECK(call->deadline <= after + 2500ms);
  auto worker = f.worker_by_socket(call->socket_path);
  REQUIRE(worker.has_value());
  CHECK(worker->inflight == 1);
  CHECK(f.pool->stats().busy == 1);
  CHECK(s.inbox->count() == 0);  // held by the fake

  REQUIRE(f.transport->complete_ok(call, "{\"answer\":42}"));
  REQUIRE(s.inbox->wait());
  auto outcome = s.inbox->first();
  CHECK(outcome.ok);
  CHECK(outcome.payload == "{\"answer\":42}");
  CHECK_FALSE(outcome.payload_binary);
  CHECK(outcome.worker_id == worker->id);

  // A late duplicate from the transport is not delivered.
  CHECK_FALSE(f.transport->complete_ok(call, "again"));
  CHECK(wait_until([&] { return f.pool->stats().busy == 0; }));
  const auto stats = f.pool->stats();
  CHECK(stats.requests == 1);
  CHECK(stats.errors == 0);
  f.pool->stop();
  CHECK(s.inbox->count() == 1);
}

TEST_CASE("pool: completion inline inside execute() and from another thread") {
  PoolFixture f;
  f.start();
  REQUIRE(f.wait_ready(2));
  for (auto mode : {FakeTransport::Mode::inline_ok, FakeTransport::Mode::thread_ok}) {
    f.transport->set_mode(mode);
    std::vector<Submitted> all;
    for (int i = 0; i < 20; ++i) all.push_back(f.submit("t" + std::to_string(i)));
    for (std::size_t i = 0; i < all.size(); ++i) {
      REQUIRE_FALSE(all[i].refused.has_value());
      REQUIRE(all[i].inbox->wait());
      auto outcome = all[i].inbox->first();
      CHECK(outcome.ok);
      CHECK(outcome.payload == "\"t" + std::to_string(i) + "\"");
    }
  }
  CHECK(wait_until([&] { return f.pool->stats().busy == 0 && f.pool->stats().queued == 0; }));
  f.pool->stop();
  CHECK(f.pool->stats().requests == 40);
}

TEST_CASE("pool: transport results become outcomes") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.start();
  REQUIRE(f.wait_ready(1));

  SUBCASE("python error") {
    auto s = f.submit("boom");
    REQUIRE(f.transport->wait_calls(1));
    f.transport->complete(f.transport->call(0),
                          TransportResult::tool_error("ValueError", "bad value", "Traceback: line 1"));
    REQUIRE(s.inbox->wait());
    auto outcome = s.inbox->first();
    CHECK_FALSE(outcome.ok);
    CHECK(outcome.error.category == ErrorCategory::python_error);
    CHECK(outcome.error.python_type == "ValueError");
    CHECK(outcome.error.message == "bad value");
    CHECK(outcome.error.traceback == "Traceback: line 1");
    CHECK_FALSE(outcome.worker_id.empty());
    CHECK(wait_until([&] { return f.pool->stats().errors == 1; }));
  }
  SUBCASE("binary payload") {
    auto s = f.submit("bytes");
    REQUIRE(f.transport->wait_calls(1));
    f.transport->complete(f.transport->call(0), TransportResult::success(std::string("\x00\xff", 2), true));
    REQUIRE(s.inbox->wait());
    auto outcome = s.inbox->first();
    CHECK(outcome.ok);
    CHECK(outcome.payload_binary);
    CHECK(outcome.payload == std::string("\x00\xff", 2));
  }
  SUBCASE("deadline exceeded names the tool") {
    auto s = f.submit("slow_tool", 1234ms);
    REQUIRE(f.transport->wait_calls(1));
    f.transport->complete(f.transport->call(0), TransportResult::ended(TransportResult::Kind::deadline_exceeded, 4, {}));
    REQUIRE(s.inbox->wait());
    auto outcome = s.inbox->first();
    CHECK_FALSE(outcome.ok);
    CHECK(outcome.error.category == ErrorCategory::timeout);
    CHECK(outcome.error.reason == "worker_timeout");
    CHECK(outcome.error.message.find("1234 ms") != std::string::npos);
    CHECK_MESSAGE(outcome.error.message.find("slow_tool") != std::string::npos, outcome.error.message);
  }
  SUBCASE("other gRPC failure") {
    auto s = f.submit("x");
    REQUIRE(f.transport->wait_calls(1));
    f.transport->complete(f.transport->call(0), TransportResult::ended(TransportResult::Kind::failed, 13, "internal"));
    REQUIRE(s.inbox->wait());
    auto outcome = s.inbox->first();
    CHECK(outcome.error.category == ErrorCategory::grpc_error);
    CHECK(outcome.error.grpc_status == 13);
    CHECK(outcome.error.message == "internal");
  }
}

TEST_CASE("pool: capacity 1 queues the second request until the first completes") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.start();
  REQUIRE(f.wait_ready(1));

  auto first = f.submit("first");
  REQUIRE(f.transport->wait_calls(1));
  auto second = f.submit("second");
  REQUIRE_FALSE(second.refused.has_value());
  CHECK(f.pool->stats().queued == 1);
  CHECK(f.pool->stats().available == 0);
  // Not dispatched while the only slot is taken.
  std::this_thread::sleep_for(50ms);
  CHECK(f.transport->call_count() == 1);
  CHECK(second.inbox->count() == 0);

  f.transport->complete_ok(f.transport->call(0), "1");
  REQUIRE(first.inbox->wait());
  CHECK(first.inbox->first().payload == "1");
  REQUIRE(f.transport->wait_calls(2));
  auto call = f.transport->call(1);
  CHECK(call->request.tool == "second");
  CHECK(call->socket_path == f.transport->call(0)->socket_path);
  CHECK(f.pool->stats().queued == 0);
  CHECK(second.inbox->count() == 0);

  f.transport->complete_ok(call, "2");
  REQUIRE(second.inbox->wait());
  CHECK(second.inbox->first().ok);
  CHECK(second.inbox->first().payload == "2");
}

TEST_CASE("pool: queued requests are dispatched oldest first") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.start();
  REQUIRE(f.wait_ready(1));
  auto held = f.submit("held");
  REQUIRE(f.transport->wait_calls(1));
  std::vector<Submitted> queued;
  for (int i = 0; i < 5; ++i) queued.push_back(f.submit("q" + std::to_string(i)));
  CHECK(f.pool->stats().queued == 5);
  f.transport->set_mode(FakeTransport::Mode::thread_ok);
  f.transport->complete_ok(f.transport->call(0), "held");
  for (auto& q : queued) REQUIRE(q.inbox->wait());
  REQUIRE(f.transport->call_count() == 6);
  for (int i = 0; i < 5; ++i) CHECK(f.transport->call(static_cast<std::size_t>(i) + 1)->request.tool == "q" + std::to_string(i));
}

TEST_CASE("pool: requests submitted before any worker is ready wait for one") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.worker_argv = {"-c", "sleep 0.2; printf '{\"status\":\"ready\"}\\n' >&3; exec sleep 30"};
  f.transport->set_mode(FakeTransport::Mode::thread_ok);
  f.start();
  auto s = f.submit("early");
  REQUIRE_FALSE(s.refused.has_value());
  CHECK(f.pool->stats().queued == 1);
  REQUIRE(s.inbox->wait());
  CHECK(s.inbox->first().ok);
  CHECK(f.sink->count(PoolEvent::Type::worker_ready) == 1);
}

TEST_CASE("pool: a full queue refuses with pool_saturated") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.max_queue = 2;
  f.start();
  REQUIRE(f.wait_ready(1));
  auto running = f.submit("running");
  REQUIRE(f.transport->wait_calls(1));
  auto q1 = f.submit("q1");
  auto q2 = f.submit("q2");
  REQUIRE_FALSE(q1.refused.has_value());
  REQUIRE_FALSE(q2.refused.has_value());
  auto refused = f.submit("refused");
  REQUIRE(refused.refused.has_value());
  CHECK(refused.refused->reason == "pool_saturated");
  CHECK(refused.refused->category == ErrorCategory::pool);
  CHECK_FALSE(refused.refused->message.empty());
  const auto stats = f.pool->stats();
  CHECK(stats.saturated == 1);
  CHECK(stats.queued == 2);
  // A refused request's responder is dropped unused.
  std::this_thread::sleep_for(20ms);
  CHECK(refused.inbox->count() == 0);
}

TEST_CASE("pool: a queued request times out with queue_timeout") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.queue_timeout = 100ms;
  f.start();
  REQUIRE(f.wait_ready(1));
  auto running = f.submit("running");
  REQUIRE(f.transport->wait_calls(1));
  const auto queued_at = SteadyClock::now();
  auto waiting = f.submit("waiting");
  REQUIRE_FALSE(waiting.refused.has_value());
  REQUIRE(waiting.inbox->wait());
  const auto waited = waiting.inbox->first_at - queued_at;
  auto outcome = waiting.inbox->first();
  CHECK_FALSE(outcome.ok);
  CHECK(outcome.error.category == ErrorCategory::timeout);
  CHECK(outcome.error.reason == "queue_timeout");
  CHECK(waited >= 95ms);
  CHECK(waited < 1500ms);
  const auto stats = f.pool->stats();
  CHECK(stats.queue_timeouts == 1);
  CHECK(stats.queued == 0);
  // It never reaches a worker, even once the slot frees up.
  f.transport->complete_ok(f.transport->call(0), "done");
  REQUIRE(running.inbox->wait());
  std::this_thread::sleep_for(30ms);
  CHECK(f.transport->call_count() == 1);
  CHECK(waiting.inbox->count() == 1);
}

TEST_CASE("pool: a short per-call timeout expires on time behind a longer queued wait") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.queue_timeout = 10s;
  f.start();
  REQUIRE(f.wait_ready(1));
  auto running = f.submit("running");
  REQUIRE(f.transport->wait_calls(1));
  auto patient = f.submit("patient");  // waits up to 10 s
  const auto queued_at = SteadyClock::now();
  auto hasty = f.submit("hasty", 150ms);  // waits up to 150 ms
  REQUIRE(hasty.inbox->wait(2s));
  CHECK(hasty.inbox->first().error.reason == "queue_timeout");
  CHECK(hasty.inbox->first_at - queued_at < 1500ms);
  CHECK(patient.inbox->count() == 0);
  CHECK(f.pool->stats().queued == 1);
}

TEST_CASE("pool: cancel a queued request") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.start();
  REQUIRE(f.wait_ready(1));
  auto running = f.submit("running");
  REQUIRE(f.transport->wait_calls(1));
  auto queued = f.submit("queued");
  REQUIRE(f.pool->stats().queued == 1);

  f.pool->cancel(queued.id);
  REQUIRE(queued.inbox->wait());
  auto outcome = queued.inbox->first();
  CHECK_FALSE(outcome.ok);
  CHECK(outcome.error.reason == "cancelled");
  CHECK(f.pool->stats().queued == 0);
  f.pool->cancel(queued.id);  // again: nothing happens

  f.transport->complete_ok(f.transport->call(0), "ok");
  REQUIRE(running.inbox->wait());
  CHECK(running.inbox->first().ok);
  std::this_thread::sleep_for(30ms);
  CHECK(f.transport->call_count() == 1);  // the cancelled one never ran
  CHECK(queued.inbox->count() == 1);
}

TEST_CASE("pool: cancel a running request cancels the call") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.start();
  REQUIRE(f.wait_ready(1));
  auto running = f.submit("running");
  REQUIRE(f.transport->wait_calls(1));
  f.pool->cancel(running.id);
  REQUIRE(running.inbox->wait());
  CHECK(f.transport->call(0)->cancelled.load());
  auto outcome = running.inbox->first();
  CHECK(outcome.error.category == ErrorCategory::timeout);
  CHECK(outcome.error.reason == "cancelled");
  // The slot is free again.
  f.transport->set_mode(FakeTransport::Mode::thread_ok);
  auto next = f.submit("next");
  REQUIRE(next.inbox->wait());
  CHECK(next.inbox->first().ok);
}

TEST_CASE("pool: 2 workers x capacity 4 share the load; capacity_reached when full") {
  PoolFixture f;
  f.config.pool_size = 2;
  f.config.capacity_per_worker = 4;
  f.start();
  REQUIRE(f.wait_ready(2));
  std::vector<Submitted> all;
  for (int i = 0; i < 4; ++i) all.push_back(f.submit("r"));
  REQUIRE(f.transport->wait_calls(4));
  auto workers = f.pool->workers();
  REQUIRE(workers.size() == 2);
  CHECK(workers[0].inflight == 2);
  CHECK(workers[1].inflight == 2);
  CHECK(workers[0].capacity == 4);
  CHECK(f.sink->count(PoolEvent::Type::capacity_reached) == 0);

  for (int i = 0; i < 4; ++i) all.push_back(f.submit("r"));
  REQUIRE(f.transport->wait_calls(8));
  workers = f.pool->workers();
  CHECK(workers[0].inflight == 4);
  CHECK(workers[1].inflight == 4);
  CHECK(f.pool->stats().available == 0);
  CHECK(f.pool->stats().busy == 2);
  CHECK(f.sink->count(PoolEvent::Type::capacity_reached) == 2);

  auto ninth = f.submit("r");
  CHECK(f.pool->stats().queued == 1);
  for (std::size_t i = 0; i < 8; ++i) f.transport->complete_ok(f.transport->call(i), "ok");
  REQUIRE(f.transport->wait_calls(9));
  f.transport->complete_ok(f.transport->call(8), "ok");
  REQUIRE(ninth.inbox->wait());
  for (auto& s : all) CHECK(s.inbox->count() == 1);
}

TEST_CASE("pool: worker output lines become events") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.worker_argv = {"-c", "echo hello out; echo 'oops err' >&2; printf '{\"status\":\"ready\"}\\n' >&3; exec sleep 30"};
  f.start();
  REQUIRE(f.wait_ready(1));
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_output, 2));
  bool saw_out = false, saw_err = false;
  for (const auto& e : f.sink->of(PoolEvent::Type::worker_output)) {
    if (e.stream == "stdout" && e.text == "hello out") saw_out = true;
    if (e.stream == "stderr" && e.text == "oops err") saw_err = true;
    CHECK_FALSE(e.worker_id.empty());
  }
  CHECK(saw_out);
  CHECK(saw_err);
}

TEST_CASE("pool: a killed worker fails its request and is replaced") {
  PoolFixture f;
  f.config.pool_size = 2;
  f.start();
  REQUIRE(f.wait_ready(2));
  auto s = f.submit("victim");
  REQUIRE(f.transport->wait_calls(1));
  auto worker = f.worker_by_socket(f.transport->call(0)->socket_path);
  REQUIRE(worker.has_value());
  const pid_t victim = worker->os_pid;

  REQUIRE(::kill(victim, SIGKILL) == 0);
  REQUIRE(s.inbox->wait());
  auto outcome = s.inbox->first();
  CHECK_FALSE(outcome.ok);
  CHECK(outcome.error.category == ErrorCategory::worker);
  CHECK(outcome.error.reason == "worker_exited");
  CHECK(outcome.worker_id == worker->id);
  CHECK(outcome.error.message.find("signal") != std::string::npos);

  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_exited, 1));
  auto exited = f.sink->of(PoolEvent::Type::worker_exited);
  CHECK(exited[0].worker_id == worker->id);
  CHECK(exited[0].os_pid == victim);

  // Back to pool_size, with a fresh process in place of the dead one.
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 3));
  REQUIRE(wait_until([&] { return f.pool->stats().ready == 2; }));
  f.remember_pids();
  auto workers = f.pool->workers();
  REQUIRE(workers.size() == 2);
  for (const auto& w : workers) {
    CHECK(w.os_pid != victim);
    CHECK(w.id != worker->id);
  }
  CHECK(pid_gone(victim));  // reaped, not a zombie
  CHECK(f.pool->stats().worker_restarts == 1);

  // The dead worker's call completing late does not make a second outcome.
  f.transport->complete_ok(f.transport->call(0), "late");
  std::this_thread::sleep_for(20ms);
  CHECK(s.inbox->count() == 1);

  // The new worker serves requests.
  f.transport->set_mode(FakeTransport::Mode::thread_ok);
  auto after = f.submit("after");
  REQUIRE(after.inbox->wait());
  CHECK(after.inbox->first().ok);
}

namespace {
TransportResult unavailable_result() {
  return TransportResult::ended(TransportResult::Kind::unavailable, 14, "connection refused");
}
}  // namespace

TEST_CASE("pool: an unavailable worker that does not answer a ping is killed and replaced") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.start();
  REQUIRE(f.wait_ready(1));
  const pid_t pid = f.pool->workers().at(0).os_pid;
  f.transport->set_ping_ok(false);
  auto s = f.submit("x");
  REQUIRE(f.transport->wait_calls(1));
  f.transport->complete(f.transport->call(0), unavailable_result());
  REQUIRE(s.inbox->wait());
  auto outcome = s.inbox->first();
  // Held until the worker's exit, which the pool caused: not a crash.
  CHECK(outcome.error.category == ErrorCategory::worker);
  CHECK(outcome.error.reason == "worker_exited");
  CHECK(outcome.error.message.find("was killed by the pool (it refused a call") != std::string::npos);
  CHECK_FALSE(outcome.error.exit_signal.has_value());
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_exited, 1));
  CHECK(f.sink->of(PoolEvent::Type::worker_exited)[0].os_pid == pid);
  CHECK(f.sink->count(PoolEvent::Type::internal_error) == 1);  // says why it was killed
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 2));
  f.remember_pids();
}

TEST_CASE("pool: a worker that dies mid-call: the call ends as worker_exited with the signal") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.start();
  REQUIRE(f.wait_ready(1));
  const pid_t pid = f.pool->workers().at(0).os_pid;
  auto refused_first = f.submit("x");
  REQUIRE(f.transport->wait_calls(1));
  // The connection drops before the pool sees the exit, as with a real
  // crash; a dead worker answers no ping.
  f.transport->set_ping_ok(false);
  REQUIRE(::kill(pid, SIGSEGV) == 0);
  REQUIRE(wait_until([&] { return pid_dead(pid); }));  // the crash, not the pool's kill, ends it
  f.transport->complete(f.transport->call(0), unavailable_result());
  REQUIRE(refused_first.inbox->wait());
  auto outcome = refused_first.inbox->first();
  CHECK(outcome.error.reason == "worker_exited");
  CHECK(outcome.error.message.find("killed by signal SIGSEGV (Segmentation fault) while running the request") !=
        std::string::npos);
  CHECK(outcome.error.exit_signal == std::optional<int>(SIGSEGV));
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_exited, 1));
  CHECK(f.sink->of(PoolEvent::Type::worker_exited)[0].text == "killed by signal SIGSEGV (Segmentation fault)");

  // And in the other order: the exit first, with a call still running.
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 2));
  f.remember_pids();
  f.transport->set_ping_ok(true);
  const pid_t next = f.pool->workers().at(0).os_pid;
  auto running = f.submit("y");
  REQUIRE(f.transport->wait_calls(2));
  REQUIRE(::kill(next, SIGABRT) == 0);
  REQUIRE(running.inbox->wait());
  CHECK(running.inbox->first().error.message.find("killed by signal SIGABRT (Aborted)") != std::string::npos);
  CHECK(running.inbox->first().error.exit_signal == std::optional<int>(SIGABRT));
}

TEST_CASE("pool: a worker that refused one call but answers a ping stays in service") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.start();
  REQUIRE(f.wait_ready(1));
  const pid_t pid = f.pool->workers().at(0).os_pid;
  auto s = f.submit("x");
  REQUIRE(f.transport->wait_calls(1));
  // While the probe runs, the worker takes no calls: this one waits.
  f.transport->complete(f.transport->call(0), unavailable_result());
  auto waiting = f.submit("after");
  REQUIRE(s.inbox->wait());
  CHECK(s.inbox->first().error.reason == "worker_unavailable");
  // The ping answers: the same process serves the waiting call.
  REQUIRE(f.transport->wait_calls(2));
  CHECK(f.transport->call(1)->request.tool == "after");
  f.transport->complete_ok(f.transport->call(1), "1");
  REQUIRE(waiting.inbox->wait());
  CHECK(waiting.inbox->first().ok);
  CHECK(f.pool->workers().at(0).os_pid == pid);
  CHECK(f.sink->count(PoolEvent::Type::worker_exited) == 0);
  CHECK(f.pool->stats().ready == 1);
  // The probe waits for the connection to come back rather than failing
  // on a channel that is still in reconnect backoff.
  CHECK(f.transport->waiting_pings() == 1);
}

TEST_CASE("pool: a worker reporting a start error; restarts back off") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.restart_backoff = 50ms;
  f.config.max_restart_backoff = 10s;
  f.config.worker_argv = {
      "-c",
      "printf '{\"status\":\"error\",\"type\":\"ImportError\",\"message\":\"no module\",\"traceback\":\"TB\"}\\n' >&3; "
      "exit 1"};
  const auto started = SteadyClock::now();
  f.start();
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_start_failed, 1));
  const auto failed = f.sink->of(PoolEvent::Type::worker_start_failed)[0];
  CHECK(failed.error.category == ErrorCategory::worker);
  CHECK(failed.error.reason == "startup_failed");
  CHECK(failed.error.python_type == "ImportError");
  CHECK(failed.error.message == "no module");
  CHECK(failed.error.traceback == "TB");
  CHECK_FALSE(failed.worker_id.empty());
  CHECK(failed.error.worker_id == failed.worker_id);

  auto last = f.pool->stats().last_start_error;
  REQUIRE(last.has_value());
  CHECK(last->python_type == "ImportError");
  CHECK(last->traceback == "TB");

  // Let it retry for about a second.
  std::this_thread::sleep_until(started + 1s);
  const auto stats = f.pool->stats();
  CHECK(stats.worker_restarts >= 2);  // it does retry
  CHECK(stats.worker_restarts < 10);  // but backs off
  CHECK(stats.ready == 0);
  CHECK(f.sink->count(PoolEvent::Type::worker_ready) == 0);
  // One start failure per attempt, not two (ready line and exit both seen).
  const auto spawned = f.sink->count(PoolEvent::Type::worker_spawned);
  const auto start_failed = f.sink->count(PoolEvent::Type::worker_start_failed);
  CHECK(start_failed <= spawned);
  CHECK(start_failed + 1 >= spawned);

  // Queued requests wait (and time out) rather than fail at once.
  auto s = f.submit("x", 100ms);
  REQUIRE_FALSE(s.refused.has_value());
  REQUIRE(s.inbox->wait());
  CHECK(s.inbox->first().error.reason == "queue_timeout");
}

TEST_CASE("pool: a worker that exits without a ready line") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.restart_backoff = 200ms;
  f.config.worker_argv = {"-c", "echo 'Traceback: it broke' >&2; exit 3"};
  f.start();
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_start_failed, 1));
  const auto failed = f.sink->of(PoolEvent::Type::worker_start_failed)[0];
  CHECK(failed.error.category == ErrorCategory::worker);
  CHECK(failed.error.reason == "startup_failed");
  CHECK_FALSE(failed.error.message.empty());
  CHECK(failed.error.traceback.find("Traceback: it broke") != std::string::npos);
}

TEST_CASE("pool: a worker that reports a start error but stays alive is killed and replaced") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.restart_backoff = 50ms;
  f.config.worker_argv = {
      "-c", "printf '{\"status\":\"error\",\"type\":\"E\",\"message\":\"m\",\"traceback\":\"\"}\\n' >&3; exec sleep 30"};
  f.start();
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_start_failed, 1));
  f.remember_pids();
  // Otherwise the slot is held forever by a process that will never serve.
  CHECK(f.sink->wait_count(PoolEvent::Type::worker_exited, 1));
  CHECK(f.sink->wait_count(PoolEvent::Type::worker_spawned, 2));
  f.remember_pids();
}

TEST_CASE("pool: a worker that never reports ready hits the startup timeout") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.startup_timeout = 150ms;
  f.config.restart_backoff = 1s;
  f.config.worker_argv = {"-c", "exec sleep 30"};
  f.start();
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_start_failed, 1));
  f.remember_pids();
  const auto failed = f.sink->of(PoolEvent::Type::worker_start_failed)[0];
  CHECK(failed.error.reason == "startup_timeout");
  CHECK(failed.error.category == ErrorCategory::worker);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_exited, 1));
  const auto first = f.sink->of(PoolEvent::Type::worker_spawned)[0];
  CHECK(first.worker_id == failed.worker_id);
  CHECK(first.os_pid > 0);
  CHECK(wait_until([&] { return pid_gone(first.os_pid); }));
  // Exactly one start failure for it, not a second one from its exit.
  std::size_t for_first = 0;
  for (const auto& e : f.sink->of(PoolEvent::Type::worker_start_failed)) for_first += e.worker_id == first.worker_id;
  CHECK(for_first == 1);
  // Its slot is started again.
  CHECK(f.sink->wait_count(PoolEvent::Type::worker_spawned, 2));
  f.remember_pids();
}

TEST_CASE("pool: an executable that cannot be spawned") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.executable = "/nonexistent/snakepit-python";
  f.config.restart_backoff = 50ms;
  f.config.graceful_shutdown = 6s;  // the default: stop() must not wait for it
  f.start();
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_start_failed, 1));
  const auto failed = f.sink->of(PoolEvent::Type::worker_start_failed)[0];
  CHECK(failed.error.reason == "spawn_failed");
  CHECK(failed.error.message.find("/nonexistent/snakepit-python") != std::string::npos);
  REQUIRE(f.pool->stats().last_start_error.has_value());
  CHECK(f.pool->stats().last_start_error->reason == "spawn_failed");
  CHECK(f.pool->stats().workers == 0);

  auto s = f.submit("x");
  REQUIRE_FALSE(s.refused.has_value());
  const auto before = SteadyClock::now();
  f.pool->stop();
  CHECK(SteadyClock::now() - before < 2s);
  REQUIRE(s.inbox->wait(0ms));
  CHECK(s.inbox->first().error.reason == "pool_not_initialized");
}

TEST_CASE("pool: stop kills every worker and answers every pending request") {
  PoolFixture f;
  f.config.pool_size = 2;
  f.config.graceful_shutdown = 1s;
  f.start();
  REQUIRE(f.wait_ready(2));
  std::vector<pid_t> pids;
  for (const auto& w : f.pool->workers()) pids.push_back(w.os_pid);
  REQUIRE(pids.size() == 2);

  auto a = f.submit("a");
  auto b = f.submit("b");
  REQUIRE(f.transport->wait_calls(2));
  auto queued = f.submit("queued");
  REQUIRE(f.pool->stats().queued == 1);

  const auto before = SteadyClock::now();
  f.pool->stop();
  CHECK(SteadyClock::now() - before < 3s);
  for (pid_t pid : pids) {
    CAPTURE(pid);
    CHECK(pid_gone(pid));
  }
  for (auto* s : {&a, &b, &queued}) {
    REQUIRE(s->inbox->wait(0ms));
    CHECK(s->inbox->count() == 1);
    CHECK_FALSE(s->inbox->first().ok);
  }
  CHECK(queued.inbox->first().error.reason == "pool_not_initialized");
  CHECK(a.inbox->first().error.category == ErrorCategory::worker);
  CHECK(f.pool->stats().workers == 0);
  CHECK(f.pool->workers().empty());

  // Refused from now on.
  auto late = f.submit("late");
  REQUIRE(late.refused.has_value());
  CHECK(late.refused->reason == "pool_not_initialized");
  // A second stop is harmless; a completion after stop adds nothing.
  f.pool->stop();
  f.transport->complete_ok(f.transport->call(0), "late");
  CHECK(a.inbox->count() == 1);
  // No respawn after stop.
  std::this_thread::sleep_for(100ms);
  CHECK(f.sink->count(PoolEvent::Type::worker_spawned) == 2);
}

TEST_CASE("pool: stop escalates to SIGKILL for a worker that ignores SIGTERM") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.graceful_shutdown = 300ms;
  // The shell ignores TERM and stays the worker (no exec).
  f.config.worker_argv = {"-c", "trap '' TERM; printf '{\"status\":\"ready\"}\\n' >&3; while :; do sleep 1; done"};
  f.start();
  REQUIRE(f.wait_ready(1));
  const pid_t pid = f.pool->workers().at(0).os_pid;
  const auto before = SteadyClock::now();
  f.pool->stop();
  const auto took = SteadyClock::now() - before;
  CHECK(took >= 250ms);
  CHECK(took < 3s);
  CHECK(pid_gone(pid));
  auto exited = f.sink->of(PoolEvent::Type::worker_exited);
  REQUIRE(exited.size() == 1);
  CHECK(exited[0].text.find("signal") != std::string::npos);
}

TEST_CASE("pool: workers get the pool's arguments and environment") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.env = {"PATH=/usr/bin:/bin", "SNAKEPIT_TEST_VAR=hello"};
  f.config.worker_argv = {"-c",
                          "echo \"args:$*\"; echo \"var:$SNAKEPIT_TEST_VAR\"; "
                          "printf '{\"status\":\"ready\"}\\n' >&3; exec sleep 30",
                          "script.py"};
  f.start();
  REQUIRE(f.wait_ready(1));
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_output, 2));
  const auto id = f.pool->workers().at(0).id;
  std::string args, var;
  for (const auto& e : f.sink->of(PoolEvent::Type::worker_output)) {
    if (e.text.rfind("args:", 0) == 0) args = e.text;
    if (e.text.rfind("var:", 0) == 0) var = e.text;
  }
  CHECK(args == "args:--socket " + f.runtime_dir + "/" + id + ".sock --worker-id " + id +
                    " --snakepit-run-id test --ready-fd 3 --lifeline-fd -1");
  CHECK(var == "var:hello");
}

TEST_CASE("pool: reports asks every ready worker") {
  PoolFixture f;
  f.config.pool_size = 2;
  f.start();
  REQUIRE(f.wait_ready(2));
  const auto workers = f.pool->workers();

  auto reports = f.pool->reports(500ms);
  REQUIRE(reports.size() == 2);
  for (const auto& r : reports) {
    CAPTURE(r.worker_id);
    REQUIRE(r.tools.has_value());
    REQUIRE(r.tools->size() == 1);
    // Each answer landed in the report of the worker it came from.
    CHECK(r.tools->at(0).tool == "tool_for:" + f.runtime_dir + "/" + r.worker_id + ".sock");
    CHECK(r.tools->at(0).calls == 7);
  }
  CHECK(reports[0].worker_id != reports[1].worker_id);

  f.transport->set_answers_reports(false);
  const auto before = SteadyClock::now();
  reports = f.pool->reports(100ms);
  CHECK(SteadyClock::now() - before < 2s);
  REQUIRE(reports.size() == 2);
  CHECK_FALSE(reports[0].tools.has_value());
  CHECK_FALSE(reports[1].tools.has_value());
}

TEST_CASE("pool: a recycled worker serves until its successor is ready, then drains") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.max_requests = 2;
  // Workers after the first take 400 ms to get ready (a slow model load).
  const std::string marker = f.runtime_dir + "/slow";
  f.config.worker_argv = {"-c", "[ -e " + marker + " ] && sleep 0.4; " + kReadyScript};
  f.start();
  REQUIRE(f.wait_ready(1));
  const auto first = f.pool->workers().at(0);
  { std::ofstream(marker.c_str()) << "1"; }

  f.transport->set_mode(FakeTransport::Mode::thread_ok);
  for (int i = 0; i < 2; ++i) {
    auto s = f.submit("warm");
    REQUIRE(s.inbox->wait());
  }
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_recycled, 1));
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_spawned, 2));
  // The successor is still loading: the recycled worker keeps serving, at once.
  auto during = f.submit("during");
  REQUIRE(during.inbox->wait(200ms));
  CHECK(during.inbox->first().ok);
  CHECK(during.inbox->first().worker_id == first.id);
  CHECK(f.sink->count(PoolEvent::Type::worker_ready) == 1);
  CHECK(f.pool->stats().recycles == 1);  // one recycle, however many calls passed the limit

  // Once the successor is ready the old one is terminated; calls go to the new one.
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 2));
  f.remember_pids();
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_exited, 1));
  CHECK(f.sink->of(PoolEvent::Type::worker_exited)[0].worker_id == first.id);
  CHECK(f.pool->stats().worker_restarts == 0);  // a replacement, not a crash restart
  auto after = f.submit("after");
  REQUIRE(after.inbox->wait());
  CHECK(after.inbox->first().worker_id != first.id);
  CHECK(f.pool->workers().size() == 1);
}

TEST_CASE("pool: a strict session moves with its recycled worker to the successor") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.max_requests = 1;
  f.start();
  REQUIRE(f.wait_ready(1));
  const auto first = f.pool->workers().at(0);
  f.transport->set_mode(FakeTransport::Mode::thread_ok);
  auto bind = f.submit("bind", 30s, "s1", Affinity::strict_fail_fast);
  REQUIRE(bind.inbox->wait());
  CHECK(bind.inbox->first().worker_id == first.id);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 2));
  f.remember_pids();
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_exited, 1));
  auto next = f.submit("next", 30s, "s1", Affinity::strict_fail_fast);
  REQUIRE(next.inbox->wait());
  CHECK(next.inbox->first().ok);  // not session_worker_unavailable
  CHECK(next.inbox->first().worker_id != first.id);
}

TEST_CASE("pool: a strict session whose first calls all queue runs them on one worker") {
  PoolFixture f;
  f.config.pool_size = 2;
  f.start();
  REQUIRE(f.wait_ready(2));
  auto busy_a = f.submit("busy_a");
  auto busy_b = f.submit("busy_b");
  REQUIRE(f.transport->wait_calls(2));
  std::vector<Submitted> session;
  for (int i = 0; i < 3; ++i) session.push_back(f.submit("s" + std::to_string(i), 30s, "s1", Affinity::strict_queue));
  CHECK(f.pool->stats().queued == 3);

  // The second worker frees up first: the session's first call lands there ...
  f.transport->complete_ok(f.transport->call(1), "b");
  REQUIRE(f.transport->wait_calls(3));
  const std::string session_socket = f.transport->call(2)->socket_path;
  CHECK(f.transport->call(2)->request.tool == "s0");
  // ... so when the first worker frees up, the rest keep waiting for that one.
  f.transport->complete_ok(f.transport->call(0), "a");
  std::this_thread::sleep_for(50ms);
  CHECK(f.transport->call_count() == 3);
  for (int i = 1; i < 3; ++i) {
    f.transport->complete_ok(f.transport->call(static_cast<std::size_t>(i) + 1), "ok");
    REQUIRE(f.transport->wait_calls(static_cast<std::size_t>(i) + 3));
    CHECK(f.transport->call(static_cast<std::size_t>(i) + 2)->socket_path == session_socket);
  }
  f.transport->complete_ok(f.transport->call(4), "ok");
  for (auto& s : session) REQUIRE(s.inbox->wait());
}

TEST_CASE("pool: heartbeats still in flight after a kill report the timeout once") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.heartbeat_enabled = true;
  f.config.ping_interval = 10ms;
  f.config.max_missed_heartbeats = 1;
  f.config.restart_backoff = 300ms;
  f.start();
  REQUIRE(f.wait_ready(1));
  f.transport->set_ping_ok(false);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_exited, 1));
  f.transport->set_ping_ok(true);
  std::this_thread::sleep_for(100ms);
  CHECK(f.sink->count(PoolEvent::Type::heartbeat_timeout) == 1);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 2));
  f.remember_pids();
}

TEST_CASE("pool: a worker's own children die with it") {
  PoolFixture f;
  f.config.pool_size = 1;
  const std::string child_pid_file = f.runtime_dir + "/child.pid";
  // The worker starts a long-lived child in its process group, then dies.
  f.config.worker_argv = {"-c", "sleep 30 & echo $! > " + child_pid_file + "; " +
                                    "printf '{\"status\":\"ready\"}\\n' >&3; exec sleep 30"};
  f.start();
  REQUIRE(f.wait_ready(1));
  pid_t child = 0;
  REQUIRE(wait_until([&] {
    std::ifstream in(child_pid_file);
    return static_cast<bool>(in >> child) && child > 0;
  }));
  f.seen_pids.insert(child);
  CHECK_FALSE(pid_gone(child));
  REQUIRE(::kill(f.pool->workers().at(0).os_pid, SIGKILL) == 0);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_exited, 1));
  CHECK(wait_until([&] { return pid_dead(child); }, 1s));
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 2));
  f.remember_pids();
}

TEST_CASE("pool: a retired worker that takes its time to exit is not a heartbeat failure") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.max_requests = 1;
  f.config.heartbeat_enabled = true;
  f.config.ping_interval = 10ms;
  f.config.max_missed_heartbeats = 1;
  f.config.graceful_shutdown = 3s;
  // SIGTERM starts a 400 ms shutdown, during which it answers no pings.
  f.config.worker_argv = {"-c", "trap 'sleep 0.4; exit 0' TERM; printf '{\"status\":\"ready\"}\\n' >&3; "
                                "while true; do sleep 0.02; done"};
  f.start();
  REQUIRE(f.wait_ready(1));
  const auto first = f.pool->workers().at(0);
  f.transport->set_mode(FakeTransport::Mode::thread_ok);
  auto s = f.submit("one");
  REQUIRE(s.inbox->wait());
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 2));
  f.remember_pids();
  f.transport->set_failing_ping_socket(f.runtime_dir + "/" + first.id + ".sock");
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_exited, 1));
  CHECK(f.sink->of(PoolEvent::Type::worker_exited)[0].worker_id == first.id);
  CHECK(f.sink->count(PoolEvent::Type::heartbeat_timeout) == 0);
  CHECK(f.pool->stats().heartbeat_failures == 0);
}

TEST_CASE("pool: the first heartbeat waits for the initial delay") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.heartbeat_enabled = true;
  f.config.ping_interval = 10ms;
  f.config.heartbeat_initial_delay = 400ms;
  f.config.max_missed_heartbeats = 1;
  f.transport->set_ping_ok(false);
  f.start();
  REQUIRE(f.wait_ready(1));
  std::this_thread::sleep_for(250ms);
  CHECK(f.sink->count(PoolEvent::Type::heartbeat_timeout) == 0);
  CHECK(f.transport->fail_fast_pings() == 0);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::heartbeat_timeout, 1));
  f.transport->set_ping_ok(true);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 2));
  f.remember_pids();
}

// ------------------------------------------------- calls whose callers gave up

namespace {
TransportResult deadline_result() {
  return TransportResult::ended(TransportResult::Kind::deadline_exceeded, 4, "Deadline Exceeded");
}
}  // namespace

TEST_CASE("pool: a timed-out call keeps its worker's slot until the tool really ends") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.overrun_poll = 10ms;
  f.start();
  REQUIRE(f.wait_ready(1));
  f.transport->set_tools_outlive_calls(true);
  auto slow = f.submit("slow");
  REQUIRE(f.transport->wait_calls(1));
  f.transport->complete(f.transport->call(0), deadline_result());
  REQUIRE(slow.inbox->wait());
  CHECK(slow.inbox->first().error.reason == "worker_timeout");

  // The tool still runs: the next call waits in the queue, the worker is busy.
  auto next = f.submit("next");
  REQUIRE(wait_until([&] { return f.transport->running_polls() >= 3; }));
  CHECK(f.transport->call_count() == 1);
  CHECK(f.pool->stats().busy == 1);
  CHECK(f.pool->stats().queued == 1);

  f.transport->end_tool(f.transport->call(0));
  REQUIRE(f.transport->wait_calls(2));
  CHECK(f.transport->call(1)->request.tool == "next");
  CHECK(f.transport->call(1)->request.request_id == next.id);
  CHECK(f.sink->count(PoolEvent::Type::worker_hung) == 0);
}

TEST_CASE("pool: a cancelled running call keeps its slot until the worker is done with it") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.overrun_poll = 10ms;
  f.start();
  REQUIRE(f.wait_ready(1));
  f.transport->set_tools_outlive_calls(true);
  auto first = f.submit("first");
  REQUIRE(f.transport->wait_calls(1));
  f.pool->cancel(first.id);
  REQUIRE(first.inbox->wait());
  CHECK(first.inbox->first().error.reason == "cancelled");
  auto next = f.submit("next");
  REQUIRE(wait_until([&] { return f.transport->running_polls() >= 3; }));
  CHECK(f.transport->call_count() == 1);
  f.transport->end_tool(f.transport->call(0));
  REQUIRE(f.transport->wait_calls(2));
}

TEST_CASE("pool: a tool running past its deadline by the grace gets its worker killed and replaced") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.overrun_poll = 10ms;
  f.config.overrun_grace = 150ms;
  f.start();
  REQUIRE(f.wait_ready(1));
  const pid_t stuck_pid = f.pool->workers().at(0).os_pid;
  f.transport->set_tools_outlive_calls(true);
  auto stuck = f.submit("stuck", 50ms);
  REQUIRE(f.transport->wait_calls(1));
  f.transport->complete(f.transport->call(0), deadline_result());
  REQUIRE(stuck.inbox->wait());
  auto waiting = f.submit("waiting", 10s);

  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_hung, 1));
  const auto hung = f.sink->of(PoolEvent::Type::worker_hung).at(0);
  CHECK(hung.text == "stuck");
  CHECK(hung.os_pid == stuck_pid);
  CHECK(hung.millis >= 100);  // past the deadline by about the grace
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_exited, 1));
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 2));
  f.remember_pids();
  CHECK(pid_gone(stuck_pid));

  // The queued call runs on the replacement.
  REQUIRE(f.transport->wait_calls(2));
  CHECK(f.transport->call(1)->request.tool == "waiting");
  f.transport->complete_ok(f.transport->call(1), "1");
  REQUIRE(waiting.inbox->wait());
  CHECK(waiting.inbox->first().ok);
  CHECK(f.sink->count(PoolEvent::Type::worker_hung) == 1);
}

namespace {
// Every delivery waits for the test's go: the worker-exit handler is then
// held between taking the worker's calls and finishing them.
struct DeliveryGate {
  std::mutex mutex;
  std::condition_variable cv;
  int entered = 0;
  bool open = false;
};

class GatedResponder : public Responder {
 public:
  GatedResponder(std::shared_ptr<DeliveryGate> gate, std::shared_ptr<Inbox> inbox)
      : gate_(std::move(gate)), inbox_(std::move(inbox)) {}
  void deliver(Outcome&& outcome) noexcept override {
    {
      std::unique_lock lock(gate_->mutex);
      ++gate_->entered;
      gate_->cv.notify_all();
      gate_->cv.wait(lock, [&] { return gate_->open; });
    }
    TestResponder(inbox_).deliver(std::move(outcome));
  }

 private:
  std::shared_ptr<DeliveryGate> gate_;
  std::shared_ptr<Inbox> inbox_;
};
}  // namespace

TEST_CASE("pool: a call failing on two paths at once (worker exit, transport error) counts one error") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.capacity_per_worker = 3;
  f.start();
  REQUIRE(f.wait_ready(1));
  auto gate = std::make_shared<DeliveryGate>();
  std::vector<std::shared_ptr<Inbox>> inboxes;
  for (int i = 0; i < 3; ++i) {
    CallRequest call;
    call.tool = "doomed";
    inboxes.push_back(std::make_shared<Inbox>());
    REQUIRE_FALSE(f.pool->submit(f.pool->new_request_id(), std::move(call),
                                 std::make_unique<GatedResponder>(gate, inboxes.back())));
  }
  REQUIRE(f.transport->wait_calls(3));
  ::kill(f.pool->workers().at(0).os_pid, SIGKILL);
  // The exit handler holds one delivery; the others are not finished yet.
  {
    std::unique_lock lock(gate->mutex);
    REQUIRE(gate->cv.wait_for(lock, kWait, [&] { return gate->entered == 1; }));
  }
  // Meanwhile the transport reports the broken connection for every call.
  // The exit took all three, so the transport's errors deliver nothing.
  std::vector<std::thread> breakers;
  for (std::size_t i = 0; i < 3; ++i)
    breakers.emplace_back([&f, i] { f.transport->complete(f.transport->call(i), unavailable_result()); });
  for (auto& breaker : breakers) breaker.join();
  {
    std::lock_guard lock(gate->mutex);
    CHECK(gate->entered == 1);
    gate->open = true;
  }
  gate->cv.notify_all();
  for (auto& inbox : inboxes) {
    REQUIRE(inbox->wait());
    CHECK(inbox->first().error.reason == "worker_exited");  // the exit's answer, with its cause
  }
  const auto stats = f.pool->stats();
  CHECK(stats.requests == 3);
  CHECK(stats.errors == 3);
}
