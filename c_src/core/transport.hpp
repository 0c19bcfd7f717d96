// How the pool talks to one worker. gRPC in production
// (transport/grpc_transport), a fake in the unit tests.
#pragma once

#include <functional>
#include <memory>
#include <string>

#include "types.hpp"

namespace snakepit::core {

class CallHandle {
 public:
  virtual ~CallHandle() = default;
  virtual void cancel() noexcept = 0;
};

class WorkerConnection {
 public:
  using Done = std::function<void(TransportResult&&)>;
  virtual ~WorkerConnection() = default;
  // Starts the call; `done` runs exactly once, on some other thread or inline.
  virtual std::shared_ptr<CallHandle> execute(CallRequest&& request, TimePoint deadline, Done done) = 0;
  virtual void ping(Millis timeout, std::function<void(bool ok)> done) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::shared_ptr<WorkerConnection> connect(const std::string& socket_path) = 0;
};

}  // namespace snakepit::core
