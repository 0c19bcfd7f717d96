#include "atoms.hpp"

namespace snakepit::nif {

void Atoms::init(ErlNifEnv* env) {
  auto atom = [env](const char* name) { return enif_make_atom(env, name); };
  ok = atom("ok");
  chunk = atom("chunk");
  json = atom("json");
  not_found = atom("not_found");
  strict_queue = atom("strict_queue");
  strict_fail_fast = atom("strict_fail_fast");
  sessions = atom("sessions");
  error = atom("error");
  true_ = atom("true");
  false_ = atom("false");
  nil = atom("nil");
  binary = atom("binary");
  struct_ = atom("__struct__");
  needs_preprocess = atom("needs_preprocess");
  undefined = atom("undefined");
  snakepit_event = atom("snakepit_event");
  worker_spawned = atom("worker_spawned");
  worker_ready = atom("worker_ready");
  worker_start_failed = atom("worker_start_failed");
  worker_exited = atom("worker_exited");
  worker_output = atom("worker_output");
  capacity_reached = atom("capacity_reached");
  heartbeat_timeout = atom("heartbeat_timeout");
  worker_recycled = atom("worker_recycled");
  worker_hung = atom("worker_hung");
  internal_error = atom("internal_error");
  stdout_ = atom("stdout");
  stderr_ = atom("stderr");
  validation = atom("validation");
  invalid_args = atom("invalid_args");
  python_type = atom("python_type");
  traceback = atom("traceback");
  grpc_status = atom("grpc_status");
  worker_id = atom("worker_id");
  path = atom("path");
  exit_status = atom("exit_status");
  exit_signal = atom("exit_signal");
  id = atom("id");
  os_pid = atom("os_pid");
  state = atom("state");
  inflight = atom("inflight");
  capacity = atom("capacity");
  requests = atom("requests");
  errors = atom("errors");
  queued = atom("queued");
  queue_timeouts = atom("queue_timeouts");
  pool_saturated = atom("pool_saturated");
  workers = atom("workers");
  ready = atom("ready");
  available = atom("available");
  busy = atom("busy");
  worker_restarts = atom("worker_restarts");
  recycles = atom("recycles");
  heartbeat_failures = atom("heartbeat_failures");
  last_start_error = atom("last_start_error");
}

}  // namespace snakepit::nif
