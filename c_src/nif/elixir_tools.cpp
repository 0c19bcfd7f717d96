// The Elixir-tools bridge: Python -> Elixir tool calls and telemetry
// batches from transport::ElixirToolServer handed to the registry process
// (Snakepit.Bridge), and its replies handed back.
#include <fmt/format.h>
#include <cmath>
#include <mutex>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "../transport/elixir_tool_server.hpp"
#include "../transport/grpc_transport.hpp"
#include "boundary.hpp"
#include "nifs.hpp"
#include "reply_terms.hpp"
#include "term_builder.hpp"
#include "term_encoder.hpp"

namespace snakepit::nif {
namespace {

// A Python telemetry batch as {:snakepit_python_telemetry, id, worker_id,
// pool_name, python_pid, dropped, events}, each event {parts, measurements,
// metadata, timestamp_ns, correlation_id} with [{key, value}] lists: built
// off the schedulers, so no maps here (the receiving Elixir process makes them).
ERL_NIF_TERM python_telemetry_message(ErlNifEnv* env, const NifState& nif, const transport::ElixirToolCall& call) {
  const auto& batch = *call.telemetry;
  std::vector<ERL_NIF_TERM> events;
  events.reserve(batch.events.size());
  for (const auto& event : batch.events) {
    std::vector<ERL_NIF_TERM> parts, measurements, metadata;
    for (const auto& part : event.event_parts) parts.push_back(make_binary(env, part));
    for (const auto& [key, value] : event.measurements) {
      ERL_NIF_TERM term;
      if (const auto* i = std::get_if<std::int64_t>(&value)) term = enif_make_int64(env, *i);
      else if (const auto* d = std::get_if<double>(&value); d != nullptr && std::isfinite(*d)) term = enif_make_double(env, *d);
      else if (d != nullptr) term = make_binary(env, fmt::format("{}", *d));  // enif_make_double refuses NaN/inf
      else term = make_binary(env, std::get<std::string>(value));
      measurements.push_back(enif_make_tuple2(env, make_binary(env, key), term));
    }
    for (const auto& [key, value] : event.metadata)
      metadata.push_back(enif_make_tuple2(env, make_binary(env, key), make_binary(env, value)));
    auto list = [env](std::vector<ERL_NIF_TERM>& items) {
      return enif_make_list_from_array(env, items.data(), static_cast<unsigned>(items.size()));
    };
    events.push_back(enif_make_tuple5(env, list(parts), list(measurements), list(metadata),
                                      enif_make_int64(env, event.timestamp_ns), make_binary(env, event.correlation_id)));
  }
  ERL_NIF_TERM items[] = {nif.atoms.snakepit_python_telemetry,
                          enif_make_uint64(env, call.id),
                          make_binary(env, batch.worker_id),
                          make_binary(env, batch.pool_name),
                          enif_make_int64(env, batch.python_pid),
                          enif_make_int64(env, batch.dropped),
                          enif_make_list_from_array(env, events.data(), static_cast<unsigned>(events.size()))};
  return enif_make_tuple_from_array(env, items, 7);
}

// Hands a Python -> Elixir call to the registry process as
// {:snakepit_elixir_call, id, :execute | :list, session_id, tool, params},
// or a telemetry batch as python_telemetry_message() describes.
std::optional<std::uint64_t> dispatch_elixir_call(NifState& nif, transport::ElixirToolCall&& call) {
  std::optional<ErlNifPid> handler;
  std::uint64_t token = 0;
  {
    std::lock_guard lock(nif.elixir_tools_mutex);
    handler = nif.elixir_tools_handler;
    token = nif.elixir_tools_handler_token;
  }
  if (!handler) return std::nullopt;
  ErlNifEnv* env = enif_alloc_env();
  if (call.kind == transport::ElixirToolCall::Kind::telemetry) {
    const bool sent = enif_send(calling_env(), &*handler, env, python_telemetry_message(env, nif, call));
    enif_free_env(env);
    if (!sent) return std::nullopt;
    return token;
  }
  ERL_NIF_TERM params;
  try {
    params = params_term(env, nif, call.params_json, TermBuilder::Thread::other);
  } catch (const NeedsScheduler&) {
    // Built by the registry on its scheduler: Snakepit.Native.decode_params/1.
    enif_clear_env(env);
    ERL_NIF_TERM list = enif_make_list(env, 0);
    for (auto it = call.params_json.rbegin(); it != call.params_json.rend(); ++it)
      list = enif_make_list_cell(env, enif_make_tuple2(env, make_binary(env, it->first), make_binary(env, it->second)), list);
    params = enif_make_tuple2(env, nif.atoms.json, list);
  }
  const bool execute = call.kind == transport::ElixirToolCall::Kind::execute;
  ERL_NIF_TERM message = enif_make_tuple6(
      env, nif.atoms.snakepit_elixir_call, enif_make_uint64(env, call.id),
      execute ? nif.atoms.execute : nif.atoms.list, make_binary(env, call.session_id),
      make_binary(env, call.tool), params);
  const bool sent = enif_send(calling_env(), &*handler, env, message);
  enif_free_env(env);
  if (!sent) return std::nullopt;
  return token;
}


}  // namespace

void start_grpc(NifState& nif) {
  nif.elixir_tools = std::make_unique<transport::ElixirToolServer>(
      fmt::format("{}/elixir_tools.sock", nif.runtime_dir),
      [&nif](transport::ElixirToolCall&& call) { return dispatch_elixir_call(nif, std::move(call)); });
  nif.transport = transport::make_grpc_transport(nif.elixir_tools->queue());
}

// elixir_tools_socket() -> the path the server listens on (the workers'
// SNAKEPIT_ELIXIR_SOCKET).
ERL_NIF_TERM elixir_tools_socket(ErlNifEnv* env, int, const ERL_NIF_TERM[]) {
  return make_binary(env, state(env).elixir_tools->socket_path());
}

// The tool registry died: the calls it was handed (in its mailbox or its
// tasks) will never be answered, so Python gets an error now, not at its timeout.
// The watch's reference, held since its start, goes with it.
void handler_down(ErlNifEnv*, void* object, ErlNifPid*, ErlNifMonitor*) {
  const auto& watch = *static_cast<HandlerWatch*>(object);
  NifState& nif = *watch.nif;
  {
    std::lock_guard lock(nif.elixir_tools_mutex);
    if (nif.elixir_tools_handler_token == watch.token) nif.elixir_tools_handler.reset();
  }
  nif.elixir_tools->fail_pending(watch.token, "the Elixir tool registry stopped before answering");
  enif_release_resource(object);
}

// elixir_tools_start(handler_pid) -> {:ok, listening_path}. The server
// listens from the library's load (it owns the queue thread every gRPC
// operation completes on); this names who takes its calls. A registry that
// restarts calls it again.
ERL_NIF_TERM elixir_tools_start(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto& nif = state(env);
  const ErlNifPid handler = ArgReader(env, argv).local_pid(0, "a local pid (the tool registry)");
  std::lock_guard lock(nif.elixir_tools_mutex);
  auto* watch = static_cast<HandlerWatch*>(enif_alloc_resource(nif.handler_watch_type, sizeof(HandlerWatch)));
  watch->nif = &nif;
  watch->token = nif.elixir_tools_handler_token + 1;
  if (enif_monitor_process(env, watch, &handler, nullptr) != 0) {
    enif_release_resource(watch);
    return error_with(env, "the tool registry process is not alive");
  }
  // Each watch lives until its `down` (a monitor ends with its object): a
  // restarted registry's start can come before its predecessor's `down`,
  // which must still fail the calls the dead one held.
  nif.elixir_tools_handler = handler;
  nif.elixir_tools_handler_token = watch->token;
  return enif_make_tuple2(env, nif.atoms.ok, make_binary(env, nif.elixir_tools->socket_path()));
}

// elixir_tool_reply(id, {:ok, value} | {:error, message} | {:not_found, message})
// for an :execute call:
// :ok, or :needs_preprocess when value holds structs.
ERL_NIF_TERM elixir_tool_reply(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto& nif = state(env);
  const auto id = ArgReader(env, argv).u64(0, "a call id");
  int arity;
  const ERL_NIF_TERM* reply;
  if (!enif_get_tuple(env, argv[1], &arity, &reply) || arity != 2) throw BadArg{1, "{:ok | :error | :not_found, term}"};
  bool ok = enif_is_identical(reply[0], nif.atoms.ok);
  const bool not_found = enif_is_identical(reply[0], nif.atoms.not_found);
  std::string payload;
  if (ok) {
    TermEncoder encoder(env, nif.atoms, 0);
    const auto status = encoder.encode_value(reply[1], payload);
    // Nothing is sent: Snakepit.Args converts the structs and the caller replies again.
    if (status == TermEncoder::Status::needs_preprocess) return nif.atoms.needs_preprocess;
    if (status != TermEncoder::Status::ok) {
      ok = false;
      payload = encoder.error_message();
    }
  } else if (!get_string(env, reply[1], payload)) {
    throw BadArg{1, "{:error | :not_found, message} with a binary message"};
  }
  nif.elixir_tools->reply_execute(id, ok, std::move(payload), not_found);
  return nif.atoms.ok;
}

// elixir_tools_list_reply(id, [{name, description}]) for a :list call.
ERL_NIF_TERM elixir_tools_list_reply(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto& nif = state(env);
  const auto id = ArgReader(env, argv).u64(0, "a call id");
  std::vector<transport::ElixirToolSpec> tools;
  ERL_NIF_TERM list = argv[1], head;
  while (enif_get_list_cell(env, list, &head, &list)) {
    int arity;
    const ERL_NIF_TERM* pair;
    transport::ElixirToolSpec spec;
    if (!enif_get_tuple(env, head, &arity, &pair) || arity != 2 || !get_string(env, pair[0], spec.name) ||
        !get_string(env, pair[1], spec.description))
      throw BadArg{1, "a list of {name, description} binaries"};
    tools.push_back(std::move(spec));
  }
  nif.elixir_tools->reply_list(id, std::move(tools));
  return nif.atoms.ok;
}

}  // namespace snakepit::nif
