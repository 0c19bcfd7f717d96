// Pool, health: calls refused with UNAVAILABLE (the probe, the exit-cause
// hold), heartbeats, calls whose callers gave up, and the exit's claim on
// its calls.
#include "pool_fixture.hpp"

#include <fstream>

using namespace pool_test;

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
  CHECK(f.sink->of(PoolEvent::Type::worker_exited)[0].as<event::WorkerExited>().how ==
        "killed by signal SIGSEGV (Segmentation fault)");

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

TEST_CASE("pool: a retired worker that takes its time to exit is not a heartbeat failure") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.max_requests = 1;
  f.config.heartbeat_enabled = true;
  f.config.ping_interval = 10ms;
  f.config.max_missed_heartbeats = 1;
  f.config.graceful_shutdown = 3s;
  // SIGTERM starts a 400 ms shutdown, during which it answers no pings.
  f.config.worker_argv = slow_exit_worker_argv("0.4");
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
  f.config.ping_interval = 10s;
  f.config.heartbeat_initial_delay = 40s;
  f.config.max_missed_heartbeats = 1;
  f.transport->set_ping_ok(false);
  f.start();
  REQUIRE(f.wait_ready(1));
  f.advance(49s);
  CHECK(f.transport->fail_fast_pings() == 0);
  CHECK(f.sink->count(PoolEvent::Type::heartbeat_timeout) == 0);
  f.advance(1s);
  CHECK(f.transport->fail_fast_pings() == 1);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::heartbeat_timeout, 1));
  CHECK(f.sink->of(PoolEvent::Type::heartbeat_timeout)[0].as<event::HeartbeatTimeout>().missed == 1);
  f.transport->set_ping_ok(true);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 2));
  f.remember_pids();
}

// ------------------------------------------------- calls whose callers gave up

TEST_CASE("pool: a timed-out call keeps its worker's slot until the tool really ends") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.overrun_poll = 10s;
  f.config.overrun_grace = 3600s;
  f.config.queue_timeout = 3600s;
  f.start();
  REQUIRE(f.wait_ready(1));
  f.transport->set_tools_outlive_calls(true);
  auto slow = f.submit("slow");
  REQUIRE(f.transport->wait_calls(1));
  f.transport->complete(f.transport->call(0), deadline_result());
  REQUIRE(slow.inbox->wait());
  CHECK(slow.inbox->first().error.reason == "worker_timeout");

  // The tool still runs: the next call waits in the queue, the worker is busy.
  auto next = f.submit("next", 3600s);
  CHECK(f.transport->running_polls() == 0);  // none before the poll interval
  REQUIRE(wait_until([&] {
    f.advance(10s);
    return f.transport->running_polls() >= 3;
  }));
  CHECK(f.transport->call_count() == 1);
  CHECK(f.pool->stats().busy == 1);
  CHECK(f.pool->stats().queued == 1);

  f.transport->end_tool(f.transport->call(0));
  REQUIRE(wait_until([&] {
    f.advance(10s);
    return f.transport->call_count() >= 2;
  }));
  CHECK(f.transport->call(1)->request.tool == "next");
  CHECK(f.transport->call(1)->request.request_id == next.id);
  CHECK(f.sink->count(PoolEvent::Type::worker_hung) == 0);
}

TEST_CASE("pool: a cancelled running call keeps its slot until the worker is done with it") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.overrun_poll = 10s;
  f.config.overrun_grace = 3600s;
  f.config.queue_timeout = 3600s;
  f.start();
  REQUIRE(f.wait_ready(1));
  f.transport->set_tools_outlive_calls(true);
  auto first = f.submit("first");
  REQUIRE(f.transport->wait_calls(1));
  f.pool->cancel(first.id);
  REQUIRE(first.inbox->wait());
  CHECK(first.inbox->first().error.reason == "cancelled");
  auto next = f.submit("next", 3600s);
  REQUIRE(wait_until([&] {
    f.advance(10s);
    return f.transport->running_polls() >= 3;
  }));
  CHECK(f.transport->call_count() == 1);
  f.transport->end_tool(f.transport->call(0));
  REQUIRE(wait_until([&] {
    f.advance(10s);
    return f.transport->call_count() >= 2;
  }));
}

TEST_CASE("pool: a tool running past its deadline by the grace gets its worker killed and replaced") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.overrun_poll = 1s;
  f.config.overrun_grace = 30s;
  f.config.queue_timeout = 3600s;
  f.start();
  REQUIRE(f.wait_ready(1));
  const pid_t stuck_pid = f.pool->workers().at(0).os_pid;
  f.transport->set_tools_outlive_calls(true);
  auto stuck = f.submit("stuck", 50ms);
  REQUIRE(f.transport->wait_calls(1));
  f.transport->complete(f.transport->call(0), deadline_result());
  REQUIRE(stuck.inbox->wait());
  auto waiting = f.submit("waiting", 3600s);

  f.advance(29s);
  CHECK(f.sink->count(PoolEvent::Type::worker_hung) == 0);
  REQUIRE(wait_until([&] {
    f.advance(1s);
    return f.sink->count(PoolEvent::Type::worker_hung) >= 1;
  }));
  const auto hung = f.sink->of(PoolEvent::Type::worker_hung).at(0);
  CHECK(hung.as<event::WorkerHung>().tool == "stuck");
  CHECK(hung.os_pid == stuck_pid);
  CHECK(hung.as<event::WorkerHung>().overrun >= 30s);  // past the deadline by the grace
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
