// The NIF boundary's error terms and the argument reader (boundary.hpp).
#include "boundary.hpp"

namespace snakepit::nif {

namespace {
thread_local ErlNifEnv* running_nif_env = nullptr;
}  // namespace

ErlNifEnv* calling_env() noexcept { return running_nif_env; }

CallingEnvScope::CallingEnvScope(ErlNifEnv* env) noexcept : previous_(running_nif_env) { running_nif_env = env; }

CallingEnvScope::~CallingEnvScope() { running_nif_env = previous_; }

ERL_NIF_TERM raise_argument_error(ErlNifEnv* env, const BadArg& bad) {
  const auto& atoms = state(env).atoms;
  const std::string message = fmt::format("argument {}: expected {}", bad.index + 1, bad.expected);
  ERL_NIF_TERM keys[] = {atoms.struct_, atoms.exception_, atoms.message};
  ERL_NIF_TERM values[] = {atoms.argument_error, atoms.true_, make_binary(env, message)};
  ERL_NIF_TERM exception;
  enif_make_map_from_arrays(env, keys, values, 3, &exception);
  return enif_raise_exception(env, exception);
}

ERL_NIF_TERM exception_error(ErlNifEnv* env, std::string_view what) {
  const auto& atoms = state(env).atoms;
  const std::string message = fmt::format("native code failed: {}", what);
  return enif_make_tuple2(env, atoms.error,
                          enif_make_tuple4(env, atoms.pool, atoms.native_exception, make_binary(env, message),
                                           enif_make_new_map(env)));
}

PoolResource* ArgReader::pool_or_null(int index) const {
  void* object = nullptr;
  if (!enif_get_resource(env_, argv_[index], state(env_).pool_type, &object)) throw BadArg{index, "a pool"};
  auto* resource = static_cast<PoolResource*>(object);
  return resource->pool ? resource : nullptr;
}

PoolResource* ArgReader::pool(int index) const {
  if (auto* resource = pool_or_null(index)) return resource;
  throw BadArg{index, "a running pool"};
}

std::uint64_t ArgReader::u64(int index, const char* what) const {
  ErlNifUInt64 value;
  if (!enif_get_uint64(env_, argv_[index], &value)) throw BadArg{index, what};
  return value;
}

std::int64_t ArgReader::i64(int index, const char* what) const {
  ErlNifSInt64 value;
  if (!enif_get_int64(env_, argv_[index], &value)) throw BadArg{index, what};
  return value;
}

int ArgReader::integer(int index, const char* what) const {
  int value;
  if (!enif_get_int(env_, argv_[index], &value)) throw BadArg{index, what};
  return value;
}

std::string_view ArgReader::bytes(int index, const char* what) const {
  ErlNifBinary bin;
  if (!enif_inspect_binary(env_, argv_[index], &bin)) throw BadArg{index, what};
  return {reinterpret_cast<const char*>(bin.data), bin.size};
}

std::string ArgReader::string(int index, const char* what) const { return std::string(bytes(index, what)); }

ErlNifPid ArgReader::local_pid(int index, const char* what) const {
  ErlNifPid pid;
  if (!enif_get_local_pid(env_, argv_[index], &pid)) throw BadArg{index, what};
  return pid;
}

bool ArgReader::boolean(int index) const { return enif_is_identical(argv_[index], state(env_).atoms.true_); }

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

ERL_NIF_TERM error_with(ErlNifEnv* env, std::string_view message) {
  return enif_make_tuple2(env, state(env).atoms.error, make_binary(env, message));
}

}  // namespace snakepit::nif
