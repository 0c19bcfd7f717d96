// Atoms made once at load.
#pragma once

#include <erl_nif.h>

namespace snakepit::nif {

struct Atoms {
  ERL_NIF_TERM chunk, json, not_found, strict_queue, strict_fail_fast, sessions;
  ERL_NIF_TERM ok, error, true_, false_, nil, binary, struct_, needs_preprocess, undefined;
  ERL_NIF_TERM snakepit_event, worker_spawned, worker_ready, worker_start_failed, worker_exited, worker_output,
      capacity_reached, heartbeat_timeout, worker_recycled, worker_hung, internal_error, stdout_, stderr_;
  ERL_NIF_TERM validation, invalid_args, python_type, traceback, grpc_status, worker_id, path, exit_status, exit_signal;
  ERL_NIF_TERM id, os_pid, state, inflight, capacity, requests;
  ERL_NIF_TERM errors, queued, queue_timeouts, pool_saturated, workers, ready, available, busy, worker_restarts,
      recycles, heartbeat_failures, last_start_error;

  void init(ErlNifEnv* env);
};

}  // namespace snakepit::nif
