// Fuzz target: a worker's Python error object through
// core::parse_python_error, which the pool runs on every failed call and
// failed start. The first input byte picks whether the Error starts empty
// or already filled (as the startup path's is); the rest is the error text.
// Checked against the reference parser: a JSON object sets exactly the
// fields whose first occurrence is a string, anything else becomes the
// message whole; nothing else changes and nothing throws or crashes.
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../core/python_error.hpp"
#include "reference_json.hpp"
#include "tree.hpp"

using namespace snakepit;
using namespace snakepit::fuzz;

namespace {

// simdjson's lookup by key takes the first field of that name.
const std::string* first_string(const Object& object, std::string_view key) {
  for (const auto& [name, value] : object)
    if (name == key) return std::get_if<std::string>(&value->value);
  return nullptr;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::string_view json(reinterpret_cast<const char*>(data + 1), size - 1);
  core::Error before;
  before.category = core::ErrorCategory::python_error;
  before.reason = "python_error";
  if (data[0] & 1) {
    before.message = "earlier message";
    before.python_type = "EarlierType";
    before.traceback = "earlier traceback";
    before.worker_id = "worker-1";
    before.grpc_status = 2;
  }
  core::Error error = before;
  core::parse_python_error(json, error);

  core::Error expected = before;
  const auto parsed = reference::parse(json);
  const auto* object = parsed ? std::get_if<Object>(&(*parsed)->value) : nullptr;
  if (object == nullptr) {
    expected.message = std::string(json);
  } else {
    if (const auto* s = first_string(*object, "type")) expected.python_type = *s;
    if (const auto* s = first_string(*object, "message")) expected.message = *s;
    if (const auto* s = first_string(*object, "traceback")) expected.traceback = *s;
  }
  FUZZ_CHECK(error.python_type == expected.python_type, json);
  FUZZ_CHECK(error.message == expected.message, json);
  FUZZ_CHECK(error.traceback == expected.traceback, json);
  FUZZ_CHECK(error.category == before.category && error.reason == before.reason, json);
  FUZZ_CHECK(error.worker_id == before.worker_id && error.grpc_status == before.grpc_status, json);
  return 0;
}
