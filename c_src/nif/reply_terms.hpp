// The terms a caller receives: a call's result, a stream's chunks, an
// error tuple, the arguments of a Python -> Elixir tool call. Each builder
// runs on a gRPC thread first (the fast path) and, when TermBuilder throws
// NeedsScheduler there, again on the caller's scheduler through the decode
// NIFs, so both paths build exactly the same term.
#pragma once

#include <erl_nif.h>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "../core/types.hpp"
#include "nif_state.hpp"
#include "term_builder.hpp"

namespace snakepit::nif {

ERL_NIF_TERM make_binary(ErlNifEnv* env, std::string_view bytes);
// Takes `bytes` over without copying when it is large.
ERL_NIF_TERM owned_binary(ErlNifEnv* env, NifState& nif, std::string&& bytes);
// The resource type behind owned_binary; opened once at load.
ErlNifResourceType* open_payload_type(ErlNifEnv* env);
// {category, reason, message, %{python_type, traceback, grpc_status, worker_id}}
ERL_NIF_TERM make_error_tuple(ErlNifEnv* env, const Atoms& atoms, const core::Error& error);

// {:ok, value} from a worker's JSON result, or {:error, error_tuple} when it
// is not JSON. Throws NeedsScheduler (thread other) for large maps.
ERL_NIF_TERM json_result_term(ErlNifEnv* env, NifState& nif, std::string_view json, TermBuilder::Thread thread);
// A chunk as the stream callback gets it: the chunk's JSON object (or
// %{"data" => value}) plus "is_final". Throws NeedsScheduler likewise.
ERL_NIF_TERM chunk_term(ErlNifEnv* env, NifState& nif, std::string_view data, bool binary, bool is_final,
                        TermBuilder::Thread thread);
// %{name => value} of a Python -> Elixir tool call's JSON parameters.
ERL_NIF_TERM params_term(ErlNifEnv* env, NifState& nif, const std::vector<std::pair<std::string, std::string>>& params,
                         TermBuilder::Thread thread);

}  // namespace snakepit::nif
