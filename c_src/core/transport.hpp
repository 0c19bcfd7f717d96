// How the pool talks to one worker. gRPC in production
// (transport/grpc_transport), a fake in the unit tests.
#pragma once

#include <functional>
#include <cstdint>
#include <memory>
#include <optional>
#include <vector>
#include <string>

#include "types.hpp"

namespace snakepit::core {

class CallHandle {
 public:
  virtual ~CallHandle() = default;
  virtual void cancel() noexcept = 0;
  // Streams: the consumer took `credits` more chunks; reading resumes.
  virtual void grant(int /*credits*/) noexcept {}
};

// One tool's line in a worker's thread-safety record.
struct ToolConcurrency {
  std::string tool;
  int max_concurrency = 0;
  std::int64_t calls = 0;
  bool thread_safe = false;
};

class WorkerConnection {
 public:
  using Done = std::function<void(TransportResult&&)>;
  virtual ~WorkerConnection() = default;
  // Starts the call; `done` runs exactly once, on some other thread or inline.
  virtual std::shared_ptr<CallHandle> execute(CallRequest&& request, TimePoint deadline, Done done) = 0;
  // Reads at most `window` chunks ahead of the consumer's grants.
  using Chunk = std::function<void(std::string&& data, bool binary, bool is_final)>;
  virtual std::shared_ptr<CallHandle> execute_stream(CallRequest&& request, TimePoint deadline, int window,
                                                     Chunk on_chunk, Done done) = 0;
  // `wait_for_ready`: wait (up to the timeout) for a broken connection to
  // come back instead of failing at once, as a liveness probe should.
  virtual void ping(Millis timeout, bool wait_for_ready, std::function<void(bool ok)> done) = 0;
  // The request ids of the calls the worker is running; nullopt when it did
  // not answer in time.
  using Running = std::function<void(std::optional<std::vector<std::uint64_t>>)>;
  virtual void running(Millis timeout, Running done) = 0;
  // nullopt when the worker did not answer in time.
  virtual void report(Millis timeout, std::function<void(std::optional<std::vector<ToolConcurrency>>)> done) = 0;
};

class Transport {
 public:
  virtual ~Transport() = default;
  virtual std::shared_ptr<WorkerConnection> connect(const std::string& socket_path) = 0;
};

}  // namespace snakepit::core
