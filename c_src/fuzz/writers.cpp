// Fuzz target: the JSON writers (append_string, append_integer,
// append_unsigned, append_double) that encode every call's arguments, and
// valid_utf8 that decides which strings may be written. The input drives a
// generator of value trees (strings from the input's bytes, integers and
// doubles from raw bit patterns, so NaN, infinities, -0.0 and subnormals
// come up). Checked: valid_utf8 agrees with the RFC 3629 reference;
// append_string matches a byte-at-a-time escaper; append_double refuses
// non-finite values without writing; the whole tree's text decodes to the
// same tree, doubles bit for bit and always as doubles.
#include <fuzzer/FuzzedDataProvider.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>

#include "reference_json.hpp"
#include "tree.hpp"

using namespace snakepit;
using namespace snakepit::fuzz;

namespace {

constexpr int kMaxDepth = 24;

std::string reference_escaped(std::string_view text) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      case '\b': out += "\\b"; break;
      case '\f': out += "\\f"; break;
      default:
        if (c < 0x20) {
          out += "\\u00";
          out += kHex[c >> 4];
          out += kHex[c & 0xF];
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

// A string the writers may take: the input's bytes when they are UTF-8,
// else the same bytes folded to ASCII (control bytes included).
std::string utf8_string(FuzzedDataProvider& in) {
  std::string text = in.ConsumeRandomLengthString(96);
  const bool valid = reference::valid_utf8(text);
  FUZZ_CHECK(codec::valid_utf8(text) == valid, text);
  if (!valid)
    for (char& c : text) c = static_cast<char>(c & 0x7F);
  std::string written = "prefix";
  codec::append_string(written, text);
  FUZZ_CHECK(written == "prefix" + reference_escaped(text), text);
  return text;
}

// The value, and (in `expected`) what decoding its text must give.
NodePtr generate(FuzzedDataProvider& in, int depth, NodePtr& expected) {
  switch (in.ConsumeIntegralInRange<int>(0, depth < kMaxDepth ? 7 : 5)) {
    case 0:
      return expected = make(std::monostate{});
    case 1:
      return expected = make(in.ConsumeBool());
    case 2:
      return expected = make(in.ConsumeIntegral<std::int64_t>());
    case 3: {
      const auto u = in.ConsumeIntegral<std::uint64_t>();
      // The decoder gives an int64 wherever one fits.
      if (u <= static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
        expected = make(static_cast<std::int64_t>(u));
      else
        expected = make(u);
      return make(u);
    }
    case 4: {
      const auto bits = in.ConsumeIntegral<std::uint64_t>();
      double d;
      std::memcpy(&d, &bits, sizeof d);
      if (!std::isfinite(d)) {
        std::string out = "kept";
        FUZZ_CHECK(!codec::append_double(out, d), out);
        FUZZ_CHECK(out == "kept", out);
        return expected = make(std::monostate{});
      }
      return expected = make(d);
    }
    case 5:
      return expected = make(utf8_string(in));
    case 6: {
      Array items, expected_items;
      const int count = in.ConsumeIntegralInRange<int>(0, 6);
      for (int i = 0; i < count; ++i) {
        NodePtr item_expected;
        items.push_back(generate(in, depth + 1, item_expected));
        expected_items.push_back(item_expected);
      }
      expected = make(std::move(expected_items));
      return make(std::move(items));
    }
    default: {
      Object fields, expected_fields;
      const int count = in.ConsumeIntegralInRange<int>(0, 6);
      for (int i = 0; i < count; ++i) {
        std::string key = utf8_string(in);
        NodePtr value_expected;
        fields.emplace_back(key, generate(in, depth + 1, value_expected));
        expected_fields.emplace_back(std::move(key), value_expected);
      }
      expected = make(std::move(expected_fields));
      return make(std::move(fields));
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  NodePtr expected;
  const NodePtr tree = generate(in, 1, expected);
  std::string text;
  FUZZ_CHECK(encode(tree, text), text);
  static simdjson::dom::parser parser;
  TreeBuilder builder;
  NodePtr decoded;
  try {
    decoded = codec::decode(text, builder, parser);
  } catch (const codec::DecodeError& e) {
    fail(e.what(), text);
  }
  FUZZ_CHECK(equal(decoded, expected), text);
  return 0;
}
