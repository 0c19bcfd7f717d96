// WorkerProcess: a worker's pipes, phase names and spawn arguments.
#include "worker_process.hpp"

#include <fmt/format.h>

#include "child_fds.hpp"
#include "pool.hpp"

namespace snakepit::core {
namespace {
constexpr std::size_t kStderrTail = 40;
}  // namespace

const char* to_string(WorkerPhase phase) noexcept {
  switch (phase) {
    case WorkerPhase::starting: return "starting";
    case WorkerPhase::ready: return "ready";
    case WorkerPhase::draining: return "draining";
    case WorkerPhase::stopping: return "stopping";
  }
  return "starting";
}

void WorkerProcess::adopt(SpawnedProcess&& process) {
  pid = process.pid;
  pidfd = std::move(process.pidfd);
  ready_fd = std::move(process.ready);
  out_fd = std::move(process.out);
  err_fd = std::move(process.err);
  status_fd = std::move(process.status);
}

void WorkerProcess::cancel_timer(EventLoop& loop, std::optional<EventLoop::TimerId>& timer) {
  if (timer) loop.cancel_timer(*timer);
  timer.reset();
}

void WorkerProcess::cancel_timers(EventLoop& loop) {
  for (auto* timer : {&startup_timer, &heartbeat_timer, &ttl_timer, &kill_timer, &abandoned_timer})
    cancel_timer(loop, *timer);
}

std::optional<WorkerProcess::ReadyLine> WorkerProcess::ready_line(std::string_view received, bool closed) {
  ready_buffer_ += received;
  const auto newline = ready_buffer_.find('\n');
  if (newline == std::string::npos && !closed) return std::nullopt;
  ReadyLine line{ready_buffer_.substr(0, newline), newline != std::string::npos};
  ready_buffer_.clear();
  return line;
}

std::vector<std::string> WorkerProcess::output_lines(bool is_stderr, std::string_view received, bool closed) {
  auto& buffer = is_stderr ? err_buffer_ : out_buffer_;
  buffer += received;
  std::vector<std::string> lines;
  std::size_t start = 0, newline;
  while ((newline = buffer.find('\n', start)) != std::string::npos) {
    lines.emplace_back(buffer, start, newline - start);
    start = newline + 1;
  }
  buffer.erase(0, start);
  if (closed && !buffer.empty()) lines.push_back(std::exchange(buffer, {}));
  if (is_stderr) {
    for (const auto& line : lines) {
      stderr_tail_.push_back(line);
      if (stderr_tail_.size() > kStderrTail) stderr_tail_.pop_front();
    }
  }
  return lines;
}

std::vector<int> WorkerProcess::watched_fds() const {
  std::vector<int> fds;
  for (const auto* fd : {&pidfd, &ready_fd, &out_fd, &err_fd})
    if (fd->valid()) fds.push_back(fd->get());
  return fds;
}

SpawnSpec worker_spawn_spec(const PoolConfig& config, const WorkerProcess& worker) {
  SpawnSpec spec;
  spec.executable = config.executable;
  spec.argv.push_back(config.executable);
  spec.argv.insert(spec.argv.end(), config.worker_argv.begin(), config.worker_argv.end());
  spec.argv.insert(spec.argv.end(), {"--socket", worker.socket_path, "--worker-id", worker.id, "--snakepit-run-id",
                                     config.run_id});
  // The guard holds the lifeline; the worker needs no watchdog of its own.
  spec.argv.insert(spec.argv.end(), {"--ready-fd", fmt::format("{}", kReadyFd), "--lifeline-fd", "-1"});
  spec.env = config.env;
  spec.lifeline_read_fd = config.lifeline_fd;
  spec.working_dir = config.working_dir;
  return spec;
}

}  // namespace snakepit::core
