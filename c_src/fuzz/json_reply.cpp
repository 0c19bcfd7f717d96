// Fuzz target: a worker's JSON reply through codec::decode, as the NIF
// decodes every result. Differential: decode must accept exactly what the
// reference parser (reference_json.hpp) accepts and build the same tree,
// refuse everything else with DecodeError (no other exception, no crash),
// give only valid UTF-8 strings, and what it builds must re-encode through
// the codec's writers to text that decodes to the same tree again, and
// re-encodes to the same text (the writers are deterministic).
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "reference_json.hpp"
#include "tree.hpp"

using namespace snakepit;
using namespace snakepit::fuzz;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view input(reinterpret_cast<const char*>(data), size);
  // Reused across inputs, as the NIF's ParserCache reuses parsers.
  static simdjson::dom::parser parser;
  TreeBuilder builder;

  NodePtr tree;
  try {
    tree = codec::decode(input, builder, parser);
  } catch (const codec::DecodeError&) {
  }
  const auto expected = reference::parse(input);
  FUZZ_CHECK(bool(tree) == expected.has_value(), input);
  if (!tree) return 0;
  FUZZ_CHECK(equal(tree, *expected), input);
  FUZZ_CHECK(all_utf8(tree), input);

  std::string text;
  FUZZ_CHECK(encode(tree, text), input);
  NodePtr again;
  try {
    again = codec::decode(text, builder, parser);
  } catch (const codec::DecodeError&) {
    fail("the writers' text does not decode", text);
  }
  FUZZ_CHECK(equal(tree, again), text);
  std::string text_again;
  FUZZ_CHECK(encode(again, text_again), text);
  FUZZ_CHECK(text == text_again, text);
  return 0;
}
