// Every atom the NIF uses, in one list, all made once at load.
#pragma once

#include <erl_nif.h>

namespace snakepit::nif {

// X(field, "atom text")
#define SNAKEPIT_ATOMS(X) \
  X(ok, "ok") \
  X(chunk, "chunk") \
  X(started, "started") \
  X(json, "json") \
  X(not_found, "not_found") \
  X(strict_queue, "strict_queue") \
  X(strict_fail_fast, "strict_fail_fast") \
  X(sessions, "sessions") \
  X(error, "error") \
  X(true_, "true") \
  X(false_, "false") \
  X(nil, "nil") \
  X(infinity, "infinity") \
  X(binary, "binary") \
  X(struct_, "__struct__") \
  X(needs_preprocess, "needs_preprocess") \
  X(undefined, "undefined") \
  X(snakepit_event, "snakepit_event") \
  X(worker_spawned, "worker_spawned") \
  X(worker_ready, "worker_ready") \
  X(worker_start_failed, "worker_start_failed") \
  X(worker_exited, "worker_exited") \
  X(worker_output, "worker_output") \
  X(capacity_reached, "capacity_reached") \
  X(heartbeat_timeout, "heartbeat_timeout") \
  X(worker_recycled, "worker_recycled") \
  X(worker_hung, "worker_hung") \
  X(internal_error, "internal_error") \
  X(stdout_, "stdout") \
  X(stderr_, "stderr") \
  X(validation, "validation") \
  X(python_type, "python_type") \
  X(traceback, "traceback") \
  X(grpc_status, "grpc_status") \
  X(worker_id, "worker_id") \
  X(path, "path") \
  X(exit_status, "exit_status") \
  X(exit_signal, "exit_signal") \
  X(id, "id") \
  X(os_pid, "os_pid") \
  X(state, "state") \
  X(inflight, "inflight") \
  X(capacity, "capacity") \
  X(requests, "requests") \
  X(errors, "errors") \
  X(queued, "queued") \
  X(queue_timeouts, "queue_timeouts") \
  X(pool_saturated, "pool_saturated") \
  X(workers, "workers") \
  X(ready, "ready") \
  X(available, "available") \
  X(busy, "busy") \
  X(worker_restarts, "worker_restarts") \
  X(recycles, "recycles") \
  X(heartbeat_failures, "heartbeat_failures") \
  X(last_start_error, "last_start_error") \
  X(exception_, "__exception__") \
  X(bad_alloc, "bad_alloc") \
  X(runtime_error, "runtime_error") \
  X(bad_arg, "bad_arg") \
  X(message, "message") \
  X(argument_error, "Elixir.ArgumentError") \
  X(pool, "pool") \
  X(native_exception, "native_exception") \
  X(tool, "tool") \
  X(max_concurrency, "max_concurrency") \
  X(calls, "calls") \
  X(thread_safe, "thread_safe") \
  X(tools, "tools") \
  X(snakepit_python_telemetry, "snakepit_python_telemetry") \
  X(snakepit_elixir_call, "snakepit_elixir_call") \
  X(execute, "execute") \
  X(list, "list")

struct Atoms {
#define SNAKEPIT_ATOM_FIELD(field, text) ERL_NIF_TERM field;
  SNAKEPIT_ATOMS(SNAKEPIT_ATOM_FIELD)
#undef SNAKEPIT_ATOM_FIELD

  void init(ErlNifEnv* env);
};

}  // namespace snakepit::nif
