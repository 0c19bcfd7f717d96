// Fuzz target: a stream chunk's payload through codec::decode_chunk, the
// code that turns each chunk into the map a stream's consumer receives.
// The first input byte holds the transport's flags (bit 0: binary payload,
// bit 1: is_final); the rest is the payload. The map must be exactly what
// the rules in json.hpp say, computed here from the reference parser:
// always an object with one "is_final" (last), never an exception or crash.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "reference_json.hpp"
#include "tree.hpp"

using namespace snakepit;
using namespace snakepit::fuzz;

namespace {

NodePtr expected_chunk(std::string_view payload, bool binary, bool is_final) {
  Object fields;
  if (binary) {
    fields.emplace_back("data", make(Bytes{std::string(payload)}));
  } else if (!payload.empty()) {
    auto value = reference::parse(payload);
    if (!value) {
      fields.emplace_back("data", make(Bytes{std::string(payload)}));
    } else if (const auto* object = std::get_if<Object>(&(*value)->value)) {
      for (const auto& field : *object)
        if (field.first != "is_final") fields.push_back(field);
    } else {
      fields.emplace_back("data", *value);
    }
  }
  fields.emplace_back("is_final", make(is_final));
  return make(std::move(fields));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const bool binary = (data[0] & 1) != 0;
  const bool is_final = (data[0] & 2) != 0;
  const std::string_view payload(reinterpret_cast<const char*>(data + 1), size - 1);
  static simdjson::dom::parser parser;
  TreeBuilder builder;
  // Any exception escaping here is a finding: the NIF calls this noexcept.
  const NodePtr map = codec::decode_chunk(payload, binary, is_final, builder, parser);
  FUZZ_CHECK(equal(map, expected_chunk(payload, binary, is_final)), payload);
  return 0;
}
