// JSON from a worker -> Erlang terms, built in a process-independent env.
#pragma once

#include <erl_nif.h>

#include <cstring>
#include <string_view>
#include <vector>

#include "atoms.hpp"

namespace snakepit::nif {

class TermBuilder {
 public:
  using Value = ERL_NIF_TERM;
  TermBuilder(ErlNifEnv* env, const Atoms& atoms) : env_(env), atoms_(atoms) {}

  Value null() { return atoms_.nil; }
  Value boolean(bool value) { return value ? atoms_.true_ : atoms_.false_; }
  Value integer(std::int64_t value) { return enif_make_int64(env_, value); }
  Value unsigned_integer(std::uint64_t value) { return enif_make_uint64(env_, value); }
  Value number(double value) { return enif_make_double(env_, value); }
  Value string(std::string_view text) { return binary(text); }
  Value binary(std::string_view bytes) {
    ERL_NIF_TERM term;
    auto* data = enif_make_new_binary(env_, bytes.size(), &term);
    if (!bytes.empty()) std::memcpy(data, bytes.data(), bytes.size());
    return term;
  }
  Value array(std::vector<Value>& items) {
    return enif_make_list_from_array(env_, items.data(), static_cast<unsigned>(items.size()));
  }
  Value object(std::vector<Value>& keys, std::vector<Value>& values) {
    ERL_NIF_TERM map;
    if (enif_make_map_from_arrays(env_, keys.data(), values.data(), keys.size(), &map)) return map;
    // Duplicate keys: the last one wins, as in Python's json.
    map = enif_make_new_map(env_);
    for (std::size_t i = 0; i < keys.size(); ++i) enif_make_map_put(env_, map, keys[i], values[i], &map);
    return map;
  }

 private:
  ErlNifEnv* env_;
  const Atoms& atoms_;
};

}  // namespace snakepit::nif
