// Where a pool's outputs go: a call's outcome and chunks to the calling
// process (ProcessResponder), pool events to the pool's owner process.
#pragma once

#include <erl_nif.h>

#include <memory>

#include "../core/pool.hpp"
#include "nif_state.hpp"

namespace snakepit::nif {

// Monitors the caller so that its death cancels request `id`; sends
// {ref, reply} (and stream chunks) to it, and {ref, :started} first when
// `notify_started` (a cluster executor's calls).
std::unique_ptr<core::Responder> make_process_responder(NifState& nif, PoolResource* resource, ErlNifPid pid,
                                                        ERL_NIF_TERM ref, ErlNifEnv* caller_env, core::RequestId id,
                                                        bool notify_started);
// Sends {:snakepit_event, type, worker_id, data} to `owner` (Snakepit.Pool).
std::shared_ptr<core::EventSink> make_event_sink(NifState& nif, ErlNifPid owner);

}  // namespace snakepit::nif
