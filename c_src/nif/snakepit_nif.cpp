// The only translation unit that knows the BEAM: resource types, argument
// decoding, reply building, enif_send. Everything else is in core/.
#include <erl_nif.h>
#include <dlfcn.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>

#include "../codec/json.hpp"
#include "../core/pool.hpp"
#include "../transport/elixir_tool_server.hpp"
#include "../transport/grpc_transport.hpp"
#include "atoms.hpp"
#include "nif_state.hpp"
#include "reply_terms.hpp"
#include "term_builder.hpp"
#include "term_encoder.hpp"

namespace snakepit::nif {
namespace {

using core::Millis;

// Arguments encoded past this many bytes on a normal scheduler move the
// call to a dirty scheduler (the ~1 ms rule).
constexpr std::size_t kSchedulerEncodeBudget = 64 * 1024;
// Replies decoded on the caller's scheduler past this size move to a dirty one.
constexpr std::size_t kSchedulerDecodeBudget = 32 * 1024;

// ------------------------------------------------------------- responders

class ProcessResponder final : public core::Responder {
 public:
  // Monitors the caller so that its death cancels request `id`.
  ProcessResponder(NifState& nif, PoolResource* resource, ErlNifPid pid, ERL_NIF_TERM ref, ErlNifEnv* caller_env,
                   core::RequestId id)
      : nif_(nif), resource_(resource), pid_(pid), env_(enif_alloc_env()) {
    ref_ = enif_make_copy(env_, ref);
    enif_keep_resource(resource_);
    std::lock_guard lock(resource_->monitors_mutex);
    monitored_ = enif_monitor_process(caller_env, resource_, &pid_, &monitor_) == 0;
    if (monitored_) resource_->monitors.emplace(monitor_, id);
  }
  ~ProcessResponder() override {
    if (env_ != nullptr) enif_free_env(env_);
    forget_monitor();
    enif_release_resource(resource_);
  }
  ProcessResponder(const ProcessResponder&) = delete;
  ProcessResponder& operator=(const ProcessResponder&) = delete;

  // {ref, :chunk, map}, or {ref, :chunk, {:json, bytes, is_final}} for a
  // chunk only a scheduler may build (Snakepit.Native.decode_chunk/2).
  void chunk(std::string&& data, bool binary, bool is_final) noexcept override {
    // Chunks and the outcome can race (a worker exit ends a stream): the
    // lock keeps ref_ alive and the order chunk-then-outcome.
    std::lock_guard lock(mutex_);
    if (env_ == nullptr) return;
    ErlNifEnv* env = enif_alloc_env();
    const Atoms& a = nif_.atoms;
    ERL_NIF_TERM term;
    try {
      term = chunk_term(env, nif_, data, binary, is_final, TermBuilder::Thread::other);
    } catch (const NeedsScheduler&) {
      enif_clear_env(env);
      term = enif_make_tuple3(env, a.json, owned_binary(env, nif_, std::move(data)), is_final ? a.true_ : a.false_);
    }
    ERL_NIF_TERM ref = enif_make_copy(env, ref_);
    enif_send(nullptr, &pid_, env, enif_make_tuple3(env, ref, a.chunk, term));
    enif_free_env(env);
  }

  // {ref, result, worker_id}; result is {:json, bytes} for a reply only a
  // scheduler may build (Snakepit.Native.decode_result/1).
  void deliver(core::Outcome&& outcome) noexcept override {
    forget_monitor();
    std::lock_guard lock(mutex_);
    const Atoms& a = nif_.atoms;
    ERL_NIF_TERM result;
    if (!outcome.ok) {
      if (outcome.error.worker_id.empty()) outcome.error.worker_id = outcome.worker_id;
      result = enif_make_tuple2(env_, a.error, make_error_tuple(env_, a, outcome.error));
    } else if (outcome.payload_binary) {
      result = enif_make_tuple2(env_, a.ok, owned_binary(env_, nif_, std::move(outcome.payload)));
    } else {
      try {
        result = json_result_term(env_, nif_, outcome.payload, TermBuilder::Thread::other);
      } catch (const NeedsScheduler&) {
        result = enif_make_tuple2(env_, a.json, owned_binary(env_, nif_, std::move(outcome.payload)));
      }
    }
    ERL_NIF_TERM message = enif_make_tuple3(env_, ref_, result, make_binary(env_, outcome.worker_id));
    enif_send(nullptr, &pid_, env_, message);
    enif_free_env(env_);
    env_ = nullptr;
  }

 private:
  void forget_monitor() {
    if (!monitored_) return;
    monitored_ = false;
    {
      std::lock_guard lock(resource_->monitors_mutex);
      resource_->monitors.erase(monitor_);
    }
    enif_demonitor_process(nullptr, resource_, &monitor_);
  }

  NifState& nif_;
  PoolResource* resource_;
  ErlNifPid pid_;
  ErlNifEnv* env_;
  ERL_NIF_TERM ref_;
  ErlNifMonitor monitor_{};
  bool monitored_ = false;
  std::mutex mutex_;
};

// Pool events go to the pool's owner process (Snakepit.Pool).
class ProcessEventSink final : public core::EventSink {
 public:
  ProcessEventSink(NifState& nif, ErlNifPid owner) : nif_(nif), owner_(owner) {}

  void emit(core::PoolEvent&& event) noexcept override {
    using Type = core::PoolEvent::Type;
    ErlNifEnv* env = enif_alloc_env();
    const Atoms& a = nif_.atoms;
    ERL_NIF_TERM type = a.undefined, data = a.nil;
    switch (event.type) {
      case Type::worker_spawned:
        type = a.worker_spawned;
        data = enif_make_int(env, event.os_pid);
        break;
      case Type::worker_ready:
        type = a.worker_ready;
        data = enif_make_int(env, event.os_pid);
        break;
      case Type::worker_start_failed:
        type = a.worker_start_failed;
        data = make_error_tuple(env, a, event.error);
        break;
      case Type::worker_exited:
        type = a.worker_exited;
        data = enif_make_tuple2(env, enif_make_int(env, event.os_pid), make_binary(env, event.text));
        break;
      case Type::worker_output:
        type = a.worker_output;
        data = enif_make_tuple2(env, event.stream == "stderr" ? a.stderr_ : a.stdout_, make_binary(env, event.text));
        break;
      case Type::capacity_reached:
        type = a.capacity_reached;
        break;
      case Type::heartbeat_timeout:
        type = a.heartbeat_timeout;
        data = make_binary(env, event.text);
        break;
      case Type::worker_recycled:
        type = a.worker_recycled;
        data = enif_make_atom(env, event.text.c_str());
        break;
      case Type::worker_hung:
        type = a.worker_hung;
        data = enif_make_tuple2(env, make_binary(env, event.text), enif_make_int64(env, event.millis));
        break;
      case Type::internal_error:
        type = a.internal_error;
        data = make_binary(env, event.text);
        break;
    }
    ERL_NIF_TERM message = enif_make_tuple4(env, a.snakepit_event, type, make_binary(env, event.worker_id), data);
    enif_send(nullptr, &owner_, env, message);
    enif_free_env(env);
  }

 private:
  NifState& nif_;
  ErlNifPid owner_;
};

// ------------------------------------------------------------ resource type

void pool_destructor(ErlNifEnv*, void* object) {
  auto* resource = static_cast<PoolResource*>(object);
  // Stopping waits for processes to exit: never on a scheduler thread.
  if (auto pool = std::move(resource->pool)) std::thread([pool] { pool->stop(); }).detach();
  resource->~PoolResource();
}

void pool_down(ErlNifEnv*, void* object, ErlNifPid*, ErlNifMonitor* monitor) {
  auto* resource = static_cast<PoolResource*>(object);
  core::RequestId id = 0;
  {
    std::lock_guard lock(resource->monitors_mutex);
    auto it = resource->monitors.find(*monitor);
    if (it == resource->monitors.end()) return;
    id = it->second;
    resource->monitors.erase(it);
  }
  if (resource->pool) resource->pool->cancel(id);
}

// The tool registry died: the calls it was handed (in its mailbox or its
// tasks) will never be answered, so Python gets an error now, not at its timeout.
void handler_down(ErlNifEnv*, void* object, ErlNifPid*, ErlNifMonitor*) {
  const auto& watch = *static_cast<HandlerWatch*>(object);
  NifState& nif = *watch.nif;
  transport::ElixirToolServer* server = nullptr;
  {
    std::lock_guard lock(nif.elixir_tools_mutex);
    server = nif.elixir_tools.get();
    if (nif.elixir_tools_handler_token == watch.token) nif.elixir_tools_handler.reset();
  }
  if (server != nullptr) server->fail_pending(watch.token, "the Elixir tool registry stopped before answering");
}

PoolResource* get_pool(ErlNifEnv* env, ERL_NIF_TERM term) {
  void* object = nullptr;
  if (!enif_get_resource(env, term, state(env).pool_type, &object)) return nullptr;
  auto* resource = static_cast<PoolResource*>(object);
  return resource->pool ? resource : nullptr;
}

// ------------------------------------------------------- argument decoding

bool get_string(ErlNifEnv* env, ERL_NIF_TERM term, std::string& out) {
  ErlNifBinary bin;
  if (!enif_inspect_binary(env, term, &bin)) return false;
  out.assign(reinterpret_cast<const char*>(bin.data), bin.size);
  return true;
}

bool get_string_list(ErlNifEnv* env, ERL_NIF_TERM list, std::vector<std::string>& out) {
  ERL_NIF_TERM head;
  std::string item;
  while (enif_get_list_cell(env, list, &head, &list)) {
    if (!get_string(env, head, item)) return false;
    out.push_back(item);
  }
  return enif_is_empty_list(env, list);
}

class ConfigReader {
 public:
  ConfigReader(ErlNifEnv* env, ERL_NIF_TERM map) : env_(env), map_(map) {}
  bool value(const char* key, ERL_NIF_TERM& out) {
    if (enif_get_map_value(env_, map_, enif_make_atom(env_, key), &out)) return true;
    missing_ = key;
    return false;
  }
  void integer(const char* key, int& out) {
    ERL_NIF_TERM term;
    if (value(key, term) && !enif_get_int(env_, term, &out)) missing_ = key;
  }
  void millis(const char* key, Millis& out) {
    ERL_NIF_TERM term;
    ErlNifSInt64 number;
    if (value(key, term) && enif_get_int64(env_, term, &number)) out = Millis(number);
    else missing_ = key;
  }
  void boolean(const char* key, bool& out) {
    ERL_NIF_TERM term;
    if (!value(key, term)) return;
    auto& atoms = state(env_).atoms;
    if (enif_is_identical(term, atoms.true_)) out = true;
    else if (enif_is_identical(term, atoms.false_)) out = false;
    else missing_ = key;
  }
  void string(const char* key, std::string& out) {
    ERL_NIF_TERM term;
    if (value(key, term) && !get_string(env_, term, out)) missing_ = key;
  }
  void strings(const char* key, std::vector<std::string>& out) {
    ERL_NIF_TERM term;
    if (value(key, term) && !get_string_list(env_, term, out)) missing_ = key;
  }
  const std::string& bad_key() const { return missing_; }

 private:
  ErlNifEnv* env_;
  ERL_NIF_TERM map_;
  std::string missing_;
};

ERL_NIF_TERM error_with(ErlNifEnv* env, std::string_view message) {
  return enif_make_tuple2(env, state(env).atoms.error, make_binary(env, message));
}

// ------------------------------------------------------------------- NIFs

ERL_NIF_TERM runtime_info(ErlNifEnv* env, int, const ERL_NIF_TERM[]) {
  auto& nif = state(env);
  return enif_make_tuple2(env, make_binary(env, nif.run_id), make_binary(env, nif.runtime_dir));
}

ERL_NIF_TERM pool_start(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto& nif = state(env);
  ErlNifPid owner;
  if (!enif_is_map(env, argv[0]) || !enif_get_local_pid(env, argv[1], &owner)) return enif_make_badarg(env);
  core::PoolConfig config;
  ConfigReader reader(env, argv[0]);
  int max_queue = 1000;
  reader.string("name", config.name);
  reader.integer("pool_size", config.pool_size);
  reader.integer("capacity_per_worker", config.capacity_per_worker);
  reader.string("executable", config.executable);
  reader.strings("worker_argv", config.worker_argv);
  reader.strings("env", config.env);
  reader.string("working_dir", config.working_dir);
  reader.integer("startup_batch_size", config.startup_batch_size);
  reader.millis("startup_batch_delay_ms", config.startup_batch_delay);
  reader.millis("startup_timeout_ms", config.startup_timeout);
  reader.integer("max_queue", max_queue);
  reader.millis("queue_timeout_ms", config.queue_timeout);
  reader.millis("restart_backoff_ms", config.restart_backoff);
  reader.millis("max_restart_backoff_ms", config.max_restart_backoff);
  reader.millis("graceful_shutdown_ms", config.graceful_shutdown);
  reader.boolean("heartbeat_enabled", config.heartbeat_enabled);
  reader.millis("ping_interval_ms", config.ping_interval);
  reader.millis("heartbeat_initial_delay_ms", config.heartbeat_initial_delay);
  reader.millis("ping_timeout_ms", config.ping_timeout);
  reader.integer("max_missed_heartbeats", config.max_missed_heartbeats);
  reader.boolean("heartbeat_dependent", config.heartbeat_dependent);
  reader.millis("worker_ttl_ms", config.worker_ttl);
  int max_requests = 0;
  reader.integer("max_requests", max_requests);
  reader.millis("session_ttl_ms", config.session_ttl);
  reader.millis("tool_overrun_grace_ms", config.overrun_grace);
  config.max_requests = static_cast<std::uint64_t>(std::max(max_requests, 0));
  if (!reader.bad_key().empty()) return error_with(env, "native pool config: missing or invalid " + reader.bad_key());
  config.max_queue = static_cast<std::size_t>(std::max(max_queue, 0));
  config.run_id = nif.run_id;
  config.runtime_dir = nif.runtime_dir;
  config.lifeline_fd = nif.lifeline_read.get();
  config.guard = nif.guard_path;

  void* memory = enif_alloc_resource(nif.pool_type, sizeof(PoolResource));
  auto* resource = new (memory) PoolResource();
  ERL_NIF_TERM term = enif_make_resource(env, resource);
  enif_release_resource(resource);
  try {
    resource->pool = std::make_shared<core::Pool>(std::move(config), nif.transport,
                                                  std::make_shared<ProcessEventSink>(nif, owner));
    resource->pool->start();
  } catch (const std::exception& e) {
    resource->pool.reset();
    return error_with(env, std::string("could not start pool: ") + e.what());
  }
  return enif_make_tuple2(env, nif.atoms.ok, term);
}

ERL_NIF_TERM submit_impl(ErlNifEnv* env, const ERL_NIF_TERM argv[], std::size_t budget);

ERL_NIF_TERM submit_dirty(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) { return submit_impl(env, argv, 0); }

// submit(pool, tool, args, {timeout_ms, session_id, affinity, stream?, correlation_id}, ref)
ERL_NIF_TERM submit(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  return submit_impl(env, argv, kSchedulerEncodeBudget);
}

// {:error, {:validation, reason, message, %{path: path}}} (no path when
// empty), counted as a rejected request: refused before anything is sent.
ERL_NIF_TERM rejected(ErlNifEnv* env, PoolResource* resource, const char* reason, const std::string& message,
                      const std::string& path) {
  const auto& atoms = state(env).atoms;
  resource->pool->count_rejected();
  ERL_NIF_TERM extra = enif_make_new_map(env);
  if (!path.empty()) enif_make_map_put(env, extra, atoms.path, make_binary(env, path), &extra);
  return enif_make_tuple2(env, atoms.error,
                          enif_make_tuple4(env, atoms.validation, enif_make_atom(env, reason),
                                           make_binary(env, message), extra));
}

ERL_NIF_TERM submit_impl(ErlNifEnv* env, const ERL_NIF_TERM argv[], std::size_t budget) {
  auto& nif = state(env);
  auto* resource = get_pool(env, argv[0]);
  ErlNifSInt64 timeout_ms = 0;
  core::CallRequest call;
  const ERL_NIF_TERM* opts = nullptr;
  int arity = 0;
  if (resource == nullptr || !get_string(env, argv[1], call.tool) || !enif_get_tuple(env, argv[3], &arity, &opts) ||
      arity != 5 || !enif_get_int64(env, opts[0], &timeout_ms) || !get_string(env, opts[1], call.session_id) ||
      !get_string(env, opts[4], call.correlation_id) || !enif_is_ref(env, argv[4]))
    return enif_make_badarg(env);
  // Protobuf strings must be UTF-8: the worker would refuse the request.
  if (!codec::valid_utf8(call.tool))
    return rejected(env, resource, "invalid_args", "tool name is not valid UTF-8", "");
  if (!codec::valid_utf8(call.session_id))
    return rejected(env, resource, "invalid_option", "session_id is not valid UTF-8", "");
  call.timeout = Millis(timeout_ms);
  const auto& a = nif.atoms;
  if (enif_is_identical(opts[2], a.strict_queue)) call.affinity = core::Affinity::strict_queue;
  else if (enif_is_identical(opts[2], a.strict_fail_fast)) call.affinity = core::Affinity::strict_fail_fast;
  call.stream = enif_is_identical(opts[3], a.true_);

  TermEncoder encoder(env, nif.atoms, budget);
  switch (encoder.encode_args(argv[2], call.params)) {
    case TermEncoder::Status::ok:
      break;
    case TermEncoder::Status::over_budget:
      return enif_schedule_nif(env, "submit_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND, submit_dirty, 5, argv);
    case TermEncoder::Status::needs_preprocess:
      return nif.atoms.needs_preprocess;
    case TermEncoder::Status::invalid:
      return rejected(env, resource, "invalid_args", encoder.error_message(), encoder.error_path());
  }

  ErlNifPid caller;
  enif_self(env, &caller);
  const core::RequestId id = resource->pool->new_request_id();
  auto responder = std::make_unique<ProcessResponder>(nif, resource, caller, argv[4], env, id);
  if (auto error = resource->pool->submit(id, std::move(call), std::move(responder)))
    return enif_make_tuple2(env, nif.atoms.error, make_error_tuple(env, nif.atoms, *error));
  return enif_make_tuple2(env, nif.atoms.ok, enif_make_uint64(env, id));
}

ERL_NIF_TERM cancel(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto* resource = get_pool(env, argv[0]);
  ErlNifUInt64 id;
  if (resource == nullptr || !enif_get_uint64(env, argv[1], &id)) return enif_make_badarg(env);
  resource->pool->cancel(id);
  return state(env).atoms.ok;
}

// count_rejected(pool): a call refused in Elixir before submit.
ERL_NIF_TERM count_rejected(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto* resource = get_pool(env, argv[0]);
  if (resource == nullptr) return enif_make_badarg(env);
  resource->pool->count_rejected();
  return state(env).atoms.ok;
}

ERL_NIF_TERM grant(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto* resource = get_pool(env, argv[0]);
  ErlNifUInt64 id;
  int credits;
  if (resource == nullptr || !enif_get_uint64(env, argv[1], &id) || !enif_get_int(env, argv[2], &credits))
    return enif_make_badarg(env);
  resource->pool->grant(id, credits);
  return state(env).atoms.ok;
}

ERL_NIF_TERM stats(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto* resource = get_pool(env, argv[0]);
  if (resource == nullptr) return enif_make_badarg(env);
  const auto& a = state(env).atoms;
  const auto s = resource->pool->stats();
  ERL_NIF_TERM keys[] = {a.requests, a.errors, a.queue_timeouts, a.pool_saturated, a.worker_restarts, a.recycles,
                         a.heartbeat_failures, a.sessions, a.queued, a.workers, a.ready, a.available, a.busy,
                         a.last_start_error};
  ERL_NIF_TERM values[] = {enif_make_uint64(env, s.requests), enif_make_uint64(env, s.errors),
                           enif_make_uint64(env, s.queue_timeouts), enif_make_uint64(env, s.saturated),
                           enif_make_uint64(env, s.worker_restarts), enif_make_uint64(env, s.recycles),
                           enif_make_uint64(env, s.heartbeat_failures), enif_make_uint64(env, s.sessions),
                           enif_make_uint64(env, s.queued),
                           enif_make_uint64(env, s.workers), enif_make_uint64(env, s.ready),
                           enif_make_uint64(env, s.available), enif_make_uint64(env, s.busy),
                           s.last_start_error ? make_error_tuple(env, a, *s.last_start_error) : a.nil};
  ERL_NIF_TERM map;
  enif_make_map_from_arrays(env, keys, values, std::size(keys), &map);
  return map;
}

ERL_NIF_TERM workers(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto* resource = get_pool(env, argv[0]);
  if (resource == nullptr) return enif_make_badarg(env);
  const auto& a = state(env).atoms;
  ERL_NIF_TERM list = enif_make_list(env, 0);
  auto infos = resource->pool->workers();
  for (auto it = infos.rbegin(); it != infos.rend(); ++it) {
    ERL_NIF_TERM keys[] = {a.id, a.os_pid, a.state, a.inflight, a.capacity, a.requests};
    ERL_NIF_TERM values[] = {make_binary(env, it->id), enif_make_int(env, it->os_pid),
                             enif_make_atom(env, it->state.c_str()), enif_make_int(env, it->inflight),
                             enif_make_int(env, it->capacity), enif_make_uint64(env, it->requests)};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, std::size(keys), &map);
    list = enif_make_list_cell(env, map, list);
  }
  return list;
}

// Per worker: %{worker_id, tools: [%{tool, max_concurrency, calls, thread_safe}] | nil}.
// Waits for the workers' answers: a dirty I/O NIF.
ERL_NIF_TERM reports(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto* resource = get_pool(env, argv[0]);
  ErlNifSInt64 timeout_ms;
  if (resource == nullptr || !enif_get_int64(env, argv[1], &timeout_ms)) return enif_make_badarg(env);
  const auto& a = state(env).atoms;
  auto atom = [env](const char* name) { return enif_make_atom(env, name); };
  ERL_NIF_TERM list = enif_make_list(env, 0);
  for (const auto& report : resource->pool->reports(Millis(timeout_ms))) {
    ERL_NIF_TERM tools = a.nil;
    if (report.tools) {
      tools = enif_make_list(env, 0);
      for (const auto& tool : *report.tools) {
        ERL_NIF_TERM keys[] = {atom("tool"), atom("max_concurrency"), atom("calls"), atom("thread_safe")};
        ERL_NIF_TERM values[] = {make_binary(env, tool.tool), enif_make_int(env, tool.max_concurrency),
                                 enif_make_int64(env, tool.calls), tool.thread_safe ? a.true_ : a.false_};
        ERL_NIF_TERM map;
        enif_make_map_from_arrays(env, keys, values, std::size(keys), &map);
        tools = enif_make_list_cell(env, map, tools);
      }
    }
    ERL_NIF_TERM keys[] = {a.worker_id, atom("tools")};
    ERL_NIF_TERM values[] = {make_binary(env, report.worker_id), tools};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, std::size(keys), &map);
    list = enif_make_list_cell(env, map, list);
  }
  return list;
}

// A Python telemetry batch as {:snakepit_python_telemetry, id, worker_id,
// pool_name, python_pid, dropped, events}, each event {parts, measurements,
// metadata, timestamp_ns, correlation_id} with [{key, value}] lists: built
// off the schedulers, so no maps here (the receiving Elixir process makes them).
ERL_NIF_TERM python_telemetry_message(ErlNifEnv* env, const transport::ElixirToolCall& call) {
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
      else if (d != nullptr) term = make_binary(env, std::to_string(*d));  // enif_make_double refuses NaN/inf
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
  ERL_NIF_TERM items[] = {enif_make_atom(env, "snakepit_python_telemetry"),
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
    const bool sent = enif_send(nullptr, &*handler, env, python_telemetry_message(env, call));
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
      env, enif_make_atom(env, "snakepit_elixir_call"), enif_make_uint64(env, call.id),
      enif_make_atom(env, execute ? "execute" : "list"), make_binary(env, call.session_id),
      make_binary(env, call.tool), params);
  const bool sent = enif_send(nullptr, &*handler, env, message);
  enif_free_env(env);
  if (!sent) return std::nullopt;
  return token;
}

// Once created the server lives as long as the library: the pointer stays valid.
transport::ElixirToolServer* elixir_tool_server(NifState& nif) {
  std::lock_guard lock(nif.elixir_tools_mutex);
  return nif.elixir_tools.get();
}

// elixir_tools_start(handler_pid) -> {:ok, socket_path}
ERL_NIF_TERM elixir_tools_start(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto& nif = state(env);
  ErlNifPid handler;
  if (!enif_get_local_pid(env, argv[0], &handler)) return enif_make_badarg(env);
  const std::string socket = nif.runtime_dir + "/elixir_tools.sock";
  std::lock_guard lock(nif.elixir_tools_mutex);
  if (!nif.elixir_tools) {
    try {
      nif.elixir_tools = std::make_unique<transport::ElixirToolServer>(
          socket, [&nif](transport::ElixirToolCall&& call) { return dispatch_elixir_call(nif, std::move(call)); });
    } catch (const std::exception& e) {
      return error_with(env, e.what());
    }
  }
  auto* watch = static_cast<HandlerWatch*>(enif_alloc_resource(nif.handler_watch_type, sizeof(HandlerWatch)));
  watch->nif = &nif;
  watch->token = nif.elixir_tools_handler_token + 1;
  if (enif_monitor_process(env, watch, &handler, nullptr) != 0) {
    enif_release_resource(watch);
    return error_with(env, "the tool registry process is not alive");
  }
  // Replacing the watch ends the previous handler's monitor with it.
  if (nif.handler_watch != nullptr) enif_release_resource(nif.handler_watch);
  nif.handler_watch = watch;
  nif.elixir_tools_handler = handler;
  nif.elixir_tools_handler_token = watch->token;
  return enif_make_tuple2(env, nif.atoms.ok, make_binary(env, socket));
}

// elixir_tool_reply(id, {:ok, value} | {:error, message} | {:not_found, message})
// for an :execute call:
// :ok, or :needs_preprocess when value holds structs.
ERL_NIF_TERM elixir_tool_reply(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto& nif = state(env);
  ErlNifUInt64 id;
  int arity;
  const ERL_NIF_TERM* reply;
  if (!enif_get_uint64(env, argv[0], &id) || !enif_get_tuple(env, argv[1], &arity, &reply) || arity != 2)
    return enif_make_badarg(env);
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
    return enif_make_badarg(env);
  }
  if (auto* server = elixir_tool_server(nif)) server->reply_execute(id, ok, std::move(payload), not_found);
  return nif.atoms.ok;
}

// elixir_tools_list_reply(id, [{name, description}]) for a :list call.
ERL_NIF_TERM elixir_tools_list_reply(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto& nif = state(env);
  ErlNifUInt64 id;
  if (!enif_get_uint64(env, argv[0], &id)) return enif_make_badarg(env);
  std::vector<transport::ElixirToolSpec> tools;
  ERL_NIF_TERM list = argv[1], head;
  while (enif_get_list_cell(env, list, &head, &list)) {
    int arity;
    const ERL_NIF_TERM* pair;
    transport::ElixirToolSpec spec;
    if (!enif_get_tuple(env, head, &arity, &pair) || arity != 2 || !get_string(env, pair[0], spec.name) ||
        !get_string(env, pair[1], spec.description))
      return enif_make_badarg(env);
    tools.push_back(std::move(spec));
  }
  if (auto* server = elixir_tool_server(nif)) server->reply_list(id, std::move(tools));
  return nif.atoms.ok;
}

// ------------------------------------------------- replies built on a scheduler

// The caller builds what a gRPC thread could not (see TermBuilder): on its
// own scheduler, or a dirty one past the budget.
using DecodeFn = ERL_NIF_TERM (*)(ErlNifEnv*, int, const ERL_NIF_TERM[]);

ERL_NIF_TERM on_fitting_scheduler(ErlNifEnv* env, const ERL_NIF_TERM argv[], int argc, std::size_t size,
                                  const char* name, DecodeFn dirty, DecodeFn here) {
  if (size > kSchedulerDecodeBudget && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)
    return enif_schedule_nif(env, name, ERL_NIF_DIRTY_JOB_CPU_BOUND, dirty, argc, argv);
  return here(env, argc, argv);
}

ERL_NIF_TERM decode_result_here(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ErlNifBinary bin;
  if (!enif_inspect_binary(env, argv[0], &bin)) return enif_make_badarg(env);
  const std::string_view json(reinterpret_cast<const char*>(bin.data), bin.size);
  return json_result_term(env, state(env), json, TermBuilder::Thread::scheduler);
}

// decode_result(json) -> {:ok, term} | {:error, error_tuple}
ERL_NIF_TERM decode_result(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]) {
  ErlNifBinary bin;
  if (!enif_inspect_binary(env, argv[0], &bin)) return enif_make_badarg(env);
  return on_fitting_scheduler(env, argv, argc, bin.size, "decode_result", decode_result_here, decode_result_here);
}

ERL_NIF_TERM decode_chunk_here(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ErlNifBinary bin;
  if (!enif_inspect_binary(env, argv[0], &bin)) return enif_make_badarg(env);
  const std::string_view json(reinterpret_cast<const char*>(bin.data), bin.size);
  const bool is_final = enif_is_identical(argv[1], state(env).atoms.true_);
  return chunk_term(env, state(env), json, false, is_final, TermBuilder::Thread::scheduler);
}

// decode_chunk(json, is_final) -> chunk map
ERL_NIF_TERM decode_chunk(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]) {
  ErlNifBinary bin;
  if (!enif_inspect_binary(env, argv[0], &bin)) return enif_make_badarg(env);
  return on_fitting_scheduler(env, argv, argc, bin.size, "decode_chunk", decode_chunk_here, decode_chunk_here);
}

bool read_params(ErlNifEnv* env, ERL_NIF_TERM list, std::vector<std::pair<std::string, std::string>>& params) {
  ERL_NIF_TERM head;
  while (enif_get_list_cell(env, list, &head, &list)) {
    int arity;
    const ERL_NIF_TERM* pair;
    std::string name, json;
    if (!enif_get_tuple(env, head, &arity, &pair) || arity != 2 || !get_string(env, pair[0], name) ||
        !get_string(env, pair[1], json))
      return false;
    params.emplace_back(std::move(name), std::move(json));
  }
  return enif_is_empty_list(env, list);
}

ERL_NIF_TERM decode_params_here(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  std::vector<std::pair<std::string, std::string>> params;
  if (!read_params(env, argv[0], params)) return enif_make_badarg(env);
  return params_term(env, state(env), params, TermBuilder::Thread::scheduler);
}

// decode_params([{name, json}]) -> %{name => value}
ERL_NIF_TERM decode_params(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]) {
  std::size_t size = 0;
  ERL_NIF_TERM list = argv[0], head;
  const ERL_NIF_TERM* pair;
  int arity;
  ErlNifBinary bin;
  while (enif_get_list_cell(env, list, &head, &list)) {
    if (enif_get_tuple(env, head, &arity, &pair) && arity == 2 && enif_inspect_binary(env, pair[1], &bin))
      size += bin.size;
  }
  return on_fitting_scheduler(env, argv, argc, size, "decode_params", decode_params_here, decode_params_here);
}

// Blocks for up to the grace period: registered as a dirty I/O NIF.
ERL_NIF_TERM pool_stop(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto* resource = get_pool(env, argv[0]);
  if (resource == nullptr) return state(env).atoms.ok;
  resource->pool->stop();
  return state(env).atoms.ok;
}

// ------------------------------------------------------------------- load

std::string random_hex(std::size_t bytes) {
  std::ifstream urandom("/dev/urandom", std::ios::binary);
  std::string raw(bytes, '\0');
  urandom.read(raw.data(), static_cast<std::streamsize>(bytes));
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  for (unsigned char c : raw) {
    hex.push_back(kHex[c >> 4]);
    hex.push_back(kHex[c & 0xF]);
  }
  return hex;
}

// The worker guard sits next to this library (both built into priv/);
// empty when it is missing.
std::string guard_path() {
  Dl_info info{};
  if (::dladdr(reinterpret_cast<void*>(&guard_path), &info) == 0 || info.dli_fname == nullptr) return {};
  std::string path = info.dli_fname;
  path = path.substr(0, path.rfind('/') + 1) + "snakepit_worker_guard";
  return ::access(path.c_str(), X_OK) == 0 ? path : std::string();
}

int load(ErlNifEnv* env, void** priv_data, ERL_NIF_TERM) {
  auto nif = std::make_unique<NifState>();
  nif->atoms.init(env);
  ErlNifResourceTypeInit init{};
  init.dtor = pool_destructor;
  init.down = pool_down;
  init.members = 3;
  nif->pool_type = enif_open_resource_type_x(env, "snakepit_pool", &init, ERL_NIF_RT_CREATE, nullptr);
  if (nif->pool_type == nullptr) return 1;
  nif->payload_type = open_payload_type(env);
  if (nif->payload_type == nullptr) return 1;
  ErlNifResourceTypeInit watch_init{};
  watch_init.down = handler_down;
  watch_init.members = 3;
  nif->handler_watch_type =
      enif_open_resource_type_x(env, "snakepit_handler_watch", &watch_init, ERL_NIF_RT_CREATE, nullptr);
  if (nif->handler_watch_type == nullptr) return 1;

  nif->guard_path = guard_path();
  if (nif->guard_path.empty()) return 5;

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return 2;
  nif->lifeline_read.reset(fds[0]);
  nif->lifeline_write.reset(fds[1]);

  nif->run_id = random_hex(8);
  const char* base = std::getenv("SNAKEPIT_RUNTIME_DIR");
  std::string pattern = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/snakepit-" + nif->run_id + "-XXXXXX";
  if (::mkdtemp(pattern.data()) == nullptr) return 3;  // mkdtemp makes it 0700
  nif->runtime_dir = pattern;

  try {
    nif->transport = transport::make_grpc_transport();
  } catch (...) {
    return 4;
  }
  *priv_data = nif.release();
  return 0;
}

ErlNifFunc nif_functions[] = {
    {"runtime_info", 0, runtime_info, 0},
    {"pool_start", 2, pool_start, 0},
    {"submit", 5, submit, 0},
    {"grant", 3, grant, 0},
    {"cancel", 2, cancel, 0},
    {"count_rejected", 1, count_rejected, 0},
    {"stats", 1, stats, 0},
    {"workers", 1, workers, 0},
    {"pool_stop", 1, pool_stop, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"reports", 2, reports, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"elixir_tools_start", 1, elixir_tools_start, ERL_NIF_DIRTY_JOB_IO_BOUND},
    {"elixir_tool_reply", 2, elixir_tool_reply, ERL_NIF_DIRTY_JOB_CPU_BOUND},
    {"elixir_tools_list_reply", 2, elixir_tools_list_reply, 0},
    {"decode_result", 1, decode_result, 0},
    {"decode_chunk", 2, decode_chunk, 0},
    {"decode_params", 1, decode_params, 0},
};

}  // namespace
}  // namespace snakepit::nif

ERL_NIF_INIT(Elixir.Snakepit.Native, snakepit::nif::nif_functions, snakepit::nif::load, nullptr, nullptr, nullptr)
