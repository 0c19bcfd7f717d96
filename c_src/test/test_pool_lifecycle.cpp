// Pool, lifecycle: stop, worker reports, recycling (the old worker serves
// until its successor is ready) and strict sessions across it.
#include "pool_fixture.hpp"

#include <fstream>

using namespace pool_test;

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
  // No respawn after stop (its loop has stopped).
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
  CHECK(exited[0].as<event::WorkerExited>().how.find("signal") != std::string::npos);
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

TEST_CASE("pool: a second recycle while the first retiree still exits retires the right worker") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.max_requests = 1;
  f.config.graceful_shutdown = 3s;
  // SIGTERM starts a 1 s shutdown: the first retiree is still there when
  // its successor is recycled in turn.
  f.config.worker_argv = slow_exit_worker_argv("1");
  f.start();
  REQUIRE(f.wait_ready(1));
  f.transport->set_mode(FakeTransport::Mode::thread_ok);
  auto first = f.submit("first");
  REQUIRE(first.inbox->wait());
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 2));
  auto second = f.submit("second");  // on the successor: recycled too
  REQUIRE(second.inbox->wait());
  CHECK(second.inbox->first().worker_id != first.inbox->first().worker_id);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_ready, 3));
  f.remember_pids();
  // Both retirees exit; the third worker alone serves the slot.
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_exited, 2));
  const auto workers = f.pool->workers();
  REQUIRE(workers.size() == 1);
  CHECK(workers.at(0).id == f.sink->of(PoolEvent::Type::worker_ready).at(2).worker_id);
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
  f.transport->complete_ok(f.transport->call(0), "a");  // dispatches, if at all, before it returns
  CHECK(f.transport->call_count() == 3);
  for (int i = 1; i < 3; ++i) {
    f.transport->complete_ok(f.transport->call(static_cast<std::size_t>(i) + 1), "ok");
    REQUIRE(f.transport->wait_calls(static_cast<std::size_t>(i) + 3));
    CHECK(f.transport->call(static_cast<std::size_t>(i) + 2)->socket_path == session_socket);
  }
  f.transport->complete_ok(f.transport->call(4), "ok");
  for (auto& s : session) REQUIRE(s.inbox->wait());
}

