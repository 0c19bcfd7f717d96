// JSON text <-> values, independent of erl_nif. The NIF walks Erlang terms
// and appends with the writers below; results are decoded with simdjson into
// whatever value type a Builder produces (ERL_NIF_TERM in the NIF, a small
// tree in the unit tests).
#pragma once

#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <simdjson.h>

namespace snakepit::codec {

bool valid_utf8(std::string_view text) noexcept;

// Appends `text` (valid UTF-8) as a quoted, escaped JSON string.
void append_string(std::string& out, std::string_view text);
void append_integer(std::string& out, std::int64_t value);
void append_unsigned(std::string& out, std::uint64_t value);
// Shortest text that reads back as the same double, always marked as a
// float ("1.0", not "1") so the other side does not turn it into an int.
// Returns false for NaN and infinities, which JSON cannot hold.
bool append_double(std::string& out, double value);

class DecodeError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Builder requirements: a `Value` type and
//   Value null(); Value boolean(bool); Value integer(int64_t);
//   Value unsigned_integer(uint64_t); Value number(double);
//   Value string(std::string_view); Value array(std::vector<Value>&);
//   Value object(std::vector<Value>& keys, std::vector<Value>& values);
template <class Builder>
typename Builder::Value decode(std::string_view json, Builder& builder);
// Same, reusing `parser`'s buffers.
template <class Builder>
typename Builder::Value decode(std::string_view json, Builder& builder, simdjson::dom::parser& parser);

// A stream chunk as the map its consumer receives: the fields of a JSON
// object payload, else "data" => the payload's JSON value, or its raw bytes
// for a binary chunk or text that is not JSON; plus "is_final" =>
// `is_final` (a payload's own "is_final" gives way to it). An empty text
// payload gives only "is_final". Needs, beyond decode's requirements,
//   Value binary(std::string_view bytes);
template <class Builder>
typename Builder::Value decode_chunk(std::string_view data, bool binary, bool is_final, Builder& builder,
                                     simdjson::dom::parser& parser);

// Idle simdjson parsers to reuse: a parser keeps its buffers between
// documents (as simdjson advises), so a reply parses without allocating and
// page-faulting fresh buffers. Thread-safe. A parser grown past
// kMaxRetainedCapacity is freed on return rather than kept, so one huge
// reply does not pin its buffers.
class ParserCache {
 public:
  static constexpr std::size_t kMaxRetainedCapacity = 4 * 1024 * 1024;
  static constexpr std::size_t kMaxIdle = 8;

  class Lease {
   public:
    Lease(ParserCache& cache, std::unique_ptr<simdjson::dom::parser> parser)
        : cache_(&cache), parser_(std::move(parser)) {}
    Lease(Lease&&) noexcept = default;
    Lease& operator=(Lease&&) = delete;
    ~Lease() {
      if (parser_) cache_->give_back(std::move(parser_));
    }
    simdjson::dom::parser& operator*() const { return *parser_; }

   private:
    ParserCache* cache_;
    std::unique_ptr<simdjson::dom::parser> parser_;
  };

  Lease acquire();

 private:
  void give_back(std::unique_ptr<simdjson::dom::parser> parser) noexcept;

  std::mutex mutex_;
  std::vector<std::unique_ptr<simdjson::dom::parser>> idle_;
};

namespace detail {

template <class Builder>
typename Builder::Value build(simdjson::dom::element element, Builder& builder) {
  using simdjson::dom::element_type;
  switch (element.type()) {
    case element_type::NULL_VALUE:
      return builder.null();
    case element_type::BOOL:
      return builder.boolean(element.get_bool().value_unsafe());
    case element_type::INT64:
      return builder.integer(element.get_int64().value_unsafe());
    case element_type::UINT64:
      return builder.unsigned_integer(element.get_uint64().value_unsafe());
    case element_type::DOUBLE:
      return builder.number(element.get_double().value_unsafe());
    case element_type::STRING:
      return builder.string(element.get_string().value_unsafe());
    case element_type::ARRAY: {
      std::vector<typename Builder::Value> items;
      auto array = element.get_array().value_unsafe();
      items.reserve(array.size());
      for (auto item : array) items.push_back(build(item, builder));
      return builder.array(items);
    }
    case element_type::OBJECT: {
      std::vector<typename Builder::Value> keys;
      std::vector<typename Builder::Value> values;
      auto object = element.get_object().value_unsafe();
      keys.reserve(object.size());
      values.reserve(object.size());
      for (auto field : object) {
        keys.push_back(builder.string(field.key));
        values.push_back(build(field.value, builder));
      }
      return builder.object(keys, values);
    }
  }
  throw DecodeError("unknown JSON element");
}

}  // namespace detail

template <class Builder>
typename Builder::Value decode(std::string_view json, Builder& builder) {
  simdjson::dom::parser parser;
  return decode(json, builder, parser);
}

template <class Builder>
typename Builder::Value decode(std::string_view json, Builder& builder, simdjson::dom::parser& parser) {
  simdjson::dom::element root;
  auto error = parser.parse(json.data(), json.size(), true).get(root);
  if (error) throw DecodeError(fmt::format("invalid JSON from worker: {}", simdjson::error_message(error)));
  return detail::build(root, builder);
}

template <class Builder>
typename Builder::Value decode_chunk(std::string_view data, bool binary, bool is_final, Builder& builder,
                                     simdjson::dom::parser& parser) {
  constexpr std::string_view kFinal = "is_final";
  std::vector<typename Builder::Value> keys;
  std::vector<typename Builder::Value> values;
  simdjson::dom::element root;
  if (binary || (!data.empty() && parser.parse(data.data(), data.size(), true).get(root))) {
    keys.push_back(builder.string("data"));
    values.push_back(builder.binary(data));
  } else if (!data.empty() && root.is_object()) {
    // A named object: value_unsafe() returns into the temporary result.
    const simdjson::dom::object object = root.get_object().value_unsafe();
    // Skipped rather than overwritten: keys stay unique for builder.object.
    for (auto field : object) {
      if (field.key == kFinal) continue;
      keys.push_back(builder.string(field.key));
      values.push_back(detail::build(field.value, builder));
    }
  } else if (!data.empty()) {
    keys.push_back(builder.string("data"));
    values.push_back(detail::build(root, builder));
  }
  keys.push_back(builder.string(kFinal));
  values.push_back(builder.boolean(is_final));
  return builder.object(keys, values);
}

}  // namespace snakepit::codec
