// Error category names and TransportResult's constructors.
#include "types.hpp"

namespace snakepit::core {

const char* to_string(ErrorCategory category) noexcept {
  switch (category) {
    case ErrorCategory::worker: return "worker";
    case ErrorCategory::timeout: return "timeout";
    case ErrorCategory::python_error: return "python_error";
    case ErrorCategory::grpc_error: return "grpc_error";
    case ErrorCategory::validation: return "validation";
    case ErrorCategory::pool: return "pool";
  }
  return "pool";
}

TransportResult TransportResult::success(std::string payload, bool binary) {
  TransportResult result;
  result.payload = std::move(payload);
  result.payload_binary = binary;
  return result;
}

TransportResult TransportResult::tool_error(std::string type, std::string message, std::string traceback) {
  TransportResult result;
  result.kind = Kind::tool_error;
  result.error_type = std::move(type);
  result.message = std::move(message);
  result.traceback = std::move(traceback);
  return result;
}

TransportResult TransportResult::ended(Kind kind, int status_code, std::string message) {
  TransportResult result;
  result.kind = kind;
  result.status_code = status_code;
  result.message = std::move(message);
  return result;
}

}  // namespace snakepit::core
