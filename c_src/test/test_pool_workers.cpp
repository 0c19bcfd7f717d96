// Pool, worker processes: output, exits and replacement, start failures
// and their backoff, the startup timeout, arguments and process groups.
#include "pool_fixture.hpp"

#include <fstream>

using namespace pool_test;

TEST_CASE("pool: worker output lines become events") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.worker_argv = {"-c", "echo hello out; echo 'oops err' >&2; printf '{\"status\":\"ready\"}\\n' >&3; exec sleep 30"};
  f.start();
  REQUIRE(f.wait_ready(1));
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_output, 2));
  bool saw_out = false, saw_err = false;
  for (const auto& e : f.sink->of(PoolEvent::Type::worker_output)) {
    const auto& output = e.as<event::WorkerOutput>();
    if (output.stream == OutputStream::out && output.line == "hello out") saw_out = true;
    if (output.stream == OutputStream::err && output.line == "oops err") saw_err = true;
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
  f.transport->complete_ok(f.transport->call(0), "late");  // runs its completion here, at once
  CHECK(s.inbox->count() == 1);

  // The new worker serves requests.
  f.transport->set_mode(FakeTransport::Mode::thread_ok);
  auto after = f.submit("after");
  REQUIRE(after.inbox->wait());
  CHECK(after.inbox->first().ok);
}

TEST_CASE("pool: a worker reporting a start error; restarts back off") {
  PoolFixture f;
  f.config.pool_size = 1;
  f.config.restart_backoff = 10s;
  f.config.max_restart_backoff = 100s;
  f.config.queue_timeout = 600s;
  f.config.worker_argv = {
      "-c",
      "printf '{\"status\":\"error\",\"type\":\"ImportError\",\"message\":\"no module\",\"traceback\":\"TB\"}\\n' >&3; "
      "exit 1"};
  f.start();
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_start_failed, 1));
  const auto failed = f.sink->of(PoolEvent::Type::worker_start_failed)[0];
  CHECK(failed.as<event::WorkerStartFailed>().error.category == ErrorCategory::worker);
  CHECK(failed.as<event::WorkerStartFailed>().error.reason == "startup_failed");
  CHECK(failed.as<event::WorkerStartFailed>().error.python_type == "ImportError");
  CHECK(failed.as<event::WorkerStartFailed>().error.message == "no module");
  CHECK(failed.as<event::WorkerStartFailed>().error.traceback == "TB");
  CHECK_FALSE(failed.worker_id.empty());
  CHECK(failed.as<event::WorkerStartFailed>().error.worker_id == failed.worker_id);

  auto last = f.pool->stats().last_start_error;
  REQUIRE(last.has_value());
  CHECK(last->python_type == "ImportError");
  CHECK(last->traceback == "TB");

  // The first restart is at once, the next ones back off: 10 s, then 20 s.
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_start_failed, 2));
  REQUIRE(wait_until([&] { return f.pool->stats().worker_restarts == 2; }));
  f.advance(9s);
  CHECK(f.sink->count(PoolEvent::Type::worker_spawned) == 2);
  f.advance(1s);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_start_failed, 3));
  REQUIRE(wait_until([&] { return f.pool->stats().worker_restarts == 3; }));
  f.advance(19s);
  CHECK(f.sink->count(PoolEvent::Type::worker_spawned) == 3);
  f.advance(1s);
  CHECK(f.sink->count(PoolEvent::Type::worker_spawned) == 4);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_start_failed, 4));
  const auto stats = f.pool->stats();
  CHECK(stats.ready == 0);
  CHECK(f.sink->count(PoolEvent::Type::worker_ready) == 0);
  // One start failure per attempt, not two (ready line and exit both seen).
  const auto spawned = f.sink->count(PoolEvent::Type::worker_spawned);
  const auto start_failed = f.sink->count(PoolEvent::Type::worker_start_failed);
  CHECK(start_failed <= spawned);
  CHECK(start_failed + 1 >= spawned);

  // Queued requests wait (and time out) rather than fail at once.
  auto s = f.submit("x", 30s);
  REQUIRE_FALSE(s.refused.has_value());
  CHECK(s.inbox->count() == 0);
  f.advance(30s);
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
  CHECK(failed.as<event::WorkerStartFailed>().error.category == ErrorCategory::worker);
  CHECK(failed.as<event::WorkerStartFailed>().error.reason == "startup_failed");
  CHECK_FALSE(failed.as<event::WorkerStartFailed>().error.message.empty());
  CHECK(failed.as<event::WorkerStartFailed>().error.traceback.find("Traceback: it broke") != std::string::npos);
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
  f.config.startup_timeout = 60s;
  f.config.restart_backoff = 1s;
  f.config.worker_argv = {"-c", "exec sleep 30"};
  f.start();
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_spawned, 1));
  f.advance(59s);
  CHECK(f.sink->count(PoolEvent::Type::worker_start_failed) == 0);
  f.advance(1s);
  REQUIRE(f.sink->wait_count(PoolEvent::Type::worker_start_failed, 1));
  f.remember_pids();
  const auto failed = f.sink->of(PoolEvent::Type::worker_start_failed)[0];
  CHECK(failed.as<event::WorkerStartFailed>().error.reason == "startup_timeout");
  CHECK(failed.as<event::WorkerStartFailed>().error.category == ErrorCategory::worker);
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
  CHECK(failed.as<event::WorkerStartFailed>().error.reason == "spawn_failed");
  CHECK(failed.as<event::WorkerStartFailed>().error.message.find("/nonexistent/snakepit-python") != std::string::npos);
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
    const auto& line = e.as<event::WorkerOutput>().line;
    if (line.rfind("args:", 0) == 0) args = line;
    if (line.rfind("var:", 0) == 0) var = line;
  }
  CHECK(args == "args:--socket " + f.runtime_dir + "/" + id + ".sock --worker-id " + id +
                    " --snakepit-run-id test --ready-fd 3 --lifeline-fd -1");
  CHECK(var == "var:hello");
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

