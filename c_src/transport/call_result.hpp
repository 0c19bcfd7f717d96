// Classifies how a gRPC call to a worker ended into the core's
// TransportResult: gRPC status codes and the worker's Python error object
// are read here and nowhere in core. No channel or stub: unit-tested alone.
#pragma once

#include <grpcpp/support/status_code_enum.h>

#include <string>
#include <string_view>

#include "../core/types.hpp"

namespace snakepit::transport {

// A call that ended with `code`; for OK, only a stream's end (a unary
// call's OK carries a response: classify_response). A tool that raised
// inside a stream ends it with UNKNOWN and the Python error object as the
// message.
core::TransportResult classify_status(grpc::StatusCode code, std::string message);

// A unary call's response (status OK): its result, or the error object the
// worker sent for a tool that raised.
core::TransportResult classify_response(bool success, std::string payload, bool binary, std::string_view error_json);

}  // namespace snakepit::transport
