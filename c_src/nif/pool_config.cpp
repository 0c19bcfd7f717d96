// Reads the native pool config map that Snakepit.Config.native_config/3
// builds (under the names users write) into a core::PoolConfig. Every key
// is required: the defaults live in Snakepit.Config alone.
#include "pool_config.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <vector>

#include "boundary.hpp"

namespace snakepit::nif {
namespace {

using core::Millis;

// Reads the keys of one map; the first missing or mistyped key is kept
// (prefixed by the map's own key, for a nested map) and reported once.
class ConfigReader {
 public:
  ConfigReader(ErlNifEnv* env, ERL_NIF_TERM map, std::string prefix = "")
      : env_(env), map_(map), prefix_(std::move(prefix)) {}

  bool value(const char* key, ERL_NIF_TERM& out) {
    if (enif_get_map_value(env_, map_, enif_make_atom(env_, key), &out)) return true;
    fail(key);
    return false;
  }
  void integer(const char* key, int& out) {
    ERL_NIF_TERM term;
    if (value(key, term) && !enif_get_int(env_, term, &out)) fail(key);
  }
  void millis(const char* key, Millis& out) {
    ERL_NIF_TERM term;
    ErlNifSInt64 number;
    if (value(key, term) && enif_get_int64(env_, term, &number)) out = Millis(number);
    else fail(key);
  }
  // An integer, or `none` (an atom such as nil or :infinity) meaning 0.
  void integer_or(const char* key, ERL_NIF_TERM none, std::int64_t& out) {
    ERL_NIF_TERM term;
    ErlNifSInt64 number;
    if (!value(key, term)) return;
    if (enif_is_identical(term, none)) out = 0;
    else if (enif_get_int64(env_, term, &number) && number >= 0) out = number;
    else fail(key);
  }
  void boolean(const char* key, bool& out) {
    ERL_NIF_TERM term;
    if (!value(key, term)) return;
    const auto& atoms = state(env_).atoms;
    if (enif_is_identical(term, atoms.true_)) out = true;
    else if (enif_is_identical(term, atoms.false_)) out = false;
    else fail(key);
  }
  void string(const char* key, std::string& out) {
    ERL_NIF_TERM term;
    if (value(key, term) && !get_string(env_, term, out)) fail(key);
  }
  void strings(const char* key, std::vector<std::string>& out) {
    ERL_NIF_TERM term;
    if (value(key, term) && !get_string_list(env_, term, out)) fail(key);
  }
  // The reader of the map under `key`; of an empty map when it is missing or
  // not a map (that key is then the error, and the nested reads find nothing).
  ConfigReader nested(const char* key) {
    ERL_NIF_TERM term;
    if (!value(key, term) || !enif_is_map(env_, term)) {
      fail(key);
      term = enif_make_new_map(env_);
    }
    return ConfigReader(env_, term, fmt::format("{}{}.", prefix_, key));
  }
  void take_error(const ConfigReader& other) {
    if (bad_key_.empty()) bad_key_ = other.bad_key_;
  }
  const std::string& bad_key() const { return bad_key_; }

 private:
  void fail(const char* key) {
    if (bad_key_.empty()) bad_key_ = prefix_ + key;
  }

  ErlNifEnv* env_;
  ERL_NIF_TERM map_;
  std::string prefix_;
  std::string bad_key_;
};

void read_heartbeat(ConfigReader heartbeat, core::PoolConfig& config, ConfigReader& reader) {
  heartbeat.boolean("enabled", config.heartbeat_enabled);
  heartbeat.millis("ping_interval_ms", config.ping_interval);
  heartbeat.millis("initial_delay_ms", config.heartbeat_initial_delay);
  heartbeat.millis("timeout_ms", config.ping_timeout);
  heartbeat.integer("max_missed_heartbeats", config.max_missed_heartbeats);
  heartbeat.boolean("dependent", config.heartbeat_dependent);
  reader.take_error(heartbeat);
}

}  // namespace

core::PoolConfig read_pool_config(ErlNifEnv* env, ERL_NIF_TERM map, const NifState& nif) {
  core::PoolConfig config;
  ConfigReader reader(env, map);
  int max_queue = 0;
  std::int64_t ttl_ms = 0, max_requests = 0;
  reader.string("name", config.name);
  reader.integer("pool_size", config.pool_size);
  reader.integer("capacity_per_worker", config.capacity_per_worker);
  reader.string("python_executable", config.executable);
  reader.strings("worker_argv", config.worker_argv);
  reader.strings("env", config.env);
  reader.string("working_dir", config.working_dir);
  reader.integer("startup_batch_size", config.startup_batch_size);
  reader.millis("startup_batch_delay_ms", config.startup_batch_delay);
  reader.millis("pool_startup_timeout", config.startup_timeout);
  reader.integer("max_queue_size", max_queue);
  reader.millis("queue_timeout_ms", config.queue_timeout);
  reader.millis("restart_backoff_ms", config.restart_backoff);
  reader.millis("max_restart_backoff_ms", config.max_restart_backoff);
  reader.millis("graceful_shutdown_timeout_ms", config.graceful_shutdown);
  read_heartbeat(reader.nested("heartbeat"), config, reader);
  reader.integer_or("worker_ttl_ms", nif.atoms.nil, ttl_ms);
  reader.integer_or("worker_max_requests", nif.atoms.infinity, max_requests);
  reader.millis("session_ttl_ms", config.session_ttl);
  reader.millis("tool_overrun_grace_ms", config.overrun_grace);
  reader.integer("stream_window", config.stream_window);
  if (!reader.bad_key().empty()) throw BadConfig(reader.bad_key());
  config.max_queue = static_cast<std::size_t>(std::max(max_queue, 0));
  config.worker_ttl = Millis(ttl_ms);
  config.max_requests = static_cast<std::uint64_t>(max_requests);
  config.run_id = nif.run_id;
  config.runtime_dir = nif.runtime_dir;
  config.lifeline_fd = nif.lifeline_read.get();
  config.guard = nif.guard_path;
  return config;
}

}  // namespace snakepit::nif
