// A worker's Python error object, {"type","message","traceback"}, read into
// an Error. Its own unit so the pool and the fuzzer run the same code.
#pragma once

#include <string_view>

#include "types.hpp"

namespace snakepit::core {

// Copies the string fields "type", "message" and "traceback" of the JSON
// object `json` into `error` (python_type, message, traceback); fields that
// are absent or not strings leave theirs as they were. When `json` is not a
// JSON object, the whole text becomes the message, so nothing is lost.
void parse_python_error(std::string_view json, Error& error);

}  // namespace snakepit::core
