// The decode NIFs: a reply, chunk or tool-call parameters that a gRPC
// thread could not build (TermBuilder::NeedsScheduler) built by the caller,
// on its own scheduler or a dirty one past the budget.
#include <string>
#include <utility>
#include <vector>

#include "boundary.hpp"
#include "nifs.hpp"
#include "reply_terms.hpp"
#include "term_builder.hpp"

namespace snakepit::nif {
namespace {

// Replies decoded on the caller's scheduler past this size move to a dirty one.
constexpr std::size_t kSchedulerDecodeBudget = 32 * 1024;

// The caller builds what a gRPC thread could not (see TermBuilder): on its
// own scheduler, or a dirty one past the budget.
using DecodeFn = ERL_NIF_TERM (*)(ErlNifEnv*, int, const ERL_NIF_TERM[]);

ERL_NIF_TERM on_fitting_scheduler(ErlNifEnv* env, const ERL_NIF_TERM argv[], int argc, std::size_t size,
                                  const char* name, DecodeFn dirty, DecodeFn here) {
  if (size > kSchedulerDecodeBudget && enif_thread_type() == ERL_NIF_THR_NORMAL_SCHEDULER)
    return enif_schedule_nif(env, name, ERL_NIF_DIRTY_JOB_CPU_BOUND, dirty, argc, argv);
  return here(env, argc, argv);
}

ERL_NIF_TERM decode_result_here(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ErlNifBinary bin;
  if (!enif_inspect_binary(env, argv[0], &bin)) throw BadArg{0, "a binary"};
  const std::string_view json(reinterpret_cast<const char*>(bin.data), bin.size);
  return json_result_term(env, state(env), json, TermBuilder::Thread::scheduler);
}

ERL_NIF_TERM decode_chunk_here(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  ErlNifBinary bin;
  if (!enif_inspect_binary(env, argv[0], &bin)) throw BadArg{0, "a binary"};
  const std::string_view json(reinterpret_cast<const char*>(bin.data), bin.size);
  const bool is_final = enif_is_identical(argv[1], state(env).atoms.true_);
  return chunk_term(env, state(env), json, false, is_final, TermBuilder::Thread::scheduler);
}

bool read_params(ErlNifEnv* env, ERL_NIF_TERM list, std::vector<std::pair<std::string, std::string>>& params) {
  ERL_NIF_TERM head;
  while (enif_get_list_cell(env, list, &head, &list)) {
    int arity;
    const ERL_NIF_TERM* pair;
    std::string name, json;
    if (!enif_get_tuple(env, head, &arity, &pair) || arity != 2 || !get_string(env, pair[0], name) ||
        !get_string(env, pair[1], json))
      return false;
    params.emplace_back(std::move(name), std::move(json));
  }
  return enif_is_empty_list(env, list);
}

ERL_NIF_TERM decode_params_here(ErlNifEnv* env, int, const ERL_NIF_TERM argv[]) {
  std::vector<std::pair<std::string, std::string>> params;
  if (!read_params(env, argv[0], params)) throw BadArg{0, "a list of {name, json} binaries"};
  return params_term(env, state(env), params, TermBuilder::Thread::scheduler);
}

}  // namespace

// decode_result(json) -> {:ok, term} | {:error, error_tuple}
ERL_NIF_TERM decode_result(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]) {
  ErlNifBinary bin;
  if (!enif_inspect_binary(env, argv[0], &bin)) throw BadArg{0, "a binary"};
  return on_fitting_scheduler(env, argv, argc, bin.size, "decode_result", boundary<decode_result_here>, decode_result_here);
}

// decode_chunk(json, is_final) -> chunk map
ERL_NIF_TERM decode_chunk(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]) {
  ErlNifBinary bin;
  if (!enif_inspect_binary(env, argv[0], &bin)) throw BadArg{0, "a binary"};
  return on_fitting_scheduler(env, argv, argc, bin.size, "decode_chunk", boundary<decode_chunk_here>, decode_chunk_here);
}

// decode_params([{name, json}]) -> %{name => value}
ERL_NIF_TERM decode_params(ErlNifEnv* env, int argc, const ERL_NIF_TERM argv[]) {
  std::size_t size = 0;
  ERL_NIF_TERM list = argv[0], head;
  const ERL_NIF_TERM* pair;
  int arity;
  ErlNifBinary bin;
  while (enif_get_list_cell(env, list, &head, &list)) {
    if (enif_get_tuple(env, head, &arity, &pair) && arity == 2 && enif_inspect_binary(env, pair[1], &bin))
      size += bin.size;
  }
  return on_fitting_scheduler(env, argv, argc, size, "decode_params", boundary<decode_params_here>, decode_params_here);
}

}  // namespace snakepit::nif
