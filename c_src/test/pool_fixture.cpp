// Pool tests' shared parts: the fake connection's calls, process checks
// and the fixture's setup and teardown.
#include "pool_fixture.hpp"

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

namespace pool_test {

bool pid_gone(pid_t pid) { return ::kill(pid, 0) == -1 && errno == ESRCH; }

bool pid_dead(pid_t pid) {
  if (pid_gone(pid)) return true;
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(stat)), std::istreambuf_iterator<char>());
  const auto paren = text.rfind(')');
  return paren != std::string::npos && paren + 2 < text.size() && text[paren + 2] == 'Z';
}

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

PoolFixture::PoolFixture() {
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

PoolFixture::~PoolFixture() {
  if (pool) pool->stop();
  transport->shutdown();
  pool.reset();
  for (pid_t pid : seen_pids) {
    if (!pid_gone(pid)) ::kill(pid, SIGKILL);
  }
  std::error_code ec;
  std::filesystem::remove_all(runtime_dir, ec);
}

TransportResult unavailable_result() {
  return TransportResult::ended(TransportResult::Kind::unavailable, 14, "connection refused");
}

TransportResult deadline_result() {
  return TransportResult::ended(TransportResult::Kind::deadline_exceeded, 4, "Deadline Exceeded");
}

}  // namespace pool_test
