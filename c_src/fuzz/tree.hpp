// What the fuzz targets share: a plain value tree that codec::decode builds
// (as the unit tests' builder does), its equality, its JSON text through
// the codec's writers, and the abort that reports a broken invariant.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include <fmt/format.h>

#include "../codec/json.hpp"

namespace snakepit::fuzz {

struct Node;
using NodePtr = std::shared_ptr<const Node>;
using Array = std::vector<NodePtr>;
using Object = std::vector<std::pair<std::string, NodePtr>>;
// Raw bytes (a binary chunk, text that is not JSON), kept apart from
// decoded strings so a target can tell which one it got.
struct Bytes {
  std::string bytes;
  bool operator==(const Bytes&) const = default;
};

struct Node {
  std::variant<std::monostate, bool, std::int64_t, std::uint64_t, double, std::string, Array, Object, Bytes> value;
};

template <class T>
NodePtr make(T value) {
  auto node = std::make_shared<Node>();
  node->value = std::move(value);
  return node;
}

// codec::decode's Builder requirements, plus binary() for decode_chunk.
struct TreeBuilder {
  using Value = NodePtr;
  Value null() { return make(std::monostate{}); }
  Value boolean(bool b) { return make(b); }
  Value integer(std::int64_t i) { return make(i); }
  Value unsigned_integer(std::uint64_t u) { return make(u); }
  Value number(double d) { return make(d); }
  Value string(std::string_view s) { return make(std::string(s)); }
  Value binary(std::string_view b) { return make(Bytes{std::string(b)}); }
  Value array(std::vector<Value>& items) { return make(Array(items.begin(), items.end())); }
  Value object(std::vector<Value>& keys, std::vector<Value>& values) {
    Object fields;
    for (std::size_t i = 0; i < keys.size(); ++i) fields.emplace_back(std::get<std::string>(keys[i]->value), values[i]);
    return make(std::move(fields));
  }
};

[[noreturn]] inline void fail(const char* what, std::string_view input) {
  fmt::print(stderr, "invariant broken: {}\ninput ({} bytes): {}\n", what, input.size(), input);
  std::abort();
}

#define FUZZ_CHECK(condition, input) \
  do {                               \
    if (!(condition)) ::snakepit::fuzz::fail(#condition, input); \
  } while (0)

// Structural equality; doubles must match bit for bit (so -0.0 != 0.0).
inline bool equal(const NodePtr& a, const NodePtr& b) {
  if (a->value.index() != b->value.index()) return false;
  return std::visit(
      [&](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        const auto& y = std::get<T>(b->value);
        if constexpr (std::is_same_v<T, double>) {
          return std::memcmp(&x, &y, sizeof x) == 0;
        } else if constexpr (std::is_same_v<T, Array>) {
          if (x.size() != y.size()) return false;
          for (std::size_t i = 0; i < x.size(); ++i)
            if (!equal(x[i], y[i])) return false;
          return true;
        } else if constexpr (std::is_same_v<T, Object>) {
          if (x.size() != y.size()) return false;
          for (std::size_t i = 0; i < x.size(); ++i)
            if (x[i].first != y[i].first || !equal(x[i].second, y[i].second)) return false;
          return true;
        } else {
          return x == y;
        }
      },
      a->value);
}

// Every string and key in the tree is valid UTF-8 (what decode promises).
inline bool all_utf8(const NodePtr& node) {
  if (const auto* s = std::get_if<std::string>(&node->value)) return codec::valid_utf8(*s);
  if (const auto* array = std::get_if<Array>(&node->value)) {
    for (const auto& item : *array)
      if (!all_utf8(item)) return false;
  }
  if (const auto* object = std::get_if<Object>(&node->value)) {
    for (const auto& [key, value] : *object)
      if (!codec::valid_utf8(key) || !all_utf8(value)) return false;
  }
  return true;
}

// The tree as JSON text, written with the codec's writers (as the NIF's
// term encoder does). False when a double is not finite; Bytes never are JSON.
inline bool encode(const NodePtr& node, std::string& out) {
  return std::visit(
      [&](const auto& x) -> bool {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, std::monostate>) {
          out += "null";
        } else if constexpr (std::is_same_v<T, bool>) {
          out += x ? "true" : "false";
        } else if constexpr (std::is_same_v<T, std::int64_t>) {
          codec::append_integer(out, x);
        } else if constexpr (std::is_same_v<T, std::uint64_t>) {
          codec::append_unsigned(out, x);
        } else if constexpr (std::is_same_v<T, double>) {
          return codec::append_double(out, x);
        } else if constexpr (std::is_same_v<T, std::string>) {
          codec::append_string(out, x);
        } else if constexpr (std::is_same_v<T, Array>) {
          out += '[';
          for (std::size_t i = 0; i < x.size(); ++i) {
            if (i > 0) out += ',';
            if (!encode(x[i], out)) return false;
          }
          out += ']';
        } else if constexpr (std::is_same_v<T, Object>) {
          out += '{';
          for (std::size_t i = 0; i < x.size(); ++i) {
            if (i > 0) out += ',';
            codec::append_string(out, x[i].first);
            out += ':';
            if (!encode(x[i].second, out)) return false;
          }
          out += '}';
        } else {
          return false;
        }
        return true;
      },
      node->value);
}

}  // namespace snakepit::fuzz
