// The gRPC server Python workers call to run Elixir tools
// (ExecuteElixirTool, GetExposedElixirTools). It only parks each call and
// hands it to a dispatcher; the answer comes later from whoever ran the
// tool, through reply_*(). No erl_nif here.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace snakepit::transport {

struct ElixirToolCall {
  enum class Kind { execute, list };
  std::uint64_t id = 0;
  Kind kind = Kind::execute;
  std::string session_id;
  std::string tool;
  std::vector<std::pair<std::string, std::string>> params_json;  // name, JSON text
};

struct ElixirToolSpec {
  std::string name;
  std::string description;
};

class ElixirToolServer {
 public:
  // Returns false when the call cannot be handed over; it is then answered
  // at once with an error.
  using Dispatch = std::function<bool(ElixirToolCall&&)>;

  // Listens on unix:socket_path. Throws std::runtime_error on failure.
  ElixirToolServer(const std::string& socket_path, Dispatch dispatch);
  ~ElixirToolServer();
  ElixirToolServer(const ElixirToolServer&) = delete;
  ElixirToolServer& operator=(const ElixirToolServer&) = delete;

  // Each pending call is answered once; unknown ids are ignored.
  void reply_execute(std::uint64_t id, bool ok, std::string result_json_or_message);
  void reply_list(std::uint64_t id, std::vector<ElixirToolSpec> tools);
  // Ends every pending call with an id below `below_id` with UNAVAILABLE
  // (whoever was to answer them is gone). Returns how many.
  std::size_t fail_pending(std::uint64_t below_id, const std::string& message);
  // The id the next call will get.
  std::uint64_t next_call_id() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace snakepit::transport
