// The NIFs, by file: pool_nifs.cpp (pools and calls), elixir_tools.cpp
// (Python -> Elixir tool calls), decode_nifs.cpp (replies built on a
// scheduler); snakepit_nif.cpp registers them, each inside boundary<F>.
#pragma once

#include <erl_nif.h>

namespace snakepit::nif {

#define SNAKEPIT_NIF(name) ERL_NIF_TERM name(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[])
SNAKEPIT_NIF(runtime_info);
SNAKEPIT_NIF(pool_start);
SNAKEPIT_NIF(submit);
SNAKEPIT_NIF(submit_dirty);
SNAKEPIT_NIF(grant);
SNAKEPIT_NIF(cancel);
SNAKEPIT_NIF(count_rejected);
SNAKEPIT_NIF(stats);
SNAKEPIT_NIF(pool_load);
SNAKEPIT_NIF(session_worker);
SNAKEPIT_NIF(session_drop);
SNAKEPIT_NIF(workers);
SNAKEPIT_NIF(reports);
SNAKEPIT_NIF(pool_stop);
SNAKEPIT_NIF(elixir_tools_socket);
SNAKEPIT_NIF(elixir_tools_start);
SNAKEPIT_NIF(elixir_tool_reply);
SNAKEPIT_NIF(elixir_tools_list_reply);
SNAKEPIT_NIF(decode_result);
SNAKEPIT_NIF(decode_chunk);
SNAKEPIT_NIF(decode_params);
#undef SNAKEPIT_NIF

struct NifState;
// At load: the Elixir-tool server, listening in the runtime directory, and
// the gRPC transport on its queue thread. Throws std::exception on failure.
void start_grpc(NifState& nif);

// Resource callbacks.
void pool_destructor(ErlNifEnv*, void* object);
void pool_down(ErlNifEnv*, void* object, ErlNifPid* caller, ErlNifMonitor*);
void handler_down(ErlNifEnv*, void* object, ErlNifPid*, ErlNifMonitor*);

}  // namespace snakepit::nif
