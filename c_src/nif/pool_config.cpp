// The native pool config map -> core::PoolConfig (pool_config.hpp).
#include "pool_config.hpp"

#include <algorithm>
#include <vector>

#include "boundary.hpp"

namespace snakepit::nif {
namespace {

using core::Millis;

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
    const auto& atoms = state(env_).atoms;
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

}  // namespace

core::PoolConfig read_pool_config(ErlNifEnv* env, ERL_NIF_TERM map, const NifState& nif) {
  core::PoolConfig config;
  ConfigReader reader(env, map);
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
  if (!reader.bad_key().empty()) throw BadConfig(reader.bad_key());
  config.max_queue = static_cast<std::size_t>(std::max(max_queue, 0));
  config.run_id = nif.run_id;
  config.runtime_dir = nif.runtime_dir;
  config.lifeline_fd = nif.lifeline_read.get();
  config.guard = nif.guard_path;
  return config;
}

}  // namespace snakepit::nif
