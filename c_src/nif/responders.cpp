// Call replies and pool events sent to Elixir processes (responders.hpp).
#include "responders.hpp"

#include <mutex>
#include <type_traits>
#include <utility>
#include <variant>
#include <string>

#include "boundary.hpp"
#include "reply_terms.hpp"
#include "term_builder.hpp"

namespace snakepit::nif {
namespace {

class ProcessResponder final : public core::Responder {
 public:
  // Registers request `id` with the caller's monitor, so that the caller's
  // death cancels it.
  ProcessResponder(NifState& nif, PoolResource* resource, ErlNifPid pid, ERL_NIF_TERM ref, ErlNifEnv* caller_env,
                   core::RequestId id, bool notify_started)
      : nif_(nif),
        resource_(resource),
        pid_(pid),
        env_(nif.reply_envs.take()),
        id_(id),
        notify_started_(notify_started) {
    ref_ = enif_make_copy(env_, ref);
    enif_keep_resource(resource_);
    resource_->callers.add(caller_env, resource_, pid_, id_);
  }
  ~ProcessResponder() override {
    if (env_ != nullptr) nif_.reply_envs.give(env_);
    if (in_flight_) resource_->callers.remove(pid_, id_);
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
    enif_send(calling_env(), &pid_, env, enif_make_tuple3(env, ref, a.chunk, term));
    enif_free_env(env);
  }

  // {ref, :started}, before any chunk or the outcome.
  void started() noexcept override {
    if (!notify_started_) return;
    std::lock_guard lock(mutex_);
    if (env_ == nullptr) return;
    ErlNifEnv* env = enif_alloc_env();
    enif_send(calling_env(), &pid_, env, enif_make_tuple2(env, enif_make_copy(env, ref_), nif_.atoms.started));
    enif_free_env(env);
  }

  // {ref, result, worker_id}; result is {:json, bytes} for a reply only a
  // scheduler may build (Snakepit.Native.decode_result/1).
  void deliver(core::Outcome&& outcome) noexcept override {
    in_flight_ = false;
    resource_->callers.remove(pid_, id_);
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
    enif_send(calling_env(), &pid_, env_, message);
    nif_.reply_envs.give(env_);
    env_ = nullptr;
  }

 private:
  NifState& nif_;
  PoolResource* resource_;
  ErlNifPid pid_;
  ErlNifEnv* env_;
  ERL_NIF_TERM ref_;
  const core::RequestId id_;
  bool in_flight_ = true;  // until delivered
  const bool notify_started_;
  std::mutex mutex_;
};

// Pool events go to the pool's owner process (Snakepit.Pool).
class ProcessEventSink final : public core::EventSink {
 public:
  ProcessEventSink(NifState& nif, ErlNifPid owner) : nif_(nif), owner_(owner) {}

  void emit(core::PoolEvent&& event) noexcept override {
    ErlNifEnv* env = enif_alloc_env();
    const Atoms& a = nif_.atoms;
    const int pid = event.os_pid;
    auto [type, data] = std::visit(
        [&](const auto& e) -> std::pair<ERL_NIF_TERM, ERL_NIF_TERM> {
          using E = std::decay_t<decltype(e)>;
          namespace ev = core::event;
          if constexpr (std::is_same_v<E, ev::WorkerSpawned>) return {a.worker_spawned, enif_make_int(env, pid)};
          if constexpr (std::is_same_v<E, ev::WorkerReady>) return {a.worker_ready, enif_make_int(env, pid)};
          if constexpr (std::is_same_v<E, ev::WorkerStartFailed>)
            return {a.worker_start_failed, make_error_tuple(env, a, e.error)};
          if constexpr (std::is_same_v<E, ev::WorkerExited>)
            return {a.worker_exited, enif_make_tuple2(env, enif_make_int(env, pid), make_binary(env, e.how))};
          if constexpr (std::is_same_v<E, ev::WorkerOutput>)
            return {a.worker_output, enif_make_tuple2(env, e.stream == core::OutputStream::err ? a.stderr_ : a.stdout_,
                                                      make_binary(env, e.line))};
          if constexpr (std::is_same_v<E, ev::CapacityReached>) return {a.capacity_reached, a.nil};
          if constexpr (std::is_same_v<E, ev::HeartbeatTimeout>)
            return {a.heartbeat_timeout, enif_make_int(env, e.missed)};
          if constexpr (std::is_same_v<E, ev::WorkerRecycled>)
            return {a.worker_recycled, enif_make_atom(env, core::to_string(e.reason))};
          if constexpr (std::is_same_v<E, ev::WorkerHung>)
            return {a.worker_hung, enif_make_tuple2(env, make_binary(env, e.tool), enif_make_int64(env, e.overrun.count()))};
          if constexpr (std::is_same_v<E, ev::InternalError>) return {a.internal_error, make_binary(env, e.message)};
        },
        event.data);
    ERL_NIF_TERM message = enif_make_tuple4(env, a.snakepit_event, type, make_binary(env, event.worker_id), data);
    enif_send(calling_env(), &owner_, env, message);
    enif_free_env(env);
  }

 private:
  NifState& nif_;
  ErlNifPid owner_;
};

}  // namespace

std::unique_ptr<core::Responder> make_process_responder(NifState& nif, PoolResource* resource, ErlNifPid pid,
                                                        ERL_NIF_TERM ref, ErlNifEnv* caller_env, core::RequestId id,
                                                        bool notify_started) {
  return std::make_unique<ProcessResponder>(nif, resource, pid, ref, caller_env, id, notify_started);
}

std::shared_ptr<core::EventSink> make_event_sink(NifState& nif, ErlNifPid owner) {
  return std::make_shared<ProcessEventSink>(nif, owner);
}

}  // namespace snakepit::nif
