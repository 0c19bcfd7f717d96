// The pool NIFs: start, submit, cancel, grant, stats, workers, reports, stop.
#include <fmt/format.h>
#include <algorithm>
#include <memory>
#include <string>

#include "../codec/json.hpp"
#include "boundary.hpp"
#include "nifs.hpp"
#include "pool_config.hpp"
#include "reply_terms.hpp"
#include "responders.hpp"
#include "term_encoder.hpp"

namespace snakepit::nif {

using core::Millis;

namespace {
// Arguments encoded past this many bytes on a normal scheduler move the
// call to a dirty scheduler (the ~1 ms rule).
constexpr std::size_t kSchedulerEncodeBudget = 64 * 1024;

ERL_NIF_TERM submit_impl(ErlNifEnv* env, const ERL_NIF_TERM argv[], std::size_t budget);
}  // namespace

ERL_NIF_TERM runtime_info(ErlNifEnv* env, int, const ERL_NIF_TERM[]) {
  auto& nif = state(env);
  return enif_make_tuple2(env, make_binary(env, nif.run_id), make_binary(env, nif.runtime_dir));
}

ERL_NIF_TERM pool_start(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto& nif = state(env);
  if (!enif_is_map(env, argv[0])) throw BadArg{0, "a config map"};
  const ErlNifPid owner = ArgReader(env, argv).local_pid(1, "a local pid (the owner)");
  core::PoolConfig config;
  try {
    config = read_pool_config(env, argv[0], nif);
  } catch (const BadConfig& e) {
    return error_with(env, e.what());
  }
  void* memory = enif_alloc_resource(nif.pool_type, sizeof(PoolResource));
  auto* resource = new (memory) PoolResource();
  ERL_NIF_TERM term = enif_make_resource(env, resource);
  enif_release_resource(resource);
  try {
    resource->pool = std::make_shared<core::Pool>(std::move(config), nif.transport,
                                                  make_event_sink(nif, owner));
    resource->pool->start();
  } catch (const std::exception& e) {
    resource->pool.reset();
    return error_with(env, fmt::format("could not start pool: {}", e.what()));
  }
  return enif_make_tuple2(env, nif.atoms.ok, term);
}

ERL_NIF_TERM submit_dirty(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) { return submit_impl(env, argv, 0); }

// submit(pool, tool, args, {timeout_ms, session_id, affinity, stream?, correlation_id[, notify_started?[, thread_sensitive?]]}, ref)
ERL_NIF_TERM submit(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  return submit_impl(env, argv, kSchedulerEncodeBudget);
}

namespace {

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
  const ArgReader args(env, argv);
  auto* resource = args.pool(0);
  ErlNifSInt64 timeout_ms = 0;
  core::CallRequest call;
  call.tool = args.string(1, "a binary (the tool name)");
  const ERL_NIF_TERM* opts = nullptr;
  int arity = 0;
  if (!enif_get_tuple(env, argv[3], &arity, &opts) || (arity < 5 || arity > 7) ||
      !enif_get_int64(env, opts[0], &timeout_ms) || !get_string(env, opts[1], call.session_id) ||
      !get_string(env, opts[4], call.correlation_id))
    throw BadArg{3, "{timeout_ms, session_id, affinity, stream?, correlation_id[, notify_started?[, thread_sensitive?]]}"};
  if (!enif_is_ref(env, argv[4])) throw BadArg{4, "a reference"};
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
  call.thread_sensitive = arity == 7 && enif_is_identical(opts[6], a.true_);

  TermEncoder encoder(env, nif.atoms, budget);
  switch (encoder.encode_args(argv[2], call.params)) {
    case TermEncoder::Status::ok:
      break;
    case TermEncoder::Status::over_budget:
      return enif_schedule_nif(env, "submit_dirty", ERL_NIF_DIRTY_JOB_CPU_BOUND, boundary<submit_dirty>, 5, argv);
    case TermEncoder::Status::needs_preprocess:
      return nif.atoms.needs_preprocess;
    case TermEncoder::Status::invalid:
      return rejected(env, resource, "invalid_args", encoder.error_message(), encoder.error_path());
  }

  ErlNifPid caller;
  enif_self(env, &caller);
  const core::RequestId id = resource->pool->new_request_id();
  // Only a cluster executor asks for {ref, :started} (a 6th element, true).
  const bool notify_started = arity >= 6 && enif_is_identical(opts[5], nif.atoms.true_);
  auto responder = make_process_responder(nif, resource, caller, argv[4], env, id, notify_started);
  if (auto error = resource->pool->submit(id, std::move(call), std::move(responder)))
    return enif_make_tuple2(env, nif.atoms.error, make_error_tuple(env, nif.atoms, *error));
  return enif_make_tuple2(env, nif.atoms.ok, enif_make_uint64(env, id));
}

}  // namespace

ERL_NIF_TERM cancel(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  const ArgReader args(env, argv);
  args.pool(0)->pool->cancel(args.u64(1, "a request id"));
  return state(env).atoms.ok;
}

// count_rejected(pool): a call refused in Elixir before submit.
ERL_NIF_TERM count_rejected(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ArgReader(env, argv).pool(0)->pool->count_rejected();
  return state(env).atoms.ok;
}

ERL_NIF_TERM grant(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  const ArgReader args(env, argv);
  args.pool(0)->pool->grant(args.u64(1, "a request id"), args.integer(2, "an integer (credits)"));
  return state(env).atoms.ok;
}

ERL_NIF_TERM stats(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto* resource = ArgReader(env, argv).pool(0);
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

// load(pool): {free_slots, capacity, queued}, what cluster routing publishes.
ERL_NIF_TERM pool_load(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto* resource = ArgReader(env, argv).pool(0);
  const auto l = resource->pool->load();
  return enif_make_tuple3(env, enif_make_uint64(env, l.free), enif_make_uint64(env, l.capacity),
                          enif_make_uint64(env, l.queued));
}

// session_worker(pool, session_id): the id of the worker the session is bound to, or nil.
ERL_NIF_TERM session_worker(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  const ArgReader args(env, argv);
  const auto worker = args.pool(0)->pool->session_worker(args.string(1, "a session id (binary)"));
  return worker ? make_binary(env, *worker) : state(env).atoms.nil;
}

// session_drop(pool, session_id): forget the session's binding.
ERL_NIF_TERM session_drop(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  const ArgReader args(env, argv);
  args.pool(0)->pool->drop_session(args.string(1, "a session id (binary)"));
  return state(env).atoms.ok;
}

ERL_NIF_TERM workers(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto* resource = ArgReader(env, argv).pool(0);
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
  const ArgReader args(env, argv);
  auto* resource = args.pool(0);
  const auto timeout_ms = args.i64(1, "an integer (timeout in ms)");
  const auto& a = state(env).atoms;
  ERL_NIF_TERM list = enif_make_list(env, 0);
  for (const auto& report : resource->pool->reports(Millis(timeout_ms))) {
    ERL_NIF_TERM tools = a.nil;
    if (report.tools) {
      tools = enif_make_list(env, 0);
      for (const auto& tool : *report.tools) {
        ERL_NIF_TERM keys[] = {a.tool, a.max_concurrency, a.calls, a.thread_safe};
        ERL_NIF_TERM values[] = {make_binary(env, tool.tool), enif_make_int(env, tool.max_concurrency),
                                 enif_make_int64(env, tool.calls), tool.thread_safe ? a.true_ : a.false_};
        ERL_NIF_TERM map;
        enif_make_map_from_arrays(env, keys, values, std::size(keys), &map);
        tools = enif_make_list_cell(env, map, tools);
      }
    }
    ERL_NIF_TERM keys[] = {a.worker_id, a.tools};
    ERL_NIF_TERM values[] = {make_binary(env, report.worker_id), tools};
    ERL_NIF_TERM map;
    enif_make_map_from_arrays(env, keys, values, std::size(keys), &map);
    list = enif_make_list_cell(env, map, list);
  }
  return list;
}

// Blocks for up to the grace period: registered as a dirty I/O NIF.
ERL_NIF_TERM pool_stop(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  auto* resource = ArgReader(env, argv).pool_or_null(0);
  if (resource == nullptr) return state(env).atoms.ok;
  resource->pool->stop();
  return state(env).atoms.ok;
}

}  // namespace snakepit::nif
