// The pool's errors, one named constructor each, so a reason and its
// message are written in one place. Messages are part of the Elixir-visible
// contract (Snakepit.Error): change them with the tests.
#pragma once

#include <cstddef>
#include <deque>
#include <string>
#include <string_view>

#include "spawner.hpp"
#include "types.hpp"

namespace snakepit::core::errors {

// Worker start.
Error spawn_failed(const std::string& worker_id, std::string_view executable, std::string_view what);
Error startup_timeout(const std::string& worker_id, Millis timeout, const std::deque<std::string>& stderr_tail);
// The ready pipe carried an error object (`reported`, may be empty) or closed without a line.
Error startup_reported(const std::string& worker_id, std::string_view reported,
                       const std::deque<std::string>& stderr_tail);
Error startup_exited(const std::string& worker_id, std::string_view how, const ExitCause& cause,
                     const std::deque<std::string>& stderr_tail);

// Refused or ended by the pool.
Error shutting_down(std::string_view pool);
Error stopped(std::string_view pool);
Error stopped_before_run(std::string_view pool);
Error pool_gone();
Error pool_saturated(std::string_view pool, std::size_t max_queue);
Error queue_timeout(std::string_view pool, Millis waited);
Error cancelled();

// Sessions.
Error session_worker_gone(std::string_view session_id, std::string_view worker_id);
Error session_worker_exited(std::string_view session_id, std::string_view worker_id, std::string_view how);
Error session_worker_busy(std::string_view session_id);

// A running call.
Error worker_timeout(std::string_view tool, Millis timeout);
Error worker_unavailable(std::string_view worker_id, std::string_view message, int status_code);
Error worker_exited(std::string_view worker_id, std::string_view how, const ExitCause& cause);
Error transport_failed(std::string message, int status_code);
Error python_error(std::string type, std::string message, std::string traceback);

Outcome failure(Error error);

}  // namespace snakepit::core::errors
