// Values shared by the runtime's parts. No erl_nif here.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace snakepit::core {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
using Millis = std::chrono::milliseconds;
// Injected so scheduling rules are testable without waiting.
using ClockFn = std::function<TimePoint()>;

enum class ErrorCategory { worker, timeout, python_error, grpc_error, validation, pool };

const char* to_string(ErrorCategory category) noexcept;

struct Error {
  ErrorCategory category = ErrorCategory::pool;
  std::string reason;  // e.g. "queue_timeout"; becomes details.reason
  std::string message;
  std::string python_type;
  std::string traceback;
  int grpc_status = -1;
  std::string worker_id;
  // How the worker ended, when an error is about its end and that is known.
  std::optional<int> exit_status;  // exited with this code
  std::optional<int> exit_signal;  // killed by this signal
};

// One named argument, already encoded: JSON text, or raw bytes.
struct Param {
  std::string name;
  std::string data;
  bool binary = false;
};

// How strongly a session sticks to its worker.
enum class Affinity {
  hint,              // prefer the session's worker, else any
  strict_queue,      // wait for the session's worker
  strict_fail_fast,  // the session's worker or a worker_busy error
};

struct CallRequest {
  std::uint64_t request_id = 0;  // the pool's id, which the worker reports while it runs the call
  std::string tool;
  std::string session_id;
  std::string correlation_id;  // empty: none given
  std::vector<Param> params;
  Millis timeout{30000};
  Affinity affinity = Affinity::hint;
  bool stream = false;
  bool thread_sensitive = false;  // run the tool on the worker's main thread
};

// How a call ended, as the transport classified it: core sees no wire
// status codes and no worker error object, only these kinds.
struct TransportResult {
  enum class Kind {
    ok,                 // payload
    tool_error,         // the tool raised: error_type, message, traceback
    deadline_exceeded,  // the caller's deadline passed
    cancelled,          // the caller cancelled it
    unavailable,        // the worker's socket refused or dropped the call
    failed,             // any other transport failure: message
  };
  Kind kind = Kind::ok;
  std::string payload;  // JSON text or raw bytes
  bool payload_binary = false;
  std::string error_type;
  std::string message;
  std::string traceback;
  int status_code = -1;  // the transport's own status code, passed on as is

  static TransportResult success(std::string payload, bool binary = false);
  static TransportResult tool_error(std::string type, std::string message, std::string traceback);
  static TransportResult ended(Kind kind, int status_code, std::string message);
};

// Exactly one per request.
struct Outcome {
  bool ok = false;
  std::string payload;
  bool payload_binary = false;
  Error error;
  std::string worker_id;
};

// Delivers the one outcome of a request to whoever waits for it; for a
// stream, each chunk before that.
class Responder {
 public:
  virtual ~Responder() = default;
  virtual void deliver(Outcome&& outcome) noexcept = 0;
  virtual void chunk(std::string&& /*data*/, bool /*binary*/, bool /*is_final*/) noexcept {}
  // The request left the queue for a worker (before it is sent): a remote
  // caller re-routes a call lost with its node only if this never came.
  virtual void started() noexcept {}
};

}  // namespace snakepit::core
