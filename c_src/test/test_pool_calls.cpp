// Pool, calls: dispatch, outcomes, the queue (order, saturation, timeouts)
// and cancelling; real worker processes, a fake transport.
#include "pool_fixture.hpp"

#include <fstream>

using namespace pool_test;

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
  // Not dispatched while the only slot is taken (submit dispatches or queues at once).
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
  CHECK(refused.inbox->count() == 0);
}

TEST_CASE("pool: a queued request times out with queue_timeout") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.queue_timeout = 60s;
  f.start();
  REQUIRE(f.wait_ready(1));
  auto running = f.submit("running");
  REQUIRE(f.transport->wait_calls(1));
  auto waiting = f.submit("waiting", 3600s);
  REQUIRE_FALSE(waiting.refused.has_value());
  f.advance(59s);
  CHECK(waiting.inbox->count() == 0);  // not due yet
  f.advance(1s);
  REQUIRE(waiting.inbox->wait(0ms));
  auto outcome = waiting.inbox->first();
  CHECK_FALSE(outcome.ok);
  CHECK(outcome.error.category == ErrorCategory::timeout);
  CHECK(outcome.error.reason == "queue_timeout");
  CHECK(outcome.error.message == "no worker of pool test became free within 60000 ms");
  const auto stats = f.pool->stats();
  CHECK(stats.queue_timeouts == 1);
  CHECK(stats.queued == 0);
  // It never reaches a worker, even once the slot frees up.
  f.transport->complete_ok(f.transport->call(0), "done");
  REQUIRE(running.inbox->wait());
  CHECK(f.transport->call_count() == 1);
  CHECK(waiting.inbox->count() == 1);
}

TEST_CASE("pool: a short per-call timeout expires on time behind a longer queued wait") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.queue_timeout = 600s;
  f.start();
  REQUIRE(f.wait_ready(1));
  auto running = f.submit("running");
  REQUIRE(f.transport->wait_calls(1));
  auto patient = f.submit("patient", 3600s);  // waits up to 600 s
  auto hasty = f.submit("hasty", 30s);    // waits up to 30 s
  f.advance(30s);
  REQUIRE(hasty.inbox->wait(0ms));
  CHECK(hasty.inbox->first().error.reason == "queue_timeout");
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

