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

}  // namespace snakepit::core
