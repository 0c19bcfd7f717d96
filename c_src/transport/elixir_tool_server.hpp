// The gRPC server Python workers call to run Elixir tools
// (ExecuteElixirTool, GetExposedElixirTools) and to hand over their telemetry
// (EmitTelemetry). It only parks each call and hands it to a dispatcher; the
// answer comes later from whoever took it, through reply_*(). It owns the
// NIF's one gRPC queue thread (queue_thread.hpp): a server's completion
// queue serves client calls too, so the transport's calls share it. No
// erl_nif here.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <variant>
#include <vector>

namespace grpc {
class CompletionQueue;
}

namespace snakepit::transport {

// One Python telemetry event (proto TelemetryEvent), in plain C++ types.
struct TelemetryEventData {
  using Value = std::variant<std::int64_t, double, std::string>;
  std::vector<std::string> event_parts;
  std::vector<std::pair<std::string, Value>> measurements;
  std::vector<std::pair<std::string, std::string>> metadata;
  std::int64_t timestamp_ns = 0;
  std::string correlation_id;
};

struct TelemetryBatchData {
  std::string worker_id;
  std::string pool_name;
  std::int64_t python_pid = 0;
  std::int64_t dropped = 0;
  std::vector<TelemetryEventData> events;
};

struct ElixirToolCall {
  enum class Kind { execute, list, telemetry };
  std::uint64_t id = 0;
  Kind kind = Kind::execute;
  std::string session_id;
  std::string tool;
  std::vector<std::pair<std::string, std::string>> params_json;  // name, JSON text
  std::unique_ptr<TelemetryBatchData> telemetry;                 // Kind::telemetry only
};

struct ElixirToolSpec {
  std::string name;
  std::string description;
};

class ElixirToolServer {
 public:
  // Hands the call over and returns a token naming who took it (see
  // fail_pending), or nullopt when it cannot be handed over; it is then
  // answered at once with an error.
  using Dispatch = std::function<std::optional<std::uint64_t>(ElixirToolCall&&)>;

  // Listens on unix:socket_path. Throws std::runtime_error on failure.
  ElixirToolServer(const std::string& socket_path, Dispatch dispatch);
  ~ElixirToolServer();
  ElixirToolServer(const ElixirToolServer&) = delete;
  ElixirToolServer& operator=(const ElixirToolServer&) = delete;

  // Where it listens: fixed for its life.
  const std::string& socket_path() const { return socket_path_; }
  // The queue every gRPC operation of the NIF completes on; it lives as
  // long as this server.
  grpc::CompletionQueue& queue();

  // Each pending call is answered once; unknown ids are ignored. A
  // telemetry batch is answered by reply_execute too (the payload is unused
  // when ok, the error message otherwise).
  // `not_found`: the tool is not registered for the session (Python raises
  // ElixirToolNotFoundError rather than ElixirToolError).
  void reply_execute(std::uint64_t id, bool ok, std::string result_json_or_message, bool not_found = false);
  void reply_list(std::uint64_t id, std::vector<ElixirToolSpec> tools);
  // Whoever took the calls dispatched with `token` is gone: those pending
  // end now with UNAVAILABLE, and so will any later handed to it. Returns
  // how many ended now.
  std::size_t fail_pending(std::uint64_t token, const std::string& message);

 private:
  struct Impl;
  std::string socket_path_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace snakepit::transport
