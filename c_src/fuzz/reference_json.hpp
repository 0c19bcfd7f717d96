// A slow, obvious JSON parser written from RFC 8259, for differential
// fuzzing: codec::decode must accept exactly what this accepts and build the
// same tree. It also encodes the limits the codec documents by way of
// simdjson: at most 1024 levels (a scalar counts as one), integers must fit
// int64 or uint64, and a number that overflows a double is refused.
#pragma once

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>

#include "tree.hpp"

namespace snakepit::fuzz::reference {

constexpr int kMaxDepth = 1024;

// Byte by byte, from the UTF-8 table in RFC 3629 section 4.
inline bool valid_utf8(std::string_view text) {
  std::size_t i = 0;
  const auto byte = [&](std::size_t at) { return static_cast<unsigned char>(text[at]); };
  while (i < text.size()) {
    const unsigned char c = byte(i);
    if (c < 0x80) {
      ++i;
      continue;
    }
    std::size_t length;
    unsigned char low = 0x80, high = 0xBF;  // bounds of the second byte
    if (c >= 0xC2 && c <= 0xDF) {
      length = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
      length = 3;
      if (c == 0xE0) low = 0xA0;   // overlong
      if (c == 0xED) high = 0x9F;  // surrogates
    } else if (c >= 0xF0 && c <= 0xF4) {
      length = 4;
      if (c == 0xF0) low = 0x90;   // overlong
      if (c == 0xF4) high = 0x8F;  // above U+10FFFF
    } else {
      return false;
    }
    if (i + length > text.size()) return false;
    if (byte(i + 1) < low || byte(i + 1) > high) return false;
    for (std::size_t k = 2; k < length; ++k)
      if (byte(i + k) < 0x80 || byte(i + k) > 0xBF) return false;
    i += length;
  }
  return true;
}

class Parser {
 public:
  explicit Parser(std::string_view text) : text_(text) {}

  std::optional<NodePtr> document() {
    if (!valid_utf8(text_)) return std::nullopt;
    skip_space();
    auto root = value(1);
    if (!root) return std::nullopt;
    skip_space();
    if (at_ != text_.size()) return std::nullopt;
    return root;
  }

 private:
  bool more() const { return at_ < text_.size(); }
  char peek() const { return more() ? text_[at_] : '\0'; }
  bool take(char c) {
    if (!more() || text_[at_] != c) return false;
    ++at_;
    return true;
  }
  bool take_word(std::string_view word) {
    if (text_.substr(at_, word.size()) != word) return false;
    at_ += word.size();
    return true;
  }
  void skip_space() {
    while (more() && (peek() == ' ' || peek() == '\t' || peek() == '\n' || peek() == '\r')) ++at_;
  }
  static bool digit(char c) { return c >= '0' && c <= '9'; }

  std::optional<NodePtr> value(int depth) {
    if (depth > kMaxDepth) return std::nullopt;
    switch (peek()) {
      case '{': return object(depth);
      case '[': return array(depth);
      case '"': {
        auto s = string();
        if (!s) return std::nullopt;
        return make(std::move(*s));
      }
      case 't': return take_word("true") ? std::optional(make(true)) : std::nullopt;
      case 'f': return take_word("false") ? std::optional(make(false)) : std::nullopt;
      case 'n': return take_word("null") ? std::optional(make(std::monostate{})) : std::nullopt;
      default: return number();
    }
  }

  std::optional<NodePtr> array(int depth) {
    ++at_;  // '['
    Array items;
    skip_space();
    if (take(']')) return make(std::move(items));
    while (true) {
      skip_space();
      auto item = value(depth + 1);
      if (!item) return std::nullopt;
      items.push_back(*item);
      skip_space();
      if (take(']')) return make(std::move(items));
      if (!take(',')) return std::nullopt;
    }
  }

  std::optional<NodePtr> object(int depth) {
    ++at_;  // '{'
    Object fields;
    skip_space();
    if (take('}')) return make(std::move(fields));
    while (true) {
      skip_space();
      if (peek() != '"') return std::nullopt;
      auto key = string();
      if (!key) return std::nullopt;
      skip_space();
      if (!take(':')) return std::nullopt;
      skip_space();
      auto item = value(depth + 1);
      if (!item) return std::nullopt;
      fields.emplace_back(std::move(*key), *item);
      skip_space();
      if (take('}')) return make(std::move(fields));
      if (!take(',')) return std::nullopt;
    }
  }

  std::optional<unsigned> hex4() {
    if (at_ + 4 > text_.size()) return std::nullopt;
    unsigned value = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = text_[at_++];
      value <<= 4;
      if (c >= '0' && c <= '9') value |= static_cast<unsigned>(c - '0');
      else if (c >= 'a' && c <= 'f') value |= static_cast<unsigned>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') value |= static_cast<unsigned>(c - 'A' + 10);
      else return std::nullopt;
    }
    return value;
  }

  static void put_utf8(std::string& out, unsigned cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  // A lone or reversed UTF-16 surrogate is refused: it has no UTF-8 form.
  std::optional<std::string> string() {
    ++at_;  // '"'
    std::string out;
    while (true) {
      if (!more()) return std::nullopt;
      const char c = text_[at_++];
      if (c == '"') return out;
      if (static_cast<unsigned char>(c) < 0x20) return std::nullopt;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (!more()) return std::nullopt;
      switch (text_[at_++]) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          auto unit = hex4();
          if (!unit) return std::nullopt;
          unsigned cp = *unit;
          if (cp >= 0xDC00 && cp <= 0xDFFF) return std::nullopt;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (!take('\\') || !take('u')) return std::nullopt;
            auto low = hex4();
            if (!low || *low < 0xDC00 || *low > 0xDFFF) return std::nullopt;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (*low - 0xDC00);
          }
          put_utf8(out, cp);
          break;
        }
        default: return std::nullopt;
      }
    }
  }

  std::optional<NodePtr> number() {
    const std::size_t start = at_;
    take('-');
    if (take('0')) {
    } else if (more() && peek() >= '1' && peek() <= '9') {
      while (more() && digit(peek())) ++at_;
    } else {
      return std::nullopt;
    }
    bool integral = true;
    if (take('.')) {
      integral = false;
      if (!more() || !digit(peek())) return std::nullopt;
      while (more() && digit(peek())) ++at_;
    }
    if (more() && (peek() == 'e' || peek() == 'E')) {
      ++at_;
      integral = false;
      if (!take('+')) take('-');
      if (!more() || !digit(peek())) return std::nullopt;
      while (more() && digit(peek())) ++at_;
    }
    const std::string text(text_.substr(start, at_ - start));
    if (integral) {
      errno = 0;
      char* end = nullptr;
      const long long i = std::strtoll(text.c_str(), &end, 10);
      if (errno == 0) return make(static_cast<std::int64_t>(i));
      if (text[0] == '-') return std::nullopt;
      errno = 0;
      const unsigned long long u = std::strtoull(text.c_str(), &end, 10);
      if (errno != 0) return std::nullopt;
      return make(static_cast<std::uint64_t>(u));
    }
    // strtod rounds correctly (glibc); libFuzzer leaves the C locale alone.
    const double d = std::strtod(text.c_str(), nullptr);
    if (std::isinf(d)) return std::nullopt;
    return make(d);
  }

  std::string_view text_;
  std::size_t at_ = 0;
};

inline std::optional<NodePtr> parse(std::string_view text) { return Parser(text).document(); }

}  // namespace snakepit::fuzz::reference
