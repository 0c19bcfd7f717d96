// JSON from a worker -> Erlang terms. Owns the rule for where a term may be
// built: off a scheduler (gRPC threads, into a process-independent env) only
// while every map stays small, because OTP 25 crashes sending a map of more
// than 128 keys from a non-scheduler thread (erlang/otp#8208). A larger map
// throws NeedsScheduler and the caller builds the term on its own scheduler.
#pragma once

#include <erl_nif.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <string_view>
#include <vector>

#include "atoms.hpp"

namespace snakepit::nif {

// Thrown by a builder working off a scheduler when the term needs one.
struct NeedsScheduler {};

class TermBuilder {
 public:
  using Value = ERL_NIF_TERM;
  // Erlang's flatmap limit: maps up to this size are flat, larger ones are
  // hash tries, the kind otp#8208 (send) and otp#10975 (duplicates) concern.
  static constexpr std::size_t kFlatMapKeys = 32;

  enum class Thread { scheduler, other };

  TermBuilder(ErlNifEnv* env, const Atoms& atoms, Thread thread) : env_(env), atoms_(atoms), thread_(thread) {}

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
    if (keys.size() > kFlatMapKeys) {
      if (thread_ == Thread::other) throw NeedsScheduler{};
      // enif_make_map_from_arrays keeps duplicates in large maps (otp#10975).
      drop_duplicate_keys(keys, values);
    }
    ERL_NIF_TERM map;
    if (enif_make_map_from_arrays(env_, keys.data(), values.data(), keys.size(), &map)) return map;
    // Duplicate keys in a flat map: the last one wins, as in Python's json.
    map = enif_make_new_map(env_);
    for (std::size_t i = 0; i < keys.size(); ++i) enif_make_map_put(env_, map, keys[i], values[i], &map);
    return map;
  }

 private:
  // Keeps the last value of each key, as Python's json does.
  static void drop_duplicate_keys(std::vector<Value>& keys, std::vector<Value>& values) {
    std::vector<std::size_t> order(keys.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::size_t a, std::size_t b) { return enif_compare(keys[a], keys[b]) < 0; });
    std::vector<Value> unique_keys, unique_values;
    unique_keys.reserve(keys.size());
    unique_values.reserve(keys.size());
    for (std::size_t i = 0; i < order.size(); ++i) {
      const bool last_of_key = i + 1 == order.size() || enif_compare(keys[order[i]], keys[order[i + 1]]) != 0;
      if (!last_of_key) continue;
      unique_keys.push_back(keys[order[i]]);
      unique_values.push_back(values[order[i]]);
    }
    keys.swap(unique_keys);
    values.swap(unique_values);
  }

  ErlNifEnv* env_;
  const Atoms& atoms_;
  Thread thread_;
};

}  // namespace snakepit::nif
