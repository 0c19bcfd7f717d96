// parse_python_error: the worker's error object read with simdjson.
#include "python_error.hpp"

#include <simdjson.h>

#include "wire.hpp"

namespace snakepit::core {

void parse_python_error(std::string_view json, Error& error) {
  simdjson::dom::parser parser;
  simdjson::dom::element root;
  if (parser.parse(json.data(), json.size(), true).get(root) || !root.is_object()) {
    error.message = std::string(json);
    return;
  }
  std::string_view text;
  if (!root[wire::kErrorTypeField].get(text)) error.python_type = text;
  if (!root[wire::kErrorMessageField].get(text)) error.message = text;
  if (!root[wire::kErrorTracebackField].get(text)) error.traceback = text;
}

}  // namespace snakepit::core
