// Transport result classification: gRPC status and Python error object in.
#include "call_result.hpp"

#include "../core/python_error.hpp"

namespace snakepit::transport {
namespace {

using Kind = core::TransportResult::Kind;

core::TransportResult tool_error(std::string_view json) {
  core::Error error;
  core::parse_python_error(json, error);
  return core::TransportResult::tool_error(std::move(error.python_type), std::move(error.message),
                                           std::move(error.traceback));
}

}  // namespace

core::TransportResult classify_status(grpc::StatusCode code, std::string message) {
  const int number = static_cast<int>(code);
  switch (code) {
    case grpc::StatusCode::OK: return core::TransportResult::success({});
    case grpc::StatusCode::DEADLINE_EXCEEDED: return core::TransportResult::ended(Kind::deadline_exceeded, number, std::move(message));
    case grpc::StatusCode::CANCELLED: return core::TransportResult::ended(Kind::cancelled, number, std::move(message));
    case grpc::StatusCode::UNAVAILABLE: return core::TransportResult::ended(Kind::unavailable, number, std::move(message));
    case grpc::StatusCode::UNKNOWN:
      if (!message.empty() && message.front() == '{') return tool_error(message);
      break;
    default: break;
  }
  return core::TransportResult::ended(Kind::failed, number, std::move(message));
}

core::TransportResult classify_response(bool success, std::string payload, bool binary, std::string_view error_json) {
  if (success) return core::TransportResult::success(std::move(payload), binary);
  return tool_error(error_json);
}

}  // namespace snakepit::transport
