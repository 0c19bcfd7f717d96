// JSON writers, UTF-8 validation and decode() into a small variant tree.
#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "../codec/json.hpp"

namespace codec = snakepit::codec;

namespace {

struct Node;
using NodePtr = std::shared_ptr<Node>;
using Array = std::vector<NodePtr>;
using Object = std::vector<std::pair<std::string, NodePtr>>;

// Raw bytes from decode_chunk's binary(), told apart from decoded strings.
struct Raw {
  std::string bytes;
};

struct Node {
  std::variant<std::monostate, bool, std::int64_t, std::uint64_t, double, std::string, Array, Object, Raw> value;
};

struct TreeBuilder {
  using Value = NodePtr;
  static NodePtr make(auto v) {
    auto node = std::make_shared<Node>();
    node->value = std::move(v);
    return node;
  }
  Value null() { return make(std::monostate{}); }
  Value boolean(bool b) { return make(b); }
  Value integer(std::int64_t i) { return make(i); }
  Value unsigned_integer(std::uint64_t u) { return make(u); }
  Value number(double d) { return make(d); }
  Value string(std::string_view s) { return make(std::string(s)); }
  Value binary(std::string_view b) { return make(Raw{std::string(b)}); }
  Value array(std::vector<Value>& items) { return make(Array(items.begin(), items.end())); }
  Value object(std::vector<Value>& keys, std::vector<Value>& values) {
    Object fields;
    for (std::size_t i = 0; i < keys.size(); ++i)
      fields.emplace_back(std::get<std::string>(keys[i]->value), values[i]);
    return make(std::move(fields));
  }
};

NodePtr decode(std::string_view json) {
  TreeBuilder builder;
  return codec::decode(json, builder);
}

template <class T>
bool holds(const NodePtr& node) {
  return node && std::holds_alternative<T>(node->value);
}

template <class T>
const T& as(const NodePtr& node) {
  REQUIRE(holds<T>(node));
  return std::get<T>(node->value);
}

const NodePtr& field(const NodePtr& node, std::string_view key) {
  const auto& object = as<Object>(node);
  for (const auto& [name, value] : object)
    if (name == key) return value;
  FAIL("missing key " << key);
  static NodePtr none;
  return none;
}

std::string escaped(std::string_view text) {
  std::string out;
  codec::append_string(out, text);
  return out;
}

std::string dbl(double value) {
  std::string out;
  REQUIRE(codec::append_double(out, value));
  return out;
}

double decode_double(const std::string& text) {
  auto node = decode(text);
  REQUIRE(holds<double>(node));
  return std::get<double>(node->value);
}

}  // namespace

TEST_CASE("append_string quotes and escapes") {
  CHECK(escaped("") == R"("")");
  CHECK(escaped("plain text") == R"("plain text")");
  CHECK(escaped(R"(say "hi")") == R"("say \"hi\"")");
  CHECK(escaped(R"(C:\path)") == R"("C:\\path")");
  CHECK(escaped("a\nb\rc\td") == R"("a\nb\rc\td")");
  CHECK(escaped("\b\f") == R"("\b\f")");
  CHECK(escaped(std::string_view("\x01\x1f", 2)) == R"("\u0001\u001f")");
  CHECK(escaped(std::string_view("a\0b", 3)) == R"("a\u0000b")");
  CHECK(escaped("\x7f") == "\"\x7f\"");  // DEL needs no escape in JSON
  // UTF-8 passes through byte for byte.
  CHECK(escaped("h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x90\x8d") == "\"h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x90\x8d\"");
  // Appends, never replaces.
  std::string out = "[";
  codec::append_string(out, "x");
  out += ",";
  codec::append_string(out, "\"");
  CHECK(out == R"(["x","\"")");
}

TEST_CASE("append_string output decodes back to the input") {
  std::string all;
  for (int c = 0; c < 0x80; ++c) all.push_back(static_cast<char>(c));
  all += "\xc3\xa9\xe2\x82\xac\xf0\x9f\x90\x8d";
  std::string json = escaped(all);
  auto node = decode(json);
  CHECK(as<std::string>(node) == all);
}

// One byte at a time, the obvious way: what the word-at-a-time escaper must match.
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

TEST_CASE("append_string finds a byte to escape at every offset of a word") {
  // Each byte that needs escaping, and neighbours that must not trip the
  // word test (0x20, 0x21, '#', '[', ']', 0x7f, 0x80, 0xff), at every
  // position of strings 1..24 bytes long, so words, tails and mixes are covered.
  std::vector<char> probes = {'"', '\\', '\0', '\x01', '\x1f', '\n', ' ', '!', '#', '[', ']', '\x7f', '\x80', '\xff'};
  for (std::size_t length = 1; length <= 24; ++length) {
    for (std::size_t at = 0; at < length; ++at) {
      for (char probe : probes) {
        std::string text(length, 'a');
        text[at] = probe;
        CAPTURE(length);
        CAPTURE(at);
        CAPTURE(static_cast<int>(static_cast<unsigned char>(probe)));
        REQUIRE(escaped(text) == reference_escaped(text));
      }
    }
  }
  // Many escapes in a row and long clean runs around them.
  std::string mixed = std::string(37, 'x') + "\"\\\n\x02" + std::string(19, 'y') + "\x1f" + std::string(8, 'z');
  CHECK(escaped(mixed) == reference_escaped(mixed));
}

TEST_CASE("ParserCache hands back a reused parser and drops an oversized one") {
  codec::ParserCache cache;
  simdjson::dom::parser* first = nullptr;
  {
    auto lease = cache.acquire();
    first = &*lease;
    TreeBuilder builder;
    CHECK(as<std::int64_t>(codec::decode("7", builder, *lease)) == 7);
  }
  {
    auto lease = cache.acquire();
    CHECK(&*lease == first);  // the idle one, with its buffers
    auto other = cache.acquire();
    CHECK(&*other != first);  // two at once: a second parser
  }
  {
    auto lease = cache.acquire();
    // A document bigger than the retained capacity grows the parser ...
    std::string big = "\"" + std::string(codec::ParserCache::kMaxRetainedCapacity + 1, 'b') + "\"";
    TreeBuilder builder;
    CHECK(as<std::string>(codec::decode(big, builder, *lease)).size() == codec::ParserCache::kMaxRetainedCapacity + 1);
    CHECK((*lease).capacity() > codec::ParserCache::kMaxRetainedCapacity);
  }
  // ... so it was freed on return, not kept: every idle parser is small.
  auto a = cache.acquire();
  auto b = cache.acquire();
  auto c = cache.acquire();
  CHECK((*a).capacity() <= codec::ParserCache::kMaxRetainedCapacity);
  CHECK((*b).capacity() <= codec::ParserCache::kMaxRetainedCapacity);
  CHECK((*c).capacity() <= codec::ParserCache::kMaxRetainedCapacity);
}

TEST_CASE("valid_utf8") {
  CHECK(codec::valid_utf8(""));
  CHECK(codec::valid_utf8("ascii"));
  CHECK(codec::valid_utf8("\xc3\xa9"));          // é
  CHECK(codec::valid_utf8("\xe2\x82\xac"));      // €
  CHECK(codec::valid_utf8("\xf0\x9f\x90\x8d"));  // 🐍
  CHECK(codec::valid_utf8("\xf4\x8f\xbf\xbf"));  // U+10FFFF
  CHECK(codec::valid_utf8(std::string_view("\0", 1)));

  CHECK_FALSE(codec::valid_utf8("\xc0\xaf"));          // overlong '/'
  CHECK_FALSE(codec::valid_utf8("\xe0\x80\xaf"));      // overlong, 3 bytes
  CHECK_FALSE(codec::valid_utf8("\xf0\x80\x80\xaf"));  // overlong, 4 bytes
  CHECK_FALSE(codec::valid_utf8("\x80"));              // lone continuation
  CHECK_FALSE(codec::valid_utf8("abc\xbf"));           // lone continuation at the end
  CHECK_FALSE(codec::valid_utf8("\xc3"));              // truncated 2-byte
  CHECK_FALSE(codec::valid_utf8("\xe2\x82"));          // truncated 3-byte
  CHECK_FALSE(codec::valid_utf8("\xf0\x9f\x90"));      // truncated 4-byte
  CHECK_FALSE(codec::valid_utf8("\xe2\x82x"));         // interrupted sequence
  CHECK_FALSE(codec::valid_utf8("\xed\xa0\x80"));      // UTF-16 surrogate
  CHECK_FALSE(codec::valid_utf8("\xf4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(codec::valid_utf8("\xff"));
}

TEST_CASE("append_integer and append_unsigned") {
  auto integer = [](std::int64_t v) {
    std::string out;
    codec::append_integer(out, v);
    return out;
  };
  auto unsigned_ = [](std::uint64_t v) {
    std::string out;
    codec::append_unsigned(out, v);
    return out;
  };
  CHECK(integer(0) == "0");
  CHECK(integer(-1) == "-1");
  CHECK(integer(42) == "42");
  CHECK(integer(std::numeric_limits<std::int64_t>::max()) == "9223372036854775807");
  CHECK(integer(std::numeric_limits<std::int64_t>::min()) == "-9223372036854775808");
  CHECK(unsigned_(0) == "0");
  CHECK(unsigned_(std::numeric_limits<std::uint64_t>::max()) == "18446744073709551615");

  std::string out = "x";
  codec::append_integer(out, 7);
  codec::append_unsigned(out, 8);
  CHECK(out == "x78");
}

TEST_CASE("append_double") {
  CHECK(dbl(1.0) == "1.0");
  CHECK(dbl(0.0) == "0.0");
  CHECK(dbl(-0.0) == "-0.0");
  CHECK(dbl(-2.0) == "-2.0");
  CHECK(dbl(0.1) == "0.1");
  CHECK(dbl(1.5) == "1.5");
  CHECK(dbl(123456789.0) == "123456789.0");
  CHECK(dbl(1e15) == "1e+15");  // shortest form, already a float

  SUBCASE("the text is always a float, never an integer") {
    for (double v : {1.0, 100.0, 1e15, 1e16, 1e300, 1e-300, 5e-324, 123456789.0, -0.0}) {
      const auto text = dbl(v);
      CAPTURE(text);
      CHECK(text.find_first_of(".eE") != std::string::npos);
      CHECK(holds<double>(decode(text)));
    }
  }

  SUBCASE("round trip") {
    for (double v : {0.1, 1.0 / 3.0, 1e300, -1e300, 1e-300, 5e-324, 2.2250738585072014e-308,
                     std::numeric_limits<double>::max(), 123456.789, -0.0}) {
      const auto text = dbl(v);
      CAPTURE(text);
      const double back = decode_double(text);
      CHECK(back == v);
      CHECK(std::signbit(back) == std::signbit(v));
    }
  }

  SUBCASE("NaN and infinities are refused and write nothing") {
    std::string out = "keep";
    CHECK_FALSE(codec::append_double(out, std::numeric_limits<double>::quiet_NaN()));
    CHECK_FALSE(codec::append_double(out, std::numeric_limits<double>::infinity()));
    CHECK_FALSE(codec::append_double(out, -std::numeric_limits<double>::infinity()));
    CHECK(out == "keep");
  }
}

TEST_CASE("decode scalars") {
  CHECK(holds<std::monostate>(decode("null")));
  CHECK(as<bool>(decode("true")) == true);
  CHECK(as<bool>(decode("false")) == false);
  CHECK(as<std::int64_t>(decode("3")) == 3);
  CHECK(as<std::int64_t>(decode("-3")) == -3);
  CHECK(as<std::int64_t>(decode("0")) == 0);
  CHECK(as<double>(decode("3.0")) == 3.0);
  CHECK(as<double>(decode("3e0")) == 3.0);
  CHECK(as<double>(decode("-0.5")) == -0.5);
  CHECK(as<std::int64_t>(decode("9223372036854775807")) == std::numeric_limits<std::int64_t>::max());
  CHECK(as<std::int64_t>(decode("-9223372036854775808")) == std::numeric_limits<std::int64_t>::min());
  CHECK(as<std::uint64_t>(decode("9223372036854775808")) == 9223372036854775808ULL);
  CHECK(as<std::uint64_t>(decode("18446744073709551615")) == std::numeric_limits<std::uint64_t>::max());
  CHECK(as<std::string>(decode(R"("")")).empty());
  CHECK(as<std::int64_t>(decode(" \n 7 \t ")) == 7);
}

TEST_CASE("decode strings with escapes") {
  CHECK(as<std::string>(decode(R"("a\"b\\c\/d")")) == "a\"b\\c/d");
  CHECK(as<std::string>(decode(R"("\n\r\t\b\f")")) == "\n\r\t\b\f");
  CHECK(as<std::string>(decode(R"("\u00e9\u20ac")")) == "\xc3\xa9\xe2\x82\xac");
  CHECK(as<std::string>(decode(R"("\ud83d\udc0d")")) == "\xf0\x9f\x90\x8d");  // surrogate pair
  CHECK(as<std::string>(decode("\"\xf0\x9f\x90\x8d raw\"")) == "\xf0\x9f\x90\x8d raw");
  // Keep the decoded tree alive: `as` returns a reference into it.
  const auto tree = decode(R"("a\u0000b")");
  const auto& with_nul = as<std::string>(tree);
  CHECK(with_nul.size() == 3);
  CHECK(with_nul == std::string("a\0b", 3));
}

TEST_CASE("decode nested arrays and objects") {
  auto root = decode(R"({"a":[1,2.5,"x",[true,null,[]],{}],"b":{"c":{"d":-7}},"u":18446744073709551615,"e":"q\""})");
  const auto& object = as<Object>(root);
  REQUIRE(object.size() == 4);
  // Keys keep document order.
  CHECK(object[0].first == "a");
  CHECK(object[1].first == "b");
  CHECK(object[2].first == "u");
  CHECK(object[3].first == "e");

  const auto& a = as<Array>(field(root, "a"));
  REQUIRE(a.size() == 5);
  CHECK(as<std::int64_t>(a[0]) == 1);
  CHECK(as<double>(a[1]) == 2.5);
  CHECK(as<std::string>(a[2]) == "x");
  const auto& inner = as<Array>(a[3]);
  REQUIRE(inner.size() == 3);
  CHECK(as<bool>(inner[0]) == true);
  CHECK(holds<std::monostate>(inner[1]));
  CHECK(as<Array>(inner[2]).empty());
  CHECK(as<Object>(a[4]).empty());

  CHECK(as<std::int64_t>(field(field(field(root, "b"), "c"), "d")) == -7);
  CHECK(as<std::uint64_t>(field(root, "u")) == 18446744073709551615ULL);
  CHECK(as<std::string>(field(root, "e")) == "q\"");

  auto keys = decode(R"({"k\u00e9y":1,"":2})");
  const auto& fields = as<Object>(keys);
  REQUIRE(fields.size() == 2);
  CHECK(fields[0].first == "k\xc3\xa9y");
  CHECK(fields[1].first.empty());
  CHECK(as<std::int64_t>(fields[1].second) == 2);
}

TEST_CASE("decode rejects invalid JSON with DecodeError") {
  for (std::string_view bad : {"", "   ", "{", "[1,2", "[1,]", "{\"a\" 1}", "{'a':1}", "nul", "tru", "01",
                               "1.", "-", "\"unterminated", "\"bad \\x escape\"", "[1] x", "NaN", "Infinity",
                               "{\"a\":1,}", "\"\xc3\"", "\"\xc0\xaf\""}) {
    CAPTURE(bad);
    CHECK_THROWS_AS(decode(bad), codec::DecodeError);
  }
  // Control characters must be escaped inside strings.
  CHECK_THROWS_AS(decode(std::string_view("\"a\nb\"")), codec::DecodeError);
  // The message says what went wrong.
  try {
    decode("[1,");
    FAIL("no exception");
  } catch (const codec::DecodeError& e) {
    CHECK(std::string(e.what()).find("invalid JSON") != std::string::npos);
  }
}

TEST_CASE("decode does not need a terminated or padded buffer") {
  const std::string text = "[1,2,3]garbage";
  auto node = decode(std::string_view(text).substr(0, 7));
  CHECK(as<Array>(node).size() == 3);
}

namespace {

NodePtr chunk(std::string_view data, bool binary, bool is_final) {
  TreeBuilder builder;
  simdjson::dom::parser parser;
  return codec::decode_chunk(data, binary, is_final, builder, parser);
}

// The chunk map's keys, in order.
std::vector<std::string> keys(const NodePtr& map) {
  std::vector<std::string> names;
  for (const auto& [name, value] : as<Object>(map)) names.push_back(name);
  return names;
}

}  // namespace

TEST_CASE("decode_chunk: a JSON object payload gives its fields plus is_final") {
  // Found by the stream_chunk fuzzer: iterating the object straight from the
  // temporary simdjson result read a dead stack slot (ASan: stack-use-after-scope).
  auto map = chunk(R"({"token":"hi","index":3,"nested":{"a":[1,2]}})", false, false);
  CHECK(keys(map) == std::vector<std::string>{"token", "index", "nested", "is_final"});
  CHECK(as<std::string>(field(map, "token")) == "hi");
  CHECK(as<std::int64_t>(field(map, "index")) == 3);
  CHECK(as<Array>(field(field(map, "nested"), "a")).size() == 2);
  CHECK(as<bool>(field(map, "is_final")) == false);
}

TEST_CASE("decode_chunk: the transport's is_final replaces the payload's, once") {
  auto map = chunk(R"({"is_final":"no","x":1,"is_final":0})", false, true);
  CHECK(keys(map) == std::vector<std::string>{"x", "is_final"});
  CHECK(as<bool>(field(map, "is_final")) == true);
}

TEST_CASE("decode_chunk: any other JSON value goes under data") {
  auto list = chunk("[1,\"two\"]", false, false);
  CHECK(keys(list) == std::vector<std::string>{"data", "is_final"});
  CHECK(as<Array>(field(list, "data")).size() == 2);
  CHECK(as<std::string>(field(chunk(R"("text")", false, true), "data")) == "text");
  CHECK(holds<std::monostate>(field(chunk("null", false, false), "data")));
  CHECK(as<double>(field(chunk("-0.5", false, false), "data")) == -0.5);
}

TEST_CASE("decode_chunk: binary payloads and text that is not JSON stay raw bytes") {
  const std::string bytes("\x00\xff{\"a\":1}", 9);
  CHECK(as<Raw>(field(chunk(bytes, true, false), "data")).bytes == bytes);
  // JSON text flagged binary is still bytes, not decoded.
  CHECK(as<Raw>(field(chunk(R"({"a":1})", true, false), "data")).bytes == R"({"a":1})");
  for (std::string_view text : {"not json", "{\"a\":", "\"\\ud800\"", "18446744073709551616", "\xc3("}) {
    CAPTURE(text);
    auto map = chunk(text, false, true);
    CHECK(keys(map) == std::vector<std::string>{"data", "is_final"});
    CHECK(as<Raw>(field(map, "data")).bytes == text);
  }
}

TEST_CASE("decode_chunk: an empty text payload gives only is_final") {
  auto map = chunk("", false, true);
  CHECK(keys(map) == std::vector<std::string>{"is_final"});
  CHECK(as<bool>(field(map, "is_final")) == true);
  // An empty binary payload is still data.
  CHECK(as<Raw>(field(chunk("", true, false), "data")).bytes.empty());
}
