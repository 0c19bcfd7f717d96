// The NIF's private data (everything per loaded library) and the resource
// objects it hands to Elixir.
#pragma once

#include <erl_nif.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "../codec/json.hpp"
#include "../core/pool.hpp"
#include "../core/unique_fd.hpp"
#include "../transport/elixir_tool_server.hpp"
#include "atoms.hpp"
#include "caller_monitors.hpp"
#include "env_pool.hpp"

namespace snakepit::nif {

struct PoolResource {
  std::shared_ptr<core::Pool> pool;
  CallerMonitors callers;
};

// A reply's bytes handed to Elixir without a copy (enif_make_resource_binary).
struct PayloadResource {
  std::string bytes;
};

struct NifState {
  Atoms atoms;
  ErlNifResourceType* pool_type = nullptr;
  ErlNifResourceType* payload_type = nullptr;
  // Declared before the transport, whose calls give their envs back here.
  EnvPool reply_envs;
  // Made at load and never stopped. It owns the queue thread the
  // transport's calls complete on, so it is declared (and outlives) first.
  std::unique_ptr<transport::ElixirToolServer> elixir_tools;
  std::shared_ptr<core::Transport> transport;
  codec::ParserCache parsers;
  std::string run_id;
  std::string runtime_dir;
  // Workers hold the read end; when this process dies they see EOF.
  core::UniqueFd lifeline_read;
  core::UniqueFd lifeline_write;
  // The worker guard binary, next to this library in priv/.
  std::string guard_path;

  // Who takes Python -> Elixir tool calls: the tool registry, once started.
  std::mutex elixir_tools_mutex;
  std::optional<ErlNifPid> elixir_tools_handler;
  // Names the current handler to the server: calls carry the token of the
  // handler they were sent to, so a dead handler's calls can be failed.
  std::uint64_t elixir_tools_handler_token = 0;
  // Monitors each handler (its `down` fails the calls a dead handler held,
  // then releases the watch).
  ErlNifResourceType* handler_watch_type = nullptr;

  NifState() = default;
  NifState(const NifState&) = delete;
  NifState& operator=(const NifState&) = delete;
};

// The object a tool-registry monitor hangs on.
struct HandlerWatch {
  NifState* nif;
  std::uint64_t token;
};

inline NifState& state(ErlNifEnv* env) { return *static_cast<NifState*>(enif_priv_data(env)); }

}  // namespace snakepit::nif
