// The reply term builders of reply_terms.hpp: results, chunks, error
// tuples and tool-call arguments, the same on a gRPC thread and in the
// decode NIFs.
#include "reply_terms.hpp"

#include <cstring>

#include "../core/spawner.hpp"

namespace snakepit::nif {
namespace {

// Below this a copy costs less than a resource.
constexpr std::size_t kOwnedBinaryMin = 64 * 1024;

void payload_destructor(ErlNifEnv*, void* object) { static_cast<PayloadResource*>(object)->~PayloadResource(); }

ERL_NIF_TERM decode_json(ErlNifEnv* env, NifState& nif, std::string_view json, TermBuilder::Thread thread) {
  TermBuilder builder(env, nif.atoms, thread);
  return codec::decode(json, builder, *nif.parsers.acquire());
}

}  // namespace

ERL_NIF_TERM make_binary(ErlNifEnv* env, std::string_view bytes) {
  ERL_NIF_TERM term;
  auto* data = enif_make_new_binary(env, bytes.size(), &term);
  if (!bytes.empty()) std::memcpy(data, bytes.data(), bytes.size());
  return term;
}

ERL_NIF_TERM owned_binary(ErlNifEnv* env, NifState& nif, std::string&& bytes) {
  if (bytes.size() < kOwnedBinaryMin || nif.payload_type == nullptr) return make_binary(env, bytes);
  void* memory = enif_alloc_resource(nif.payload_type, sizeof(PayloadResource));
  auto* payload = new (memory) PayloadResource{std::move(bytes)};
  ERL_NIF_TERM term = enif_make_resource_binary(env, payload, payload->bytes.data(), payload->bytes.size());
  enif_release_resource(payload);
  return term;
}

ErlNifResourceType* open_payload_type(ErlNifEnv* env) {
  ErlNifResourceTypeInit init{};
  init.dtor = payload_destructor;
  return enif_open_resource_type_x(env, "snakepit_payload", &init, ERL_NIF_RT_CREATE, nullptr);
}

ERL_NIF_TERM make_error_tuple(ErlNifEnv* env, const Atoms& atoms, const core::Error& error) {
  ERL_NIF_TERM extra = enif_make_new_map(env);
  auto put = [&](ERL_NIF_TERM key, ERL_NIF_TERM value) { enif_make_map_put(env, extra, key, value, &extra); };
  if (!error.python_type.empty()) put(atoms.python_type, make_binary(env, error.python_type));
  if (!error.traceback.empty()) put(atoms.traceback, make_binary(env, error.traceback));
  if (error.grpc_status >= 0) put(atoms.grpc_status, enif_make_int(env, error.grpc_status));
  if (!error.worker_id.empty()) put(atoms.worker_id, make_binary(env, error.worker_id));
  if (error.exit_status) put(atoms.exit_status, enif_make_int(env, *error.exit_status));
  if (error.exit_signal) put(atoms.exit_signal, make_binary(env, core::signal_name(*error.exit_signal)));
  return enif_make_tuple4(env, enif_make_atom(env, core::to_string(error.category)),
                          enif_make_atom(env, error.reason.c_str()), make_binary(env, error.message), extra);
}

ERL_NIF_TERM json_result_term(ErlNifEnv* env, NifState& nif, std::string_view json, TermBuilder::Thread thread) {
  if (json.empty()) return enif_make_tuple2(env, nif.atoms.ok, nif.atoms.nil);
  try {
    return enif_make_tuple2(env, nif.atoms.ok, decode_json(env, nif, json, thread));
  } catch (const codec::DecodeError& e) {
    core::Error error;
    error.category = core::ErrorCategory::grpc_error;
    error.reason = "invalid_result";
    error.message = e.what();
    return enif_make_tuple2(env, nif.atoms.error, make_error_tuple(env, nif.atoms, error));
  }
}

ERL_NIF_TERM chunk_term(ErlNifEnv* env, NifState& nif, std::string_view data, bool binary, bool is_final,
                        TermBuilder::Thread thread) {
  TermBuilder builder(env, nif.atoms, thread);
  return codec::decode_chunk(data, binary, is_final, builder, *nif.parsers.acquire());
}

ERL_NIF_TERM params_term(ErlNifEnv* env, NifState& nif, const std::vector<std::pair<std::string, std::string>>& params,
                         TermBuilder::Thread thread) {
  if (thread == TermBuilder::Thread::other && params.size() > TermBuilder::kFlatMapKeys) throw NeedsScheduler{};
  ERL_NIF_TERM map = enif_make_new_map(env);
  for (const auto& [name, json] : params) {
    ERL_NIF_TERM value;
    try {
      value = json.empty() ? nif.atoms.nil : decode_json(env, nif, json, thread);
    } catch (const codec::DecodeError&) {
      value = make_binary(env, json);
    }
    enif_make_map_put(env, map, make_binary(env, name), value, &map);
  }
  return map;
}

}  // namespace snakepit::nif
