// TermEncoder (term_encoder.hpp): a call's arguments as JSON parameters,
// and the message naming the path of the first value that cannot travel.
#include "term_encoder.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>
#include <string_view>
#include <utility>

#include "../codec/json.hpp"

namespace snakepit::nif {
namespace {
constexpr int kMaxDepth = 256;

const char* describe_type(ErlNifTermType type) {
  switch (type) {
    case ERL_NIF_TERM_TYPE_PID: return "a pid";
    case ERL_NIF_TERM_TYPE_PORT: return "a port";
    case ERL_NIF_TERM_TYPE_REFERENCE: return "a reference";
    case ERL_NIF_TERM_TYPE_FUN: return "a function";
    case ERL_NIF_TERM_TYPE_TUPLE: return "a tuple";
    case ERL_NIF_TERM_TYPE_FLOAT: return "a float";
    case ERL_NIF_TERM_TYPE_MAP: return "a map";
    case ERL_NIF_TERM_TYPE_LIST: return "a list";
    case ERL_NIF_TERM_TYPE_INTEGER: return "an integer outside the 64-bit range";
    case ERL_NIF_TERM_TYPE_BITSTRING: return "a bitstring that is not a whole number of bytes";
    default: return "a value of unsupported type";
  }
}

// An Elixir atom that needs no quotes after the colon (:name, :ok?).
bool plain_atom(std::string_view text) {
  auto word = [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '@'; };
  if (text.empty() || !(std::isalpha(static_cast<unsigned char>(text[0])) || text[0] == '_')) return false;
  if (text.back() == '?' || text.back() == '!') text.remove_suffix(1);
  return std::all_of(text.begin(), text.end(), word);
}

// Owns a binary made by enif_term_to_binary.
class OwnedBinary {
 public:
  OwnedBinary() = default;
  OwnedBinary(const OwnedBinary&) = delete;
  OwnedBinary& operator=(const OwnedBinary&) = delete;
  ~OwnedBinary() {
    if (owned) enif_release_binary(&bin);
  }
  ErlNifBinary bin{};
  bool owned = false;
};
}  // namespace

std::string TermEncoder::path() const {
  std::string text = root_;
  for (const auto& segment : path_) text += segment;
  return text;
}

bool TermEncoder::fail(std::string message) {
  status_ = Status::invalid;
  error_path_ = path();
  error_ = fmt::format("{} {}", error_path_, message);
  return false;
}

bool TermEncoder::check_budget(std::size_t more) {
  used_ += more;
  if (budget_ != 0 && used_ > budget_) {
    status_ = Status::over_budget;
    return false;
  }
  return true;
}

// The common atom reads as Latin-1 and is re-encoded as UTF-8.
bool TermEncoder::atom_text(ERL_NIF_TERM atom, std::string& text) {
  unsigned length = 0;
  if (!enif_get_atom_length(env_, atom, &length, ERL_NIF_LATIN1)) return utf8_atom_text(atom, text);
  std::string latin1(length + 1, '\0');
  const int written = enif_get_atom(env_, atom, latin1.data(), length + 1, ERL_NIF_LATIN1);
  if (written <= 0) return false;
  latin1.resize(static_cast<std::size_t>(written - 1));
  text.clear();
  for (unsigned char c : latin1) {
    if (c < 0x80) {
      text.push_back(static_cast<char>(c));
    } else {
      text.push_back(static_cast<char>(0xC0 | (c >> 6)));
      text.push_back(static_cast<char>(0x80 | (c & 0x3F)));
    }
  }
  return true;
}

// OTP 25's enif_get_atom reads Latin-1 only (ERL_NIF_UTF8 came in OTP 26).
// The external term format holds an atom beyond Latin-1 as its UTF-8 text
// (ATOM_UTF8_EXT / SMALL_ATOM_UTF8_EXT), so the rare such atom is read there.
bool TermEncoder::utf8_atom_text(ERL_NIF_TERM atom, std::string& text) {
  constexpr unsigned char kVersion = 131, kAtomUtf8 = 118, kSmallAtomUtf8 = 119;
  OwnedBinary external;
  if (!enif_term_to_binary(env_, atom, &external.bin)) return false;
  external.owned = true;
  const unsigned char* data = external.bin.data;
  const std::size_t size = external.bin.size;
  std::size_t start = 0, length = 0;
  if (size >= 3 && data[0] == kVersion && data[1] == kSmallAtomUtf8) {
    start = 3;
    length = data[2];
  } else if (size >= 4 && data[0] == kVersion && data[1] == kAtomUtf8) {
    start = 4;
    length = (std::size_t{data[2]} << 8) | data[3];
  }
  if (start == 0 || start + length != size) return false;
  text.assign(reinterpret_cast<const char*>(data + start), length);
  return true;
}

bool TermEncoder::key_text(ERL_NIF_TERM key, std::string& text, unsigned& kinds) {
  ErlNifBinary bin;
  if (enif_is_binary(env_, key) && enif_inspect_binary(env_, key, &bin)) {
    kinds |= kBinaryKey;
    if (!check_budget(bin.size + 3)) return false;
    std::string_view view(reinterpret_cast<const char*>(bin.data), bin.size);
    if (!codec::valid_utf8(view)) {
      text = "has a map key that is not valid UTF-8";
      return false;
    }
    text.assign(view);
    return true;
  }
  if (enif_is_atom(env_, key)) {
    kinds |= kAtomKey;
    if (atom_text(key, text)) return check_budget(text.size() + 3);
    text = "has a map key that is an atom whose text cannot be read";
    return false;
  }
  ErlNifSInt64 number;
  ErlNifUInt64 unsigned_number;
  if (enif_get_int64(env_, key, &number)) {
    kinds |= kIntegerKey;
    text = std::to_string(number);
    return check_budget(8);
  }
  if (enif_get_uint64(env_, key, &unsigned_number)) {
    kinds |= kIntegerKey;
    text = std::to_string(unsigned_number);
    return check_budget(8);
  }
  text = fmt::format("has a map key that is {} (keys must be atoms, strings or integers)",
                     describe_type(enif_term_type(env_, key)));
  return false;
}

// A struct is a map whose :__struct__ is an atom, as Elixir's %module{}
// pattern has it, and exactly what Snakepit.Args converts; any other
// :__struct__ value is an ordinary key (else the two would disagree and
// the caller would preprocess forever).
bool TermEncoder::is_struct(ERL_NIF_TERM map) {
  ERL_NIF_TERM module;
  return enif_get_map_value(env_, map, atoms_.struct_, &module) && enif_is_atom(env_, module);
}

// Runs only for a map that mixes key kinds: :a and "a", or 1 and "1",
// would reach Python as one key with the last value silently winning.
bool TermEncoder::check_distinct_keys(ERL_NIF_TERM map) {
  std::size_t size = 0;
  enif_get_map_size(env_, map, &size);
  std::vector<std::pair<std::string, ERL_NIF_TERM>> keys;
  keys.reserve(size);
  ErlNifMapIterator it;
  if (!enif_map_iterator_create(env_, map, &it, ERL_NIF_MAP_ITERATOR_FIRST)) return fail("could not be read");
  ERL_NIF_TERM key, value;
  unsigned kinds = 0;
  std::string text;
  while (enif_map_iterator_get_pair(env_, &it, &key, &value)) {
    key_text(key, text, kinds);  // every key was read once already
    keys.emplace_back(text, key);
    enif_map_iterator_next(env_, &it);
  }
  enif_map_iterator_destroy(env_, &it);
  // Equal texts in term order, so the message is the same on every run.
  std::sort(keys.begin(), keys.end(), [](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first < b.first;
    return enif_compare(a.second, b.second) < 0;
  });
  for (std::size_t i = 1; i < keys.size(); ++i) {
    if (keys[i].first != keys[i - 1].first) continue;
    return fail(fmt::format("has keys {} and {}, which are the same key in JSON",
                            describe_key(keys[i - 1].second, keys[i - 1].first), describe_key(keys[i].second, keys[i].first)));
  }
  return true;
}

// A key as Elixir writes it: "a", :a, :"日本", nil, 1.
std::string TermEncoder::describe_key(ERL_NIF_TERM key, const std::string& text) {
  std::string out;
  if (enif_is_atom(env_, key)) {
    if (text == "nil" || text == "true" || text == "false") return text;
    out.push_back(':');
    if (plain_atom(text)) return out + text;
  } else if (!enif_is_binary(env_, key)) {
    return text;
  }
  codec::append_string(out, text);
  return out;
}

TermEncoder::Status TermEncoder::encode_args(ERL_NIF_TERM args, std::vector<core::Param>& params) {
  if (!enif_is_map(env_, args)) {
    fail("must be a map");
    return status_;
  }
  if (is_struct(args)) {
    fail("must be a plain map, not a struct");
    return status_;
  }
  ErlNifMapIterator it;
  if (!enif_map_iterator_create(env_, args, &it, ERL_NIF_MAP_ITERATOR_FIRST)) {
    fail("could not be read");
    return status_;
  }
  ERL_NIF_TERM key, value;
  unsigned kinds = 0;
  while (status_ == Status::ok && enif_map_iterator_get_pair(env_, &it, &key, &value)) {
    core::Param param;
    if (!key_text(key, param.name, kinds)) {
      path_.clear();
      if (status_ == Status::ok) fail(param.name);
      break;
    }
    path_.assign(1, fmt::format(".{}", param.name));
    ErlNifBinary bin;
    int arity = 0;
    const ERL_NIF_TERM* elements = nullptr;
    // Raw bytes travel as bytes: a binary that is not UTF-8, or {:binary, bin}.
    // The budget goes first, so a big binary is validated on the dirty scheduler.
    if (enif_is_binary(env_, value) && enif_inspect_binary(env_, value, &bin)) {
      if (!check_budget(bin.size + 2)) break;
      const std::string_view text(reinterpret_cast<const char*>(bin.data), bin.size);
      if (codec::valid_utf8(text)) {
        codec::append_string(param.data, text);
      } else {
        param.binary = true;
        param.data.assign(text);
      }
    } else if (enif_get_tuple(env_, value, &arity, &elements) && arity == 2 &&
               enif_is_identical(elements[0], atoms_.binary) && enif_inspect_binary(env_, elements[1], &bin)) {
      if (!check_budget(bin.size)) break;
      param.binary = true;
      param.data.assign(reinterpret_cast<const char*>(bin.data), bin.size);
    } else if (!encode(value, param.data, 0)) {
      break;
    }
    params.push_back(std::move(param));
    enif_map_iterator_next(env_, &it);
  }
  enif_map_iterator_destroy(env_, &it);
  if (status_ == Status::ok && (kinds & (kinds - 1)) != 0) {
    path_.clear();
    check_distinct_keys(args);
  }
  return status_;
}

TermEncoder::Status TermEncoder::encode_value(ERL_NIF_TERM value, std::string& out) {
  root_ = "result";
  encode(value, out, 0);
  return status_;
}

bool TermEncoder::encode(ERL_NIF_TERM term, std::string& out, int depth) {
  if (depth > kMaxDepth) return fail(fmt::format("nests deeper than {} levels", kMaxDepth));
  switch (enif_term_type(env_, term)) {
    case ERL_NIF_TERM_TYPE_ATOM: {
      if (enif_is_identical(term, atoms_.true_)) {
        out.append("true");
      } else if (enif_is_identical(term, atoms_.false_)) {
        out.append("false");
      } else if (enif_is_identical(term, atoms_.nil)) {
        out.append("null");
      } else {
        std::string text;
        if (!atom_text(term, text)) return fail("is an atom whose text cannot be read");
        codec::append_string(out, text);
      }
      return check_budget(8);
    }
    case ERL_NIF_TERM_TYPE_BITSTRING: {
      ErlNifBinary bin;
      if (!enif_inspect_binary(env_, term, &bin)) return fail("is a bitstring that is not a whole number of bytes");
      if (!check_budget(bin.size + 2)) return false;
      std::string_view text(reinterpret_cast<const char*>(bin.data), bin.size);
      if (!codec::valid_utf8(text))
        return fail("is a binary that is not valid UTF-8 (raw bytes can be sent as a top-level argument)");
      codec::append_string(out, text);
      return true;
    }
    case ERL_NIF_TERM_TYPE_INTEGER: {
      ErlNifSInt64 signed_value;
      ErlNifUInt64 unsigned_value;
      if (enif_get_int64(env_, term, &signed_value)) {
        codec::append_integer(out, signed_value);
      } else if (enif_get_uint64(env_, term, &unsigned_value)) {
        codec::append_unsigned(out, unsigned_value);
      } else {
        return fail("is an integer outside the 64-bit range");
      }
      return check_budget(8);
    }
    case ERL_NIF_TERM_TYPE_FLOAT: {
      double value = 0;
      enif_get_double(env_, term, &value);
      codec::append_double(out, value);
      return check_budget(8);
    }
    case ERL_NIF_TERM_TYPE_LIST:
      return encode_list(term, out, depth);
    case ERL_NIF_TERM_TYPE_MAP:
      return encode_map(term, out, depth);
    default:
      return fail(fmt::format("is {}, which cannot be sent to Python", describe_type(enif_term_type(env_, term))));
  }
}

bool TermEncoder::encode_list(ERL_NIF_TERM list, std::string& out, int depth) {
  out.push_back('[');
  ERL_NIF_TERM head, tail = list;
  std::size_t index = 0;
  path_.emplace_back();
  while (enif_get_list_cell(env_, tail, &head, &tail)) {
    if (index > 0) out.push_back(',');
    path_.back() = fmt::format("[{}]", index);
    if (!encode(head, out, depth + 1)) return false;
    ++index;
  }
  path_.pop_back();
  if (!enif_is_empty_list(env_, tail)) return fail("is an improper list");
  out.push_back(']');
  return check_budget(2);
}

bool TermEncoder::encode_map(ERL_NIF_TERM map, std::string& out, int depth) {
  if (is_struct(map)) {
    // Calendar structs become ISO 8601 text on the Elixir side.
    status_ = Status::needs_preprocess;
    return false;
  }
  ErlNifMapIterator it;
  if (!enif_map_iterator_create(env_, map, &it, ERL_NIF_MAP_ITERATOR_FIRST)) return fail("could not be read");
  out.push_back('{');
  ERL_NIF_TERM key, value;
  bool first = true;
  bool ok = true;
  unsigned kinds = 0;
  std::string name;
  path_.emplace_back();
  while (enif_map_iterator_get_pair(env_, &it, &key, &value)) {
    if (!key_text(key, name, kinds)) {
      path_.pop_back();
      if (status_ == Status::ok) fail(name);
      ok = false;
      break;
    }
    if (!first) out.push_back(',');
    first = false;
    codec::append_string(out, name);
    out.push_back(':');
    path_.back() = fmt::format(".{}", name);
    if (!encode(value, out, depth + 1)) {
      ok = false;
      break;
    }
    enif_map_iterator_next(env_, &it);
  }
  enif_map_iterator_destroy(env_, &it);
  if (!ok) return false;
  path_.pop_back();
  if ((kinds & (kinds - 1)) != 0 && !check_distinct_keys(map)) return false;
  out.push_back('}');
  return check_budget(2);
}

}  // namespace snakepit::nif
