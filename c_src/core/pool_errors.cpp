// Named constructors for the pool's errors.
#include "pool_errors.hpp"

#include <fmt/format.h>

#include "python_error.hpp"

namespace snakepit::core::errors {
namespace {

Error make(ErrorCategory category, std::string reason, std::string message) {
  Error error;
  error.category = category;
  error.reason = std::move(reason);
  error.message = std::move(message);
  return error;
}

std::string join_tail(const std::deque<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text.append(line).push_back('\n');
  return text;
}

}  // namespace

Error spawn_failed(const std::string& worker_id, std::string_view executable, std::string_view what) {
  auto error = make(ErrorCategory::worker, "spawn_failed", fmt::format("could not start {}: {}", executable, what));
  error.worker_id = worker_id;
  return error;
}

Error startup_timeout(const std::string& worker_id, Millis timeout, const std::deque<std::string>& stderr_tail) {
  auto error = make(ErrorCategory::worker, "startup_timeout",
                    fmt::format("worker {} did not report ready within {} ms", worker_id, timeout.count()));
  error.traceback = join_tail(stderr_tail);
  error.worker_id = worker_id;
  return error;
}

Error startup_reported(const std::string& worker_id, std::string_view reported,
                       const std::deque<std::string>& stderr_tail) {
  auto error = make(ErrorCategory::worker, "startup_failed", {});
  error.worker_id = worker_id;
  if (!reported.empty()) parse_python_error(reported, error);
  if (error.message.empty()) {
    error.message = fmt::format("worker {} closed its ready pipe without reporting ready", worker_id);
    error.traceback = join_tail(stderr_tail);
  }
  return error;
}

Error startup_exited(const std::string& worker_id, std::string_view how, const ExitCause& cause,
                     const std::deque<std::string>& stderr_tail) {
  auto error = make(ErrorCategory::worker, "startup_failed",
                    fmt::format("worker {} {} before reporting ready", worker_id, how));
  error.traceback = join_tail(stderr_tail);
  error.worker_id = worker_id;
  error.exit_status = cause.exit_status;
  error.exit_signal = cause.signal;
  return error;
}

Error shutting_down(std::string_view pool) {
  return make(ErrorCategory::pool, "pool_not_initialized", fmt::format("pool {} is shutting down", pool));
}

Error stopped(std::string_view pool) {
  return make(ErrorCategory::pool, "pool_not_initialized", fmt::format("pool {} stopped", pool));
}

Error stopped_before_run(std::string_view pool) {
  return make(ErrorCategory::pool, "pool_not_initialized",
              fmt::format("pool {} stopped before the request ran", pool));
}

Error pool_gone() { return make(ErrorCategory::pool, "pool_not_initialized", "pool stopped"); }

Error pool_saturated(std::string_view pool, std::size_t max_queue) {
  return make(ErrorCategory::pool, "pool_saturated",
              fmt::format("pool {} queue is full ({} waiting)", pool, max_queue));
}

Error queue_timeout(std::string_view pool, Millis waited) {
  return make(ErrorCategory::timeout, "queue_timeout",
              fmt::format("no worker of pool {} became free within {} ms", pool, waited.count()));
}

Error cancelled() { return make(ErrorCategory::timeout, "cancelled", "request cancelled by its caller"); }

Error session_worker_gone(std::string_view session_id, std::string_view worker_id) {
  return make(ErrorCategory::pool, "session_worker_unavailable",
              fmt::format("session {} was bound to worker {}, which is gone", session_id, worker_id));
}

Error session_worker_exited(std::string_view session_id, std::string_view worker_id, std::string_view how) {
  return make(ErrorCategory::pool, "session_worker_unavailable",
              fmt::format("the worker of session {}, {}, {}", session_id, worker_id, how));
}

Error session_worker_busy(std::string_view session_id) {
  return make(ErrorCategory::pool, "worker_busy", fmt::format("the worker of session {} is busy", session_id));
}

Error worker_timeout(std::string_view tool, Millis timeout) {
  return make(ErrorCategory::timeout, "worker_timeout",
              fmt::format("tool {} did not finish within {} ms", tool, timeout.count()));
}

Error worker_unavailable(std::string_view worker_id, std::string_view message, int status_code) {
  auto error = make(ErrorCategory::worker, "worker_unavailable",
                    fmt::format("worker {} went away while running the request: {}", worker_id, message));
  error.grpc_status = status_code;
  return error;
}

Error worker_exited(std::string_view worker_id, std::string_view how, const ExitCause& cause) {
  auto error = make(ErrorCategory::worker, "worker_exited",
                    fmt::format("worker {} {} while running the request", worker_id, how));
  error.exit_status = cause.exit_status;
  error.exit_signal = cause.signal;
  return error;
}

Error transport_failed(std::string message, int status_code) {
  auto error = make(ErrorCategory::grpc_error, "grpc_error", std::move(message));
  error.grpc_status = status_code;
  return error;
}

Error python_error(std::string type, std::string message, std::string traceback) {
  auto error = make(ErrorCategory::python_error, "python_error", std::move(message));
  error.python_type = std::move(type);
  error.traceback = std::move(traceback);
  return error;
}

Outcome failure(Error error) {
  Outcome outcome;
  outcome.error = std::move(error);
  return outcome;
}

}  // namespace snakepit::core::errors
