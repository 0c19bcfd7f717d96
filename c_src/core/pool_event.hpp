// What a pool reports to its owner (EventSink): one typed payload per kind
// of event. The NIF turns each into the message Snakepit.Pool handles.
#pragma once

#include <string>
#include <variant>

#include "types.hpp"

namespace snakepit::core {

enum class OutputStream { out, err };
enum class RecycleReason { ttl_expired, max_requests };
const char* to_string(RecycleReason reason) noexcept;

namespace event {
struct WorkerSpawned {};
struct WorkerReady {};
struct WorkerStartFailed {
  Error error;
};
struct WorkerExited {
  std::string how;  // "killed by signal SIGSEGV (Segmentation fault)", ...
};
struct WorkerOutput {
  OutputStream stream;
  std::string line;
};
struct CapacityReached {};
struct HeartbeatTimeout {
  int missed = 0;  // in a row
};
struct WorkerRecycled {
  RecycleReason reason;
};
struct WorkerHung {
  std::string tool;  // the call that overran
  Millis overrun;    // how far past its deadline
};
struct InternalError {
  std::string message;  // what went wrong on the pool's own thread
};
}  // namespace event

struct PoolEvent {
  // In the order of Data's alternatives.
  enum class Type {
    worker_spawned,
    worker_ready,
    worker_start_failed,
    worker_exited,
    worker_output,
    capacity_reached,
    heartbeat_timeout,
    worker_recycled,
    worker_hung,
    internal_error,
  };
  using Data = std::variant<event::WorkerSpawned, event::WorkerReady, event::WorkerStartFailed, event::WorkerExited,
                            event::WorkerOutput, event::CapacityReached, event::HeartbeatTimeout,
                            event::WorkerRecycled, event::WorkerHung, event::InternalError>;

  std::string worker_id;  // empty: about the pool
  int os_pid = 0;         // 0: not known or not relevant
  Data data;

  Type type() const noexcept { return static_cast<Type>(data.index()); }
  template <class T>
  const T& as() const {
    return std::get<T>(data);
  }
};

class EventSink {
 public:
  virtual ~EventSink() = default;
  virtual void emit(PoolEvent&& event) noexcept = 0;
};

}  // namespace snakepit::core
