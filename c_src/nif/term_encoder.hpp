// Erlang term -> JSON text for the worker, with the path of any value that
// cannot travel ("args.items[2].owner is a pid").
#pragma once

#include <erl_nif.h>

#include <cstddef>
#include <string>
#include <vector>

#include "../core/types.hpp"
#include "atoms.hpp"

namespace snakepit::nif {

class TermEncoder {
 public:
  enum class Status { ok, invalid, over_budget, needs_preprocess };

  // budget: output bytes allowed before giving up (to move to a dirty
  // scheduler); 0 means unlimited.
  TermEncoder(ErlNifEnv* env, const Atoms& atoms, std::size_t budget) : env_(env), atoms_(atoms), budget_(budget) {}

  // Encodes a map of arguments into one Param per key.
  Status encode_args(ERL_NIF_TERM args, std::vector<core::Param>& params);
  // Encodes any one value (a reply to Python); the path reads "result...".
  Status encode_value(ERL_NIF_TERM value, std::string& out);
  const std::string& error_message() const { return error_; }
  const std::string& error_path() const { return error_path_; }

 private:
  bool encode(ERL_NIF_TERM term, std::string& out, int depth);
  bool encode_map(ERL_NIF_TERM map, std::string& out, int depth);
  bool encode_list(ERL_NIF_TERM list, std::string& out, int depth);
  // Key kinds, as bits: keys of one kind never collide as JSON text, so only
  // a map that mixes kinds is checked for duplicates.
  enum KeyKind : unsigned { kAtomKey = 1, kBinaryKey = 2, kIntegerKey = 4 };
  // A key's JSON text into `text`, its kind into `kinds`. False when over
  // budget (status_ says so) or when no JSON key can hold it (`text` says why).
  bool key_text(ERL_NIF_TERM key, std::string& text, unsigned& kinds);
  bool atom_text(ERL_NIF_TERM atom, std::string& text);
  bool utf8_atom_text(ERL_NIF_TERM atom, std::string& text);
  bool is_struct(ERL_NIF_TERM map);
  bool check_distinct_keys(ERL_NIF_TERM map);
  std::string describe_key(ERL_NIF_TERM key, const std::string& text);
  bool fail(std::string message);
  bool check_budget(std::size_t more);
  std::string path() const;

  ErlNifEnv* env_;
  const Atoms& atoms_;
  std::size_t budget_;
  std::size_t used_ = 0;
  Status status_ = Status::ok;
  std::string error_;
  std::string error_path_;
  std::vector<std::string> path_;
  std::string root_ = "args";
};

}  // namespace snakepit::nif
